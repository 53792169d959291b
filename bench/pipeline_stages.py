"""Where the time of one photo goes: the pipeline's stages, timed by wrapping their functions.

Same random weights and thresholds as bench/pipeline.py (its `build`), one `pipeline.batch` call
per photo, wall seconds per stage (a stage's time includes the stages it calls; "decode" counts
the grid decoding and the predicted-IoU filter, "stability + boxes" the first full-resolution
pass, "final masks" the second one for the masks that survive NMS).

    python bench/pipeline_stages.py --variant vit_b --points-per-side 16 --photos 3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline as bench  # noqa: E402  (bench/pipeline.py: models and thresholds)
from relate_anything import pipeline as pipeline_module  # noqa: E402
from relate_anything.image_io import load_image  # noqa: E402
from relate_anything.pipeline import RelateAnything  # noqa: E402
from relate_anything.sam import segmenter as segmenter_module  # noqa: E402
from relate_anything.sam.segmenter import Segmenter  # noqa: E402

# (owner, attribute, label); attributes missing from an older checkout are skipped.
STAGES = [
    (Segmenter, "embed_images", "encoder"),
    (Segmenter, "_decode_grid", "decode"),
    (Segmenter, "_stability_and_boxes", "stability + boxes"),
    (segmenter_module, "nms", "box NMS"),
    (Segmenter, "upscale_masks", "final masks"),
    (segmenter_module, "remove_duplicate_masks", "duplicate removal"),
    (pipeline_module.SceneGraph, "from_masks", "RLE + SceneGraph"),
    (RelateAnything, "_relations", "RAM head + top-k"),
]


def instrument(totals: dict[str, float]) -> None:
    for owner, name, label in STAGES:
        function = getattr(owner, name, None)
        if function is None:
            continue

        def timed(*args, __function=function, __label=label, **kwargs):
            started = time.perf_counter()
            try:
                return __function(*args, **kwargs)
            finally:
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
    parser.add_argument("--decoder", default="fast", choices=["fast", "transformers"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    device = torch.device(args.device)
    paths = sorted(p for p in args.images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = [load_image(p) for p in paths[: args.calibration_photos]]
    setup = bench.build(args.variant, photos, args.points_per_side, 100, device, 0)
    segmenter = Segmenter(
        copy.deepcopy(setup.sam).to(device),
        points_per_side=args.points_per_side,
        duplicate_iou_thresh=1.01,
        decoder=args.decoder,
        **setup.thresholds,
    )
    pipeline = RelateAnything(segmenter, setup.head.to(device), top_k=bench.TOP_K)
    pipeline.batch([paths[0]])  # warm-up
    totals: dict[str, float] = {}
    instrument(totals)
    rows = []
    for path in paths[args.calibration_photos : args.calibration_photos + args.photos]:
        totals.clear()
        segmenter.reset_image()
        started = time.perf_counter()
        graph = pipeline.batch([path])[0]
        total = time.perf_counter() - started
        rows.append(
            {
                "photo": path.name,
                "size": [graph.width, graph.height],
                "masks": len(graph.segments),
                "seconds": total,
                **totals,
            }
        )
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    if args.out:
        args.out.write_text(
            json.dumps({"command": " ".join(sys.argv), "thresholds": setup.thresholds, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
