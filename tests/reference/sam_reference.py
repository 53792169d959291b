"""Run Meta's official segment-anything on given weights, image and prompts; save outputs.

Runs under the reference interpreter (RELATE_ANYTHING_REFERENCE_PYTHON), which has
`segment_anything` and torchvision; the main environment does not. The official code is used
unmodified: the model comes from its builder and `load_state_dict`, the mask tokens are read
with forward hooks.

Usage: python sam_reference.py SPEC.json OUT.npz

SPEC.json:
    {"encoder": {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": [1]},
     "checkpoint": "sam_original.pth", "image": "dog.jpg",
     "cases": [{"name": "points", "point_coords": [[x, y], ...], "point_labels": [1, 0],
                "box": [x0, y0, x1, y1] or null, "multimask_output": true}, ...],
     "generators": {"<name>": {SamAutomaticMaskGenerator keyword arguments}, ...}}

OUT.npz keys: "input" (the preprocessed [1, 3, 1024, 1024] image), "embedding"; per case
"<name>/logits" [C, H, W], "<name>/low_res_logits" [C, 256, 256], "<name>/iou_predictions" [C],
"<name>/mask_tokens" [4, 256] (all four decoder mask tokens, index 0 = single-mask token);
per generator "<name>/masks" [N, H, W], "<name>/predicted_iou", "<name>/stability_score",
"<name>/point_coords" [N, 2], "<name>/bbox" [N, 4] XYWH (SAM's output order).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.build_sam import _build_sam


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    encoder = spec["encoder"]
    sam = _build_sam(
        encoder_embed_dim=encoder["embed_dim"],
        encoder_depth=encoder["depth"],
        encoder_num_heads=encoder["num_heads"],
        encoder_global_attn_indexes=encoder["global_attn_indexes"],
        checkpoint=spec["checkpoint"],  # torch.load + strict load_state_dict inside the builder
    )
    image = np.asarray(Image.open(spec["image"]).convert("RGB"))
    out: dict[str, np.ndarray] = {}

    captured: dict[str, torch.Tensor] = {}
    sam.image_encoder.register_forward_pre_hook(lambda module, args: captured.__setitem__("input", args[0]))
    sam.mask_decoder.transformer.register_forward_hook(
        lambda module, args, output: captured.__setitem__("hs", output[0])  # hs: [B, tokens, 256]
    )

    predictor = SamPredictor(sam)
    predictor.set_image(image)
    out["input"] = captured["input"].numpy()
    out["embedding"] = predictor.features.numpy()
    for case in spec["cases"]:
        logits, iou, low_res = predictor.predict(
            point_coords=None if case["point_coords"] is None else np.array(case["point_coords"], dtype=np.float64),
            point_labels=None if case["point_labels"] is None else np.array(case["point_labels"]),
            box=None if case["box"] is None else np.array(case["box"], dtype=np.float64),
            multimask_output=case["multimask_output"],
            return_logits=True,
        )
        name = case["name"]
        out[f"{name}/logits"] = logits
        out[f"{name}/iou_predictions"] = iou
        out[f"{name}/low_res_logits"] = low_res
        out[f"{name}/mask_tokens"] = captured["hs"][0, 1:5].numpy()

    for name, options in spec.get("generators", {}).items():
        records = SamAutomaticMaskGenerator(sam, output_mode="binary_mask", **options).generate(image)
        height, width = image.shape[:2]
        masks = [r["segmentation"] for r in records]
        out[f"{name}/masks"] = np.stack(masks) if masks else np.zeros((0, height, width), bool)
        for key in ("predicted_iou", "stability_score"):
            out[f"{name}/{key}"] = np.array([r[key] for r in records], dtype=np.float64)
        out[f"{name}/point_coords"] = np.array([r["point_coords"][0] for r in records], dtype=np.float64).reshape(-1, 2)
        out[f"{name}/bbox"] = np.array([r["bbox"] for r in records], dtype=np.float64).reshape(-1, 4)
    np.savez(out_path, **out)


if __name__ == "__main__":
    with torch.no_grad():
        main(*sys.argv[1:3])
