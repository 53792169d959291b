"""Weights of the naming models (CLIP/SigLIP labeler, OWLv2 detector): where they come from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from relate_anything import weights
from relate_anything.errors import WeightsNotFoundError

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_LABELER",
    "DETECTOR_ENV_VAR",
    "DETECTOR_WEIGHTS",
    "LABELER_ENV_VAR",
    "LABELER_WEIGHTS",
    "resolve_model_folder",
]

LABELER_ENV_VAR = "RELATE_ANYTHING_LABELER"
DETECTOR_ENV_VAR = "RELATE_ANYTHING_DETECTOR"
DEFAULT_LABELER = "openai/clip-vit-base-patch32"
DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"

LABELER_WEIGHTS = weights.WeightsKind(
    name="labeler (CLIP/SigLIP)",
    flag="--labeler",
    env_var=LABELER_ENV_VAR,
    where_to_get=(
        "a transformers CLIP or SigLIP folder (config.json, model.safetensors and the tokenizer files), e.g. "
        "https://huggingface.co/openai/clip-vit-base-patch32, openai/clip-vit-large-patch14 or "
        "google/siglip-base-patch16-224, saved with save_pretrained"
    ),
)
DETECTOR_WEIGHTS = weights.WeightsKind(
    name="detector (OWLv2)",
    flag="--detector",
    env_var=DETECTOR_ENV_VAR,
    where_to_get=(
        "a transformers OWLv2 folder (config.json, model.safetensors and the tokenizer files), e.g. "
        "https://huggingface.co/google/owlv2-base-patch16-ensemble"
    ),
)


def resolve_model_folder(reference: str | Path | None, kind: weights.WeightsKind, default: str) -> Path:
    """A local transformers folder with model and tokenizer files for `reference`.

    `reference` None means the kind's environment variable, else `default`. Local folders are
    used as they are; hub ids go through `weights.resolve` (model and tokenizer files).

    Raises:
        WeightsNotFoundError: not on disk, not cached, and not downloadable.
    """
    text = str(reference) if reference is not None else weights.default_reference(kind, default)
    folder = weights.resolve(text, kind)
    if folder.is_file():
        raise WeightsNotFoundError(
            f"{kind.name} weights {text!r}: expected a transformers folder (config.json + weights), got the file "
            f"{folder}.\n  Needed: {kind.where_to_get}.\n  Point at them with {kind.flag} PATH or {kind.env_var}."
        )
    return folder


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict, or {} when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else {}
