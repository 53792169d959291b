"""Loading weights strictly: errors that name the file and the keys, never random leftovers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from relate_anything.errors import CheckpointError

MAX_LISTED_KEYS = 5


def listed(keys: Sequence[str]) -> str:
    """The first few keys, and how many more: `a, b, c (+12 more)`."""
    more = len(keys) - MAX_LISTED_KEYS
    return ", ".join(keys[:MAX_LISTED_KEYS]) + (f" (+{more} more)" if more > 0 else "")


def mismatches(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps `found` from loading strictly where `expected` is the model's state dict.

    Returns:
        Up to three phrases — "missing keys: ...", "unexpected keys: ...", "wrong shapes: KEY [shape]
        (expected [shape]), ..." — or an empty list when every key and shape fits.
    """
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    wrong_shapes = [
        f"{key} {list(found[key].shape)} (expected {list(tensor.shape)})"
        for key, tensor in expected.items()
        if key in found and found[key].shape != tensor.shape
    ]
    return [
        f"{label}: {listed(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shapes))
        if keys
    ]


def load_pretrained_folder(path: Path, classes: Mapping[str, Any], *, name: str, config: Any = None) -> Any:
    """A transformers `save_pretrained` folder, loaded strictly.

    transformers quietly builds a randomly initialised model from a folder of another model type
    or with missing tensors; here either is a `CheckpointError` naming the folder.

    Args:
        path: the folder (config.json + safetensors weights).
        classes: model class to use for each accepted config `model_type`.
        name: what the model is, for messages ("SAM", "SegGPT", ...).
        config: a config to build the model from instead of the folder's config.json (whose
            ``model_type`` still selects the class): to load part of a larger model, e.g. SAM 2's
            image model from a SAM 2 video folder.
    """
    if not path.is_dir():
        raise CheckpointError(f"{path}: {name} weights must be a transformers folder (config.json + model.safetensors)")
    config_path = path / "config.json"
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"{path}: not a transformers {name} folder (cannot read {config_path.name}: {error})"
        ) from error
    if model_type not in classes:
        raise CheckpointError(
            f"{path}: config.json describes a {model_type!r} model, not {name} ({', '.join(classes)})"
        )
    try:
        extra = {} if config is None else {"config": config}
        model, info = classes[model_type].from_pretrained(str(path), output_loading_info=True, **extra)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: not a transformers {name} folder ({error})") from error
    except RuntimeError as error:  # transformers' report of tensors whose shapes differ from config.json
        raise CheckpointError(
            f"{path}: the weights' shapes do not fit config.json (a config from another {name} variant?)"
        ) from error
    problems = [
        f"{key.replace('_', ' ')}: {listed(sorted(map(str, info[key])))}"
        for key in ("missing_keys", "mismatched_keys")
        if info.get(key)
    ]
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the {name} config ({'; '.join(problems)})")
    return model
