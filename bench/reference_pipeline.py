"""The reference pipeline for bench/pipeline.py: Meta's segment-anything automatic mask generator
followed by the RAM relation head, one photo at a time, as the original Relate-Anything demo runs.

Runs under the reference interpreter (segment_anything, torchvision and pycocotools installed;
this repository's src/ is put on the path for the RAM head, so transformers is needed too). The
official code is used unmodified: SamAutomaticMaskGenerator(output_mode="coco_rle") segments
the photo, and the mask-decoder tokens of the kept masks (RAM's features) are read with forward
hooks and looked up by grid point and predicted IoU.

Usage: python bench/reference_pipeline.py SPEC.json [--json OUT.json]

SPEC.json:
    {"encoder": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
     "checkpoint": "sam_original.pth", "relation_head": "head.safetensors", "device": "cuda",
     "images": ["a.jpg", ...], "warmup": 1, "top_k": 20,
     "generator": {SamAutomaticMaskGenerator keyword arguments}}

OUT.json: a result record (bench/records.py; default
bench/results/reference_pipeline-<date>-<device>.json) with one figures row: images,
images_per_s, masks_per_image, peak_memory_gib, peak_memory_kind; details: "seconds",
"masks" and "relations" per timed photo, "peak_memory_bytes", the spec.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.build_sam import _build_sam

import records  # bench/, on the path as this script's folder
from peak_rss import PeakRss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from relate_anything.ram import RelationHead, relate  # noqa: E402


class TokenRecorder:
    """The mask decoder's multimask tokens and IoU predictions of every decoded grid point, in
    decoding order (the order of the generator's point grid)."""

    def __init__(self, sam) -> None:
        self.tokens: list[torch.Tensor] = []
        self.iou: list[torch.Tensor] = []
        # hs: [B, tokens, 256] = [iou token, mask tokens 0..3, prompt tokens]; multimask -> 1..3
        sam.mask_decoder.transformer.register_forward_hook(lambda m, a, out: self.tokens.append(out[0][:, 2:5]))
        sam.mask_decoder.register_forward_hook(lambda m, a, out: self.iou.append(out[1]))

    def clear(self) -> None:
        self.tokens.clear()
        self.iou.clear()

    def features(self, records: list[dict], grid: np.ndarray) -> torch.Tensor:
        """[N, 256] token of each record: its grid point's mask with the record's predicted IoU."""
        tokens, iou = torch.cat(self.tokens), torch.cat(self.iou).float().cpu().numpy()
        row = {tuple(point): i for i, point in enumerate(grid.tolist())}
        index = []
        for record in records:
            point = row[tuple(record["point_coords"][0])]
            index.append(point * 3 + int(np.abs(iou[point] - record["predicted_iou"]).argmin()))
        return tokens.flatten(0, 1)[torch.as_tensor(index, dtype=torch.long, device=tokens.device)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="SPEC.json (see the docstring)")
    records.add_json_option(parser)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    device = torch.device(spec["device"])
    encoder = spec["encoder"]
    sam = (
        _build_sam(
            encoder_embed_dim=encoder["embed_dim"],
            encoder_depth=encoder["depth"],
            encoder_num_heads=encoder["num_heads"],
            encoder_global_attn_indexes=encoder["global_attn_indexes"],
            checkpoint=spec["checkpoint"],
        )
        .to(device)
        .eval()
    )
    head = RelationHead.from_checkpoint(spec["relation_head"], device=device)
    recorder = TokenRecorder(sam)
    generator = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **spec["generator"])
    cuda = device.type == "cuda"

    def relate_photo(path: str) -> tuple[int, int]:
        image = np.asarray(Image.open(path).convert("RGB"))
        recorder.clear()
        records = generator.generate(image)
        height, width = image.shape[:2]
        grid = generator.point_grids[0] * np.array([width, height])[None]
        features = recorder.features(records, grid)
        scores = head(features[None].to(next(head.parameters()).dtype))[0] if len(records) else None
        triplets = relate(scores.float(), top_k=spec["top_k"]).tolist() if len(records) > 1 else []
        return len(records), len(triplets)

    seconds, masks, relations = [], [], []
    with torch.inference_mode():
        for path in spec["images"][: spec["warmup"]]:
            relate_photo(path)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRss() as rss:
            for path in spec["images"][spec["warmup"] :]:
                started = time.perf_counter()
                count, triplets = relate_photo(path)
                if cuda:
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - started)
                masks.append(count)
                relations.append(triplets)
    peak = torch.cuda.max_memory_allocated() if cuda else rss.peak
    figures = {
        "images": len(seconds),
        "images_per_s": len(seconds) / sum(seconds) if seconds else None,
        "masks_per_image": sum(masks) / len(masks) if masks else None,
        "peak_memory_gib": peak / 2**30,
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process RSS",
    }
    details = {"seconds": seconds, "masks": masks, "relations": relations, "peak_memory_bytes": peak, "spec": spec}
    records.save("reference_pipeline", [figures], device=device, path=args.json, details=details)


if __name__ == "__main__":
    main()
