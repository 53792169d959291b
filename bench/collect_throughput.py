"""Feature-collection throughput: images per second of `relate_anything.training.collect()`
(segment everything + IoU matching + RLE encoding + shard writing) with a given SAM, on a
synthetic PSG-format dataset.

    python bench/collect_throughput.py --sam sam_vit_h_4b8939.pth --device cuda --images 20
    python bench/collect_throughput.py --random vit_h --device cuda   # random weights, same cost

With random weights SAM's default thresholds keep almost no mask; pass --random-thresholds to
keep masks (cost then depends on how many survive, so prefer real weights for figures).

    python bench/collect_throughput.py --random tiny --device cpu --images 2 --warmup 1 \
        --size 160,120 --points-per-side 4 --random-thresholds        # a smoke run

The record (bench/records.py; `--json`, default bench/results/collect_throughput-<date>-<device>.json)
has one figures row: sam, dtype, image_size ("WxH"), points_per_side, points_per_batch, images,
masks_per_image, seconds, images_per_s, psg_46k_hours (a 46k-image PSG train split at that rate).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from relate_anything.datasets import PsgDataset, make_synthetic_psg
from relate_anything.pipeline import PipelineSpec
from relate_anything.sam import Segmenter, SegmentSettings
from relate_anything.training import collect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402
from pipeline import ENCODERS as RANDOM_ENCODERS  # noqa: E402  (one table of SAM sizes)


def random_sam(name: str, device: str, dtype: torch.dtype, image_size: int = 1024, *, width: int = 256, seed: int = 0):
    """A random SAM with the encoder `name`; a smaller `image_size` (e.g. 256) makes a cheap one.

    `width` is the prompt encoder's and mask decoder's width (the published 256; 32 makes their
    cost, which grows with the prompts and does not shrink with the encoder, small enough for
    CPU runs of many frames); the mask tokens, the RAM head's input, are `width` wide.
    """
    from transformers import SamConfig, SamModel

    from sam_factory import sam_config  # the tests' SamConfig equal to segment-anything's builders

    config = sam_config(RANDOM_ENCODERS[name], image_size)
    if width != 256:
        vision = config.vision_config.to_dict() | {"output_channels": width, "num_pos_feats": width // 2}
        prompt = config.prompt_encoder_config.to_dict() | {"hidden_size": width}
        decoder = config.mask_decoder_config.to_dict() | {
            "hidden_size": width, "num_attention_heads": 2, "mlp_dim": 4 * width, "iou_head_hidden_dim": width,
        }  # fmt: skip
        config = SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    torch.manual_seed(seed)
    return SamModel(config).to(device, dtype).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam", help="SAM weights (hub id, folder or sam_vit_*.pth)")
    parser.add_argument("--random", choices=sorted(RANDOM_ENCODERS), help="random SAM of this size instead")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="run SAM in bfloat16")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", default="640,480", help="synthetic image width,height")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=256)
    parser.add_argument("--random-thresholds", action="store_true", help="thresholds that keep masks of random weights")
    parser.add_argument("--warmup", type=int, default=2)
    records.add_json_option(parser)
    args = parser.parse_args()
    if (args.sam is None) == (args.random is None):
        parser.error("give --sam or --random")

    dtype = torch.bfloat16 if args.bf16 else torch.float32
    settings = SegmentSettings(points_per_side=args.points_per_side)
    if args.random_thresholds:
        settings = settings.replace(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.7)
    spec = PipelineSpec(
        sam=args.sam, dtype=str(dtype).removeprefix("torch."), settings=settings, points_per_batch=args.points_per_batch
    )
    if args.sam:  # as `relate-anything collect` builds it
        segmenter = spec.build_segmenter(args.device)
    else:
        model = random_sam(args.random, args.device, dtype)
        segmenter = Segmenter(model, settings=settings, points_per_batch=args.points_per_batch)
    width, height = (int(v) for v in args.size.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_psg(Path(tmp) / "psg", images=args.images + args.warmup, seed=0, size=(width, height))
        dataset = PsgDataset(Path(tmp) / "psg", split=None)
        warm = _Subset(dataset, range(args.warmup))
        timed = _Subset(dataset, range(args.warmup, len(dataset)))
        collect(warm, segmenter, Path(tmp) / "warm", progress=None)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        stats = collect(timed, segmenter, Path(tmp) / "cache", progress=None)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    figures = {
        "sam": args.sam or f"random {args.random}",
        "dtype": spec.dtype,
        "image_size": f"{width}x{height}",
        "points_per_side": args.points_per_side,
        "points_per_batch": args.points_per_batch,
        "images": stats.images,
        "masks_per_image": stats.masks / max(stats.images, 1),
        "seconds": elapsed,
        "images_per_s": stats.images / elapsed,
        "psg_46k_hours": 46_000 / (stats.images / elapsed) / 3600,
    }
    print(figures)
    details = {"settings": dataclasses.asdict(settings), "warmup": args.warmup}
    records.save("collect_throughput", [figures], device=args.device, path=args.json, details=details)


class _Subset:
    """The images `indices` of a dataset, with the interface `collect` needs."""

    def __init__(self, dataset, indices) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]

    def image_path(self, index: int):
        return self.dataset.image_path(self.indices[index])

    def image_ids(self):
        return [self.dataset[i].image_id for i in self.indices]


if __name__ == "__main__":
    main()
