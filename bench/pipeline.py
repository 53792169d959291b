"""Images per second and peak memory of the whole pipeline, against the original code (issue 7).

For each SAM variant (random weights: the arithmetic does not depend on their values), dtype and
batch size it times, on the photos in ../shared/images:

- encoder: the image encoder alone on preprocessed batches;
- decoding: all points_per_side² grid prompts of one photo (3 masks each, no filter);
- pipeline: `RelateAnything.batch` from the JPEG files to SceneGraphs with RLE masks (segment
  everything, features, RAM head, top-20 relations), `batch_size` photos per call.

and, once per variant in a subprocess of the reference interpreter, the reference: Meta's
SamAutomaticMaskGenerator (output_mode="coco_rle") followed by the RAM head, one photo at a
time, with the same weights and thresholds (bench/reference_pipeline.py). The speed-up is ours
over the reference in images/s.

Random weights predict IoUs of no particular value and noisy masks whose boxes all cover the
photo, so SAM's default thresholds would keep nothing (or one mask after box NMS). So: the IoU
head's output bias is shifted to put the median predicted IoU at 0.8, the predicted-IoU
threshold is set at the quantile that keeps ~2x --masks of the grid masks of the first
--calibration-photos photos (pooled), the stability threshold at the quantile that keeps
~--masks per photo of those, box NMS is off (1.0) and RAM's
duplicate removal is a no-op (1.01, still computed); both pipelines get the same thresholds.

    python bench/pipeline.py --device cuda --variants vit_b,vit_l,vit_h --dtypes fp32,bf16 \\
        --batch-sizes 1,8 --images 10
    python bench/pipeline.py --device cpu --variants vit_b --dtypes fp32 --batch-sizes 1 \\
        --points-per-side 16 --images 3 --reference-python .venv-reference/bin/python
    python bench/pipeline.py --device cpu --variants tiny --dtypes fp32 --batch-sizes 1 \\
        --points-per-side 4 --images 2 --masks 8      # a smoke run

The record (bench/records.py; `--json`, default bench/results/pipeline-<date>-<device>-<variants>.json)
has one figures row per variant, dtype and batch size: variant, dtype, batch_size,
points_per_side, decoder, allocator and reference_allocator (CPU malloc settings),
encoder_images_per_s, decode_ms (all grid prompts of one photo), prompts, images, images_per_s
(the pipeline), masks_per_image, peak_memory_gib and its kind, and where the reference ran
reference_images_per_s, reference_masks_per_image, reference_peak_memory_gib and speedup
(images_per_s / reference_images_per_s). details holds the per-photo seconds and counts, the
settings and the photos.

The reference interpreter needs segment-anything, torchvision, pycocotools, safetensors and
transformers: `bash scripts/make_reference_env.sh --bench` builds .venv-reference with them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # sam_factory: random SAMs equal to segment-anything's builders

import records  # noqa: E402  (bench/, on the path when a script here runs)
from peak_rss import PeakRss  # noqa: E402
from relate_anything.cpu_allocator import reuse_freed_memory  # noqa: E402
from relate_anything.image_io import load_image  # noqa: E402
from relate_anything.pipeline import RelateAnything  # noqa: E402
from relate_anything.ram import RelationHead, RelationHeadConfig  # noqa: E402
from relate_anything.sam import Segmenter, SegmentSettings  # noqa: E402
from relate_anything.sam.ops import build_point_grid  # noqa: E402
from relate_anything.sam.transforms import preprocess  # noqa: E402
from sam_factory import random_sam, write_original  # noqa: E402

ENCODERS = {
    "tiny": {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": [1]},  # smoke runs
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": [7, 15, 23, 31]},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MEDIAN_PREDICTED_IOU = 0.8
TOP_K = 20


# ----------------------------------------------------------------------------------------------
# Measuring


class PeakMemory:
    """Peak memory while the block runs: torch.cuda.max_memory_allocated on CUDA, else the
    process's resident set size sampled every 5 ms (bytes, in `.peak`)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.peak = 0
        self._rss = None if self.cuda else PeakRss()

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._rss.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._rss.__exit__(*exc)
            self.peak = self._rss.peak


@contextmanager
def timed(device: torch.device, into: dict):
    """Wall seconds of the block (device work included) and its peak memory, into `into`."""
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize()
        into["seconds"] = time.perf_counter() - started
    into["peak_memory_bytes"] = memory.peak


# ----------------------------------------------------------------------------------------------
# Models and thresholds


