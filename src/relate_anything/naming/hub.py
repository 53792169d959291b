"""Weights of the naming models (CLIP/SigLIP labeler, OWLv2 detector): where they come from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from relate_anything import weights
from relate_anything.errors import WeightsNotFoundError

__all__ = ["resolve_model_folder"]


def resolve_model_folder(reference: str | Path | None, kind: weights.WeightsKind) -> Path:
    """A local transformers folder with model and tokenizer files for `reference`.

    `reference` None means the kind's environment variable, else its default. Local folders are
    used as they are; hub ids go through `weights.resolve` (model and tokenizer files).

    Raises:
        WeightsNotFoundError: not on disk, not cached, and not downloadable.
    """
    text = kind.reference(reference)
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
