"""Load SAM, SAM-HQ or SAM 2's image model from local weights, chosen by the config's ``model_type``.

>>> model = load_segmentation_model(Path("sam-hq-vit-base"), device="cuda")   # a SamHQModel
>>> segmenter = Segmenter(model)

Original segment-anything checkpoint files stay SAM (`load_sam`); a SAM 2 video folder gives its
image model (the video model's image parts, loaded strictly).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Sam2Config, Sam2Model, SamHQModel, SamModel

from relate_anything.errors import CheckpointError
from relate_anything.sam.checkpoint import load_sam, match_original_layer_norm_eps
from relate_anything.state_dicts import load_pretrained_folder

__all__ = ["MODEL_TYPES", "load_segmentation_model", "model_type"]

#: The config ``model_type``s a segmenter loads.
MODEL_TYPES = ("sam", "sam_hq", "sam2", "sam2_video")


def load_segmentation_model(
    path: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SamModel | SamHQModel | Sam2Model:
    """The model at a local `path`, in eval mode, on `device` in `dtype`.

    Args:
        path: an original segment-anything checkpoint file (``.pth`` or ``.safetensors``, read
            weights-only), or a ``save_pretrained`` folder of a ``sam``, ``sam_hq``, ``sam2`` or
            ``sam2_video`` model (of a SAM 2 video model only the image parts are loaded). Hub
            references are resolved to such paths by `relate_anything.weights.resolve`.

    Returns:
        `SamModel` for SAM, `SamHQModel` for SAM-HQ (both with the two-way transformer's
        LayerNorms at segment-anything's eps, as `load_sam`), `Sam2Model` for SAM 2.

    Raises:
        CheckpointError: not one of these models, or weights that do not fit their config.
    """
    path = Path(path)
    if path.is_file():
        return load_sam(path, device=device, dtype=dtype)
    kind = model_type(path)
    if kind == "sam":
        return load_sam(path, device=device, dtype=dtype)
    if kind == "sam_hq":
        model = load_pretrained_folder(path, {"sam_hq": SamHQModel}, name="SAM-HQ")
        match_original_layer_norm_eps(model)  # SAM-HQ's decoder is segment-anything's
        return model.to(device=device, dtype=dtype).eval()
    if kind in ("sam2", "sam2_video"):
        config = None
        if kind == "sam2_video":  # the image model is a subset of the video model
            video = json.loads((path / "config.json").read_text())
            parts = ("vision_config", "prompt_encoder_config", "mask_decoder_config")
            config = Sam2Config(**{part: video[part] for part in parts})
        model = load_pretrained_folder(path, {kind: Sam2Model}, name="SAM 2", config=config)
        return model.to(device=device, dtype=dtype).eval()
    raise CheckpointError(
        f"{path}: config.json describes a {kind!r} model; a segmenter is one of {', '.join(MODEL_TYPES)} "
        "(SAM, SAM-HQ or SAM 2)"
    )


def model_type(folder: Path) -> str | None:
    """The ``model_type`` of a transformers folder's config.json.

    Raises:
        CheckpointError: no readable config.json.
    """
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"{folder}: not a transformers model folder (cannot read config.json: {error})"
        ) from error