@dataclass
class Setup:
    """One variant's random weights (fp32, CPU) and the settings that keep ~N masks.

    `thresholds` are the same settings as `SamAutomaticMaskGenerator` keyword arguments (the
    reference's)."""

    variant: str
    sam: torch.nn.Module
    head: RelationHead
    settings: SegmentSettings
    iou_shift: float

    @property
    def thresholds(self) -> dict:
        return {
            "pred_iou_thresh": self.settings.pred_iou_thresh,
            "stability_score_thresh": self.settings.stability_score_thresh,
            "box_nms_thresh": self.settings.box_nms_thresh,
        }


def build(
    variant: str, photos: list[np.ndarray], points_per_side: int, masks: int, device: torch.device, seed: int
) -> Setup:
    """Random weights for `variant` and settings calibrated on `photos` (pooled, fp32)."""
    sam = random_sam(ENCODERS[variant], seed=seed)
    torch.manual_seed(seed)
    head = RelationHead(RelationHeadConfig()).eval()
    segmenter = Segmenter(copy.deepcopy(sam).to(device))
    embeddings = segmenter.embed_images(photos)
    ious = []
    for photo, embedding in zip(photos, embeddings):
        segmenter.set_embedding(embedding)
        height, width = photo.shape[:2]
        grid = build_point_grid(points_per_side) * torch.tensor([width, height], dtype=torch.float64)
        ious.append(segmenter._decode_grid(grid.to(device), 0.0)[1].float().cpu())
    iou = torch.cat(ious)
    shift = MEDIAN_PREDICTED_IOU - float(iou.median())
    for model in (sam, segmenter.model):
        with torch.no_grad():
            model.mask_decoder.iou_prediction_head.proj_out.bias += shift
    per_photo = len(iou) / len(photos)
    pred_iou_thresh = float(torch.quantile(iou + shift, 1 - min(1.0, 2 * masks / per_photo)))
    # Box NMS off and RAM's duplicate removal a no-op (above 1): random masks overlap too much.
    settings = SegmentSettings(
        points_per_side=points_per_side,
        pred_iou_thresh=min(max(pred_iou_thresh, 0.0), 1.0),
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        duplicate_iou_thresh=1.01,
    )
    stability = []
    for embedding in embeddings:
        segmenter.set_embedding(embedding)
        stability.append(segmenter.segment_everything(settings=settings).stability_scores.float().cpu())
    stability = torch.cat(stability)
    keep_fraction = min(1.0, masks * len(photos) / max(len(stability), 1))
    stability_thresh = float(torch.nanquantile(stability, 1 - keep_fraction)) if len(stability) else 0.0
    # > 0 switches the filter on
    settings = settings.replace(stability_score_thresh=min(max(stability_thresh, 1e-6), 1.0))
    return Setup(variant, sam, head, settings, shift)


# ----------------------------------------------------------------------------------------------
# Ours


