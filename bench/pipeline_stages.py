"""Where the time of one photo goes: the pipeline's stages, timed by wrapping their functions.

Same random weights and thresholds as bench/pipeline.py (its `build`), one `pipeline.batch` call
per photo, wall seconds per stage (a stage's time includes the stages it calls; "decode" counts
the grid decoding and the predicted-IoU filter, "stability + boxes" the first full-resolution
pass, "final masks" the second one for the masks that survive NMS).

    python bench/pipeline_stages.py --variant vit_b --points-per-side 16 --photos 3
    python bench/pipeline_stages.py --variant tiny --points-per-side 4 --photos 1   # a smoke run

The record (bench/records.py; `--json`, default bench/results/pipeline_stages-<date>-<device>.json)
has one figures row per photo: photo, size ("WxH"), variant, dtype, points_per_side, allocator,
masks, seconds (the whole photo) and the seconds of each stage: encoder, decode,
stability_and_boxes, box_nms, final_masks, duplicate_removal, rle_and_scene_graph,
ram_head_and_top_k (None where the stage did not run).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline as bench  # noqa: E402  (bench/pipeline.py: models and thresholds)
import records  # noqa: E402
from relate_anything import pipeline as pipeline_module  # noqa: E402
from relate_anything.cpu_allocator import reuse_freed_memory  # noqa: E402
from relate_anything.image_io import load_image  # noqa: E402
from relate_anything.pipeline import RelateAnything  # noqa: E402
from relate_anything.sam import segmenter as segmenter_module  # noqa: E402
from relate_anything.sam.segmenter import Segmenter  # noqa: E402

# (owner, attribute, figure name); attributes missing from an older checkout are skipped.
STAGES = [
    (Segmenter, "embed_images", "encoder"),
    (Segmenter, "_decode_grid", "decode"),
    (Segmenter, "_stability_and_boxes", "stability_and_boxes"),
    (segmenter_module, "nms", "box_nms"),
    (Segmenter, "upscale_masks", "final_masks"),
    (segmenter_module, "remove_duplicate_masks", "duplicate_removal"),
    (pipeline_module.SceneGraph, "from_masks", "rle_and_scene_graph"),
    (RelateAnything, "_relations", "ram_head_and_top_k"),
]


def instrument(totals: dict[str, float], device: torch.device) -> None:
    """Wrap each stage's function to add its wall seconds to `totals` (on CUDA, with the device
    synchronised at both ends, so that a stage is charged its own kernels)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for owner, name, label in STAGES:
        function = getattr(owner, name, None)
        if function is None:
            continue

        def timed(*args, __function=function, __label=label, **kwargs):
            sync()
            started = time.perf_counter()
            try:
                return __function(*args, **kwargs)
            finally:
                sync()
                totals[__label] = totals.get(__label, 0.0) + time.perf_counter() - started

        setattr(owner, name, staticmethod(timed) if isinstance(owner.__dict__.get(name), staticmethod) else timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="vit_b", choices=sorted(bench.ENCODERS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--images-dir", type=Path, default=bench.REPO.parent / "shared" / "images")
    parser.add_argument("--calibration-photos", type=int, default=2)
    parser.add_argument("--masks", type=int, default=100, help="masks per photo the thresholds aim at")
    parser.add_argument("--decoder", default="fast", choices=["fast", "transformers"])
    parser.add_argument("--dtype", default="fp32", choices=sorted(bench.DTYPES))
    parser.add_argument(
        "--allocator",
        default="tuned",
        choices=["tuned", "default"],
        help="on CPUs, reuse_freed_memory() as the CLI runs it (tuned) or glibc's defaults",
    )
    records.add_json_option(parser)
    args = parser.parse_args()

    device = torch.device(args.device)
    tuned = args.allocator == "tuned" and reuse_freed_memory(device.type)
    paths = sorted(p for p in args.images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(paths) < args.calibration_photos + args.photos:
        parser.error(f"need {args.calibration_photos + args.photos} photos in {args.images_dir}")
    photos = [load_image(p) for p in paths[: args.calibration_photos]]
    setup = bench.build(args.variant, photos, args.points_per_side, args.masks, device, 0)
    segmenter = Segmenter(
        copy.deepcopy(setup.sam).to(device, bench.DTYPES[args.dtype]), settings=setup.settings, decoder=args.decoder
    )
    pipeline = RelateAnything(segmenter, setup.head.to(device), top_k=bench.TOP_K)
    pipeline.batch([paths[0]])  # warm-up
    totals: dict[str, float] = {}
    instrument(totals, device)
    rows = []
    for path in paths[args.calibration_photos : args.calibration_photos + args.photos]:
        totals.clear()
        segmenter.reset_image()
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        graph = pipeline.batch([path])[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - started
        rows.append(
            {
                "photo": path.name,
                "size": f"{graph.width}x{graph.height}",
                "variant": args.variant,
                "dtype": args.dtype,
                "points_per_side": args.points_per_side,
                "allocator": "tuned" if tuned else "default",
                "masks": len(graph.segments),
                "seconds": total,
                **{label: totals.get(label) for _, _, label in STAGES},
            }
        )
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    details = {"settings": dataclasses.asdict(setup.settings), "images_dir": str(args.images_dir)}
    records.save("pipeline_stages", rows, device=device, path=args.json, details=details)


if __name__ == "__main__":
    main()
