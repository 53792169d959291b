"""Batch-job throughput against the pipeline's own: is `relate-anything batch` limited by the model,
or by reading JPEGs, writing JSON and committing shards?

On the same device, pipeline and photos, it times
  pipeline  `pipeline.batch` over the photos already decoded in memory (the model's own speed);
  job       `run_batch` over the same photos as JPEG files: decoding in background threads,
            `pipeline.batch`, JSON encoding, atomic shard writes;
and prints both (images/s) and their ratio (job / pipeline; 1.0 means no I/O cost at all).

    python bench/batch_throughput.py --random tiny --image-size 256 --device cpu --images 16 --points-per-side 4 --random-thresholds
    python bench/batch_throughput.py --random vit_h --device cuda --bf16 --images 64 --batch-size 8 --random-thresholds
    python bench/batch_throughput.py --sam sam_vit_h_4b8939.pth --ram ram_epoch12.pth --device cuda --images 64

The photos are ../shared/images (or --photos), each copied `--images / count` times with one
pixel changed, so that no copy hits the segmenter's cache of the last photo. Random weights
(--random) cost what real ones of the same size cost, except that the thresholds decide how many
masks survive (--random-thresholds keeps masks, as real weights do).

The record (bench/records.py; `--json`, default bench/results/batch_throughput-<date>-<device>.json)
has one figures row: sam, dtype, images, batch_size, points_per_side, pipeline_images_per_s,
images_per_s (the job's), job_over_pipeline (best against best) and median_ratio (of the
alternating pairs); details holds every run's seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from relate_anything.batch import list_inputs, load_input, run_batch
from relate_anything.image_io import load_image
from relate_anything.pipeline import PipelineSpec, RelateAnything
from relate_anything.ram import RelationHead, RelationHeadConfig
from relate_anything.sam import Segmenter, SegmentSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402
from collect_throughput import RANDOM_ENCODERS, random_sam  # noqa: E402  (the same random SAMs)

REPO = Path(__file__).resolve().parents[1]


def distinct_photos(source: Path, folder: Path, count: int) -> None:
    """`count` JPEGs in `folder`: the photos of `source` in turn, copy k with pixel (0, 0) set to k."""
    photos = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    folder.mkdir(parents=True)
    for k in range(count):
        pixels = load_image(photos[k % len(photos)])
        pixels[0, 0] = (k % 256, (k // 256) % 256, 7)
        Image.fromarray(pixels).save(folder / f"{k:05d}_{photos[k % len(photos)].stem}.jpg", quality=95)


def pipeline_spec(args: argparse.Namespace) -> PipelineSpec:
    """The job's pipeline: real weights by reference, or (--random) a description of the
    settings only, the pipeline itself being built by `build_pipeline`."""
    settings = SegmentSettings(points_per_side=args.points_per_side)
    if args.random_thresholds:  # random masks overlap a lot: box NMS would keep about one
        settings = settings.replace(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    dtype = "bfloat16" if args.bf16 else "float32"
    return PipelineSpec(sam=args.sam, ram=args.ram, dtype=dtype, settings=settings, top_k=args.top_k)


def build_pipeline(args: argparse.Namespace, spec: PipelineSpec) -> RelateAnything:
    if args.sam:
        return spec.build(args.device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    segmenter = Segmenter(random_sam(args.random, args.device, dtype, args.image_size), settings=spec.settings)
    torch.manual_seed(0)
    head = RelationHead(RelationHeadConfig()).to(args.device)  # the published head's size
    return RelateAnything(segmenter, head, settings=spec.settings, top_k=spec.top_k)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam", help="SAM weights (hub id, folder or sam_vit_*.pth); with --ram")
    parser.add_argument("--ram", help="RAM head weights (with --sam)")
    parser.add_argument(
        "--random", choices=sorted(RANDOM_ENCODERS), help="random SAM of this size and a random full-size head"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="run SAM in bfloat16")
    parser.add_argument(
        "--image-size", type=int, default=1024, help="input size of the random SAM (256: a cheap model for CPU runs)"
    )
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "images")
    parser.add_argument("--images", type=int, default=16, help="photos timed per run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--decode-threads", type=int, default=2)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--random-thresholds", action="store_true", help="thresholds that keep masks of random weights")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="alternate pipeline and job runs this many times; the best of each counts",
    )
    records.add_json_option(parser)
    args = parser.parse_args()
    if (args.sam is None) == (args.random is None) or (args.sam is None) != (args.ram is None):
        parser.error("give --sam and --ram, or --random")

    spec = pipeline_spec(args)
    pipeline = build_pipeline(args, spec)
    with tempfile.TemporaryDirectory() as tmp:
        distinct_photos(args.photos, Path(tmp) / "photos", args.images)
        items = list_inputs(Path(tmp) / "photos")
        decoded = [load_input(item.location) for item in items]
        groups = [decoded[k : k + args.batch_size] for k in range(0, len(decoded), args.batch_size)]
        pipeline.batch(groups[0])  # warm-up: kernels, allocator, lazy initialisation
        pipeline_seconds, job_seconds = [], []
        for repeat in range(args.repeats):
            pipeline.segmenter.reset_image()  # no cached photo from the previous run
            sync(args.device)
            started = time.perf_counter()
            for group in groups:
                pipeline.batch(group)
            sync(args.device)
            pipeline_seconds.append(time.perf_counter() - started)

            pipeline.segmenter.reset_image()
            started = time.perf_counter()
            summary = run_batch(
                items, Path(tmp) / f"out{repeat}", spec, pipeline=pipeline, batch_size=args.batch_size,
                decode_threads=args.decode_threads, progress=None,
            )  # fmt: skip
            sync(args.device)
            job_seconds.append(time.perf_counter() - started)
            assert summary.done == len(items), f"{summary.failed} photos failed"
    pipeline_rate = len(items) / min(pipeline_seconds)
    job_rate = len(items) / min(job_seconds)
    figures = {
        "sam": args.sam or f"random {args.random} at {args.image_size} px",
        "dtype": spec.dtype,
        "images": len(items),
        "batch_size": args.batch_size,
        "points_per_side": args.points_per_side,
        "pipeline_images_per_s": pipeline_rate,
        "images_per_s": job_rate,
        "job_over_pipeline": job_rate / pipeline_rate,
        "median_ratio": statistics.median(p / j for p, j in zip(pipeline_seconds, job_seconds)),
    }
    print(figures)
    details = {
        "pipeline_seconds": pipeline_seconds,
        "job_seconds": job_seconds,
        "decode_threads": args.decode_threads,
        "photos": str(args.photos),
        "settings": dataclasses.asdict(spec.settings),
    }
    records.save("batch_throughput", [figures], device=args.device, path=args.json, details=details)


if __name__ == "__main__":
    main()
