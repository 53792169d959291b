"""Distillation throughput: images/s of collection and of training (issue 15 item 6).

    python bench/distill_throughput.py --teacher tiny --student tiny --images 24 --epochs 2   # CPU
    python bench/distill_throughput.py --teacher vit_h --student vit_b --bf16 --device cuda \\
        --images 64 --epochs 3                          # the published sizes, random weights
    python bench/distill_throughput.py --teacher-sam facebook/sam-vit-huge --teacher-ram ram_epoch12.pth \\
        --student-sam facebook/sam-vit-base --bf16 --device cuda --images 64     # real weights

The two steps of `training.distillation.distill`, timed on a synthetic PSG-format dataset
(`make_synthetic_psg`, hard labels from its ground truth, as on PSG):

1. collection: `collect_distillation` over the images (after `--warmup` images into a scratch
   cache): per image the teacher segments everything and its RAM head scores the masks, the
   student is prompted with the teacher's masks, the student's tokens, the teacher's logits, the
   masks' RLE and the matched labels go to the feature cache. Its wall time is split by wrapping
   the models' calls (synchronised on CUDA): teacher (set_image, segment_everything, head),
   student (set_image, segment_prompts), rest (RLE, ground-truth matching, cache writes).
2. training: `train` on that cache with the teacher's tempered soft targets (teacher_weight
   `--alpha`, temperature `--temperature`, as `distill` sets them), a head of the published size
   (`RelationHeadConfig()`) over the student's tokens, `--epochs` epochs of `--batch-size`; the
   images/s is the trainer's own (per epoch, the first epoch left out when there are more).

Random weights (--teacher/--student NAME) cost what real ones of that size cost, except for how
many masks survive: the teacher's predicted-IoU threshold is set on the first image to keep about
`--masks` masks (box NMS off), as in bench/video.py. `tiny` is the tests' tiny encoder at 256 px
with a narrow prompt encoder and decoder (teacher 32 wide, student 64 wide, other seeds: a
different model, with tokens of another width); vit_b/l/h are the published sizes at 1024 px.

The record (bench/records.py; `--json`, default bench/results/distill_throughput-<date>-<device>.json)
has one figures row: teacher, student, dtype, image_size, points_per_side, images, labelled,
masks_per_image, collect_seconds, collect_images_per_s, teacher_ms, student_ms, rest_ms (a
collected image's), psg_46k_collect_hours (a 46k-image PSG train split at that rate),
train_images, epochs, batch_size, amp, train_images_per_s, ms_per_step, psg_46k_epoch_hours;
details holds the settings, the trainer's history and the collection's own counters.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # sam_factory: the tests' random SAMs

import records  # noqa: E402
from collect_throughput import RANDOM_ENCODERS, random_sam  # noqa: E402
from relate_anything.batch.inputs import InputItem, load_input  # noqa: E402
from relate_anything.datasets import PsgDataset, make_synthetic_psg  # noqa: E402
from relate_anything.pipeline import PipelineSpec, RelateAnything  # noqa: E402
from relate_anything.ram import RelationHead, RelationHeadConfig  # noqa: E402
from relate_anything.sam import Segmenter, SegmentSettings  # noqa: E402
from relate_anything.sam.students import SamStudent, load_student  # noqa: E402
from relate_anything.training import TrainConfig, train  # noqa: E402
from relate_anything.training.distillation import collect_distillation  # noqa: E402
from video import Stopwatch, calibrated_settings  # noqa: E402  (the same timing and calibration)

PSG_TRAIN_IMAGES = 46_000


def build_teacher(args: argparse.Namespace, dtype: torch.dtype, first_image: np.ndarray) -> RelateAnything:
    """The teacher pipeline: by reference, or random with thresholds calibrated on `first_image`."""
    settings = SegmentSettings(points_per_side=args.points_per_side)
    if args.teacher_sam:
        spec = PipelineSpec(sam=args.teacher_sam, ram=args.teacher_ram, dtype=str(dtype).removeprefix("torch."))
        return dataclasses.replace(spec, settings=settings).build(args.device)
    tiny = args.teacher == "tiny"
    model = random_sam(args.teacher, args.device, dtype, 256 if tiny else 1024, width=32 if tiny else 256)
    torch.manual_seed(0)
    head = RelationHead(RelationHeadConfig(feature_dim=model.config.mask_decoder_config.hidden_size))
    head = head.to(args.device).eval()
    settings = calibrated_settings(RelateAnything(Segmenter(model, settings=settings), head), first_image, args)
    return RelateAnything(Segmenter(model, settings=settings), head, settings=settings)


def build_student(args: argparse.Namespace, dtype: torch.dtype):
    if args.student_sam:
        return load_student(args.student_sam, device=args.device, dtype=dtype)
    tiny = args.student == "tiny"
    return SamStudent(
        random_sam(args.student, args.device, dtype, 256 if tiny else 1024, width=64 if tiny else 256, seed=1)
    )


def wrap_models(teacher: RelateAnything, student, watch: Stopwatch) -> None:
    """Time the teacher's and the student's calls made by the collection (instance attributes)."""
    for owner, method, stage in (
        (teacher.segmenter, "set_image", "teacher"),
        (teacher.segmenter, "segment_everything", "teacher"),
        (teacher.relation_head, "score", "teacher"),
        (student, "set_image", "student"),
        (student, "segment_prompts", "student"),
    ):
        watch.wrap(owner, method, stage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", choices=sorted(RANDOM_ENCODERS), help="random teacher SAM + RAM head of this size")
    parser.add_argument("--student", choices=sorted(RANDOM_ENCODERS), help="random student SAM of this size")
    parser.add_argument("--teacher-sam", help="teacher SAM weights by reference (with --teacher-ram)")
    parser.add_argument("--teacher-ram", help="teacher RAM head weights by reference")
    parser.add_argument("--student-sam", help="student weights by reference (SAM, SAM-HQ, SAM 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="teacher and student SAM in bfloat16")
    parser.add_argument("--images", type=int, default=24, help="images collected (and trained on)")
    parser.add_argument("--warmup", type=int, default=2, help="images collected first, untimed")
    parser.add_argument("--size", default="320,240", help="synthetic image width,height")
    parser.add_argument("--points-per-side", type=int, default=None, help="teacher's grid (default: 32, tiny 8)")
    parser.add_argument("--masks", type=int, default=30, help="random teacher: masks an image keeps (about)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--alpha", type=float, default=0.5, help="teacher_weight on labelled images")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's choice)")
    records.add_json_option(parser)
    args = parser.parse_args()
    if (args.teacher is None) == (args.teacher_sam is None) or (args.teacher_sam is None) != (args.teacher_ram is None):
        parser.error("give --teacher, or --teacher-sam and --teacher-ram")
    if (args.student is None) == (args.student_sam is None):
        parser.error("give --student or --student-sam")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.points_per_side is None:
        args.points_per_side = 8 if args.teacher == "tiny" else 32
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    width, height = (int(v) for v in args.size.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        psg = make_synthetic_psg(Path(tmp) / "psg", images=args.images + args.warmup, seed=0, size=(width, height))
        dataset = PsgDataset(psg, split=None)
        graphs = list(dataset)
        items = [InputItem(graph.file, str(dataset.image_path(k))) for k, graph in enumerate(graphs)]
        ground_truth = {graph.file: graph for graph in graphs}
        teacher = build_teacher(args, dtype, load_input(items[0].location))
        student = build_student(args, dtype)
        collect = {"student_name": "student", "ground_truth": ground_truth}
        collect_distillation(items[: args.warmup], teacher, student, Path(tmp) / "warm", **collect)

        watch = Stopwatch(args.device)
        wrap_models(teacher, student, watch)
        watch._sync()
        started = time.perf_counter()
        stats = collect_distillation(items[args.warmup :], teacher, student, Path(tmp) / "cache", **collect)
        watch._sync()
        collect_seconds = time.perf_counter() - started

        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            device=args.device,
            teacher_weight=args.alpha if stats.labelled else 1.0,
            teacher_temperature=args.temperature,
            head=RelationHeadConfig(segmenter="student"),
            log=False,
        )
        started = time.perf_counter()
        result = train(Path(tmp) / "cache", None, config=config)
        train_seconds = time.perf_counter() - started
    history = result.history
    timed = history[1:] if len(history) > 1 else history
    train_rate = sum(e["images_per_s"] * e["seconds"] for e in timed) / sum(e["seconds"] for e in timed)
    images = stats.images
    collect_rate = images / collect_seconds
    figures = {
        "teacher": args.teacher_sam or f"random {args.teacher}",
        "student": args.student_sam or f"random {args.student}",
        "dtype": str(dtype).removeprefix("torch."),
        "image_size": f"{width}x{height}",
        "points_per_side": args.points_per_side,
        "images": images,
        "labelled": stats.labelled,
        "masks_per_image": stats.masks / max(images, 1),
        "collect_seconds": collect_seconds,
        "collect_images_per_s": collect_rate,
        "teacher_ms": 1000 * watch.seconds["teacher"] / max(images, 1),
        "student_ms": 1000 * watch.seconds["student"] / max(images, 1),
        "rest_ms": 1000 * (collect_seconds - watch.seconds["teacher"] - watch.seconds["student"]) / max(images, 1),
        "psg_46k_collect_hours": PSG_TRAIN_IMAGES / collect_rate / 3600,
        "train_images": images,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "amp": bool(config.amp and args.device.startswith("cuda")),
        "train_images_per_s": train_rate,
        "ms_per_step": 1000 * args.batch_size / train_rate,
        "psg_46k_epoch_hours": PSG_TRAIN_IMAGES / train_rate / 3600,
    }
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, flush=True)
    details = {
        "settings": dataclasses.asdict(teacher.settings),
        "teacher_weight": config.teacher_weight,
        "temperature": args.temperature,
        "train_seconds": train_seconds,
        "history": [{k: v for k, v in e.items() if isinstance(v, (int, float)) and math.isfinite(v)} for e in history],
        "collect_stats": dataclasses.asdict(stats),
        "warmup": args.warmup,
    }
    records.save("distill_throughput", [figures], device=args.device, path=args.json, details=details)


if __name__ == "__main__":
    main()