def bench_encoder(segmenter: Segmenter, photos: list[np.ndarray], batch_size: int, device: torch.device) -> dict:
    pixels = [preprocess(p, device=device, dtype=segmenter.dtype) for p in photos]
    batches = [torch.cat(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
    with torch.inference_mode():
        segmenter.model.get_image_embeddings(batches[0])  # warm-up
        result = {}
        with timed(device, result):
            for batch in batches:
                segmenter.model.get_image_embeddings(batch)
    result["images_per_s"] = len(photos) / result["seconds"]
    return result


def bench_decoding(segmenter: Segmenter, photo: np.ndarray, device: torch.device, repeats: int) -> dict:
    """All grid prompts of one photo, 3 masks each, no filter (as the original decodes them)."""
    segmenter.set_image(photo)
    height, width = photo.shape[:2]
    side = segmenter.settings.points_per_side
    grid = (build_point_grid(side) * torch.tensor([width, height], dtype=torch.float64)).to(device)
    segmenter._decode_grid(grid, 0.0)  # warm-up
    result = {}
    with timed(device, result):
        for _ in range(repeats):
            for points in grid.split(segmenter.points_per_batch):
                segmenter._decode_grid(points, 0.0)
    result["seconds"] /= repeats
    result["prompts"] = len(grid)
    result["images_per_s"] = 1 / result["seconds"]
    return result


def bench_pipeline(
    pipeline: RelateAnything, paths: list[Path], batch_size: int, warmup: int, device: torch.device
) -> dict:
    """`RelateAnything.stream` over the photo files: the next batch is decoded while one runs."""
    pipeline.segmenter.reset_image()
    pipeline.batch(paths[:warmup])
    timed_paths = paths[warmup:]
    pipeline.segmenter.reset_image()  # consecutive photos differ: nothing is served from a cache
    result = {}
    with timed(device, result):
        graphs = list(pipeline.stream(timed_paths, batch_size=batch_size, top_k=TOP_K))
    result["images"] = len(timed_paths)
    result["images_per_s"] = len(timed_paths) / result["seconds"]
    result["masks"] = [len(g.segments) for g in graphs]
    result["relations"] = [len(g.relations) for g in graphs]
    return result


# ----------------------------------------------------------------------------------------------
# Reference


def default_reference_python() -> str | None:
    configured = os.environ.get("RELATE_ANYTHING_REFERENCE_PYTHON")
    if configured:
        return configured
    local = REPO / ".venv-reference" / "bin" / "python"
    if local.exists():
        return str(local)
    probe = subprocess.run([sys.executable, "-c", "import segment_anything, torchvision"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


# The environment equivalent of `reuse_freed_memory()`, for the reference's process.
TUNED_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def bench_reference(
    python: str,
    setup: Setup,
    paths: list[Path],
    points_per_side: int,
    warmup: int,
    device: torch.device,
    directory: Path,
    tuned_allocator: bool = False,
) -> dict:
    checkpoint = directory / f"{setup.variant}_original.pth"
    write_original(setup.sam, checkpoint)
    head_file = directory / "relation_head.safetensors"
    setup.head.save(head_file)
    spec = {
        "encoder": ENCODERS[setup.variant],
        "checkpoint": str(checkpoint),
        "relation_head": str(head_file),
        "device": str(device),
        "images": [str(p) for p in paths],
        "warmup": warmup,
        "top_k": TOP_K,
        "generator": {"points_per_side": points_per_side, **setup.thresholds},
    }
    (directory / "spec.json").write_text(json.dumps(spec))
    out = directory / "reference.json"
    completed = subprocess.run(
        [python, str(REPO / "bench" / "reference_pipeline.py"), str(directory / "spec.json"), "--json", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, **TUNED_ALLOCATOR_ENV} if tuned_allocator else None,
    )
    checkpoint.unlink()
    if completed.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{completed.stderr[-4000:]}")
    record = json.loads(out.read_text())
    result = {name: record["details"][name] for name in ("seconds", "masks", "relations", "peak_memory_bytes")}
    result["images"] = len(result["seconds"])
    result["images_per_s"] = result["images"] / sum(result["seconds"])
    result["torch"] = record["torch"]
    return result


# ----------------------------------------------------------------------------------------------
# Report


def figure_rows(report: dict) -> list[dict]:
    """One flat row per variant, dtype and batch size (see the docstring)."""
    rows = []
    for variant, entry in report["variants"].items():
        reference = entry.get("reference")
        for run in entry["runs"]:
            pipe = run["pipeline"]
            row = {
                "variant": variant,
                "dtype": run["dtype"],
                "batch_size": run["batch_size"],
                "points_per_side": report["points_per_side"],
                "decoder": report["decoder"],
                "allocator": report["allocator"],
                "reference_allocator": report["reference_allocator"] if reference else None,
                "encoder_images_per_s": run["encoder"]["images_per_s"],
                "decode_ms": 1000 * run["decoding"]["seconds"],
                "prompts": run["decoding"]["prompts"],
                "images": pipe["images"],
                "images_per_s": pipe["images_per_s"],
                "masks_per_image": float(np.mean(pipe["masks"])),
                "peak_memory_gib": max(run["encoder"]["peak_memory_bytes"], pipe["peak_memory_bytes"]) / 2**30,
                "peak_memory_kind": report["peak_memory_kind"],
                "reference_images_per_s": None,
                "reference_masks_per_image": None,
                "reference_peak_memory_gib": None,
                "speedup": None,
            }
            if reference:
                row["reference_images_per_s"] = reference["images_per_s"]
                row["reference_masks_per_image"] = float(np.mean(reference["masks"]))
                row["reference_peak_memory_gib"] = reference["peak_memory_bytes"] / 2**30
                row["speedup"] = pipe["images_per_s"] / reference["images_per_s"]
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default="vit_b,vit_l,vit_h")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--batch-sizes", default="1,8", help="photos per pipeline.batch / encoder call")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=256, help="grid points per decoder call (ours)")
    parser.add_argument("--images", type=int, default=10, help="photos timed per measurement (cycled)")
    parser.add_argument("--images-dir", type=Path, default=REPO.parent / "shared" / "images")
    parser.add_argument("--warmup", type=int, default=1, help="photos run before timing")
    parser.add_argument("--masks", type=int, default=100, help="masks per photo the thresholds aim at")
    parser.add_argument("--calibration-photos", type=int, default=3, help="photos the thresholds are set on")
    parser.add_argument("--decoder", default="fast", choices=["fast", "transformers"])
    parser.add_argument("--decode-repeats", type=int, default=3)
    parser.add_argument("--reference-python", help="interpreter with segment_anything ('none' to skip)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--allocator",
        default="tuned",
        choices=["tuned", "default"],
        help="on CPUs, ours with reuse_freed_memory() as the CLI runs it (tuned) or glibc's defaults",
    )
    parser.add_argument(
        "--reference-allocator",
        default="default",
        choices=["tuned", "default"],
        help="the reference's process with the same malloc settings (tuned) or as users run it (default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    records.add_json_option(parser)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    allocator_tuned = args.allocator == "tuned" and reuse_freed_memory(device.type)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as the reference
        torch.backends.cudnn.allow_tf32 = False
    available = sorted(p for p in args.images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(available) < 2:  # consecutive photos must differ, or the segmenter's caches would serve them
        parser.error(f"need at least 2 photos in {args.images_dir}")
    paths = [available[i % len(available)] for i in range(args.warmup + args.images)]
    photos = [load_image(p) for p in paths]
    reference_python = args.reference_python or default_reference_python()
    if reference_python == "none":
        reference_python = None
    report = {
        "images_dir": str(args.images_dir),
        "photos": [p.name for p in paths],
        "points_per_side": args.points_per_side,
        "decoder": args.decoder,
        "allocator": "tuned" if allocator_tuned else "default",
        "reference_allocator": args.reference_allocator if device.type == "cpu" else "default",
        "reference_python": reference_python,
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process RSS",
        "variants": {},
    }
    for variant in args.variants.split(","):
        setup = build(variant, photos[: args.calibration_photos], args.points_per_side, args.masks, device, args.seed)
        entry = {"settings": dataclasses.asdict(setup.settings), "iou_shift": setup.iou_shift, "runs": []}
        report["variants"][variant] = entry
        print(f"{variant}: {setup.settings}", file=sys.stderr)
        for dtype_name in args.dtypes.split(","):
            sam = copy.deepcopy(setup.sam).to(device, DTYPES[dtype_name]).eval()
            segmenter = Segmenter(
                sam, settings=setup.settings, points_per_batch=args.points_per_batch, decoder=args.decoder
            )
            pipeline = RelateAnything(segmenter, copy.deepcopy(setup.head).to(device), top_k=TOP_K)
            decoding = bench_decoding(segmenter, photos[0], device, args.decode_repeats)
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                run = {
                    "dtype": dtype_name,
                    "batch_size": batch_size,
                    "encoder": bench_encoder(segmenter, photos[args.warmup :], batch_size, device),
                    "decoding": decoding,
                    "pipeline": bench_pipeline(pipeline, paths, batch_size, args.warmup, device),
                }
                entry["runs"].append(run)
                print(
                    f"{variant} {dtype_name} batch {batch_size}: encoder {run['encoder']['images_per_s']:.2f} img/s, "
                    f"decoding {1000 * decoding['seconds']:.0f} ms, pipeline {run['pipeline']['images_per_s']:.3f} img/s",
                    file=sys.stderr,
                )
            del pipeline, segmenter, sam
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if reference_python:
            with tempfile.TemporaryDirectory() as tmp:
                entry["reference"] = bench_reference(
                    reference_python,
                    setup,
                    paths,
                    args.points_per_side,
                    args.warmup,
                    device,
                    Path(tmp),
                    tuned_allocator=device.type == "cpu" and args.reference_allocator == "tuned",
                )
            best = max(entry["runs"], key=lambda r: r["pipeline"]["images_per_s"])
            entry["speedup"] = best["pipeline"]["images_per_s"] / entry["reference"]["images_per_s"]
            print(
                f"{variant}: reference {entry['reference']['images_per_s']:.3f} img/s; best ours "
                f"({best['dtype']}, batch {best['batch_size']}) {best['pipeline']['images_per_s']:.3f} img/s: "
                f"speed-up {entry['speedup']:.2f}x",
                file=sys.stderr,
            )
    rows = figure_rows(report)
    for row in rows:
        print(json.dumps(row))
    records.save("pipeline", rows, device=device, path=args.json, details=report, tag=args.variants.replace(",", "+"))


if __name__ == "__main__":
    main()
