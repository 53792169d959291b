"""Loading weights strictly: errors that name the file and the keys, never random leftovers."""

from __future__ import annotations

import json
import pickle
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


def read_torch_file(path: Path, *, what: str) -> Any:
    """What a `torch.save`d file holds, read onto the CPU with weights-only unpickling.

    Tensors and plain containers are read; a file whose pickle would import or call anything
    (a class, `os.system`) is refused before it runs. PyTorch's own message for such a file
    advises `weights_only=False`, which is exactly what must never be done with a file of unknown
    origin, so the error here names the file and what is wrong with it, never that advice.

    Args:
        path: the file.
        what: what the file should be, for messages ("SAM checkpoint", "RAM head checkpoint").

    Raises:
        CheckpointError: not a PyTorch file, damaged, or holding Python objects other than tensors.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        details = _unpickler_details(str(error))
        if any("GLOBAL" in line for line in details):
            culprit = next(line for line in details if "GLOBAL" in line)
            raise CheckpointError(
                f"{path}: refused rather than unpickled: it holds Python objects other than tensors, and loading "
                f"it could run code ({culprit.rstrip('.')}); a {what} is a plain dict of tensors"
            ) from None
        reason = "; ".join(details) or type(error).__name__
        raise CheckpointError(f"{path}: not a readable {what} (not a PyTorch file, or damaged: {reason})") from None
    except Exception as error:  # torch raises EOFError, RuntimeError, IndexError, ... on other files
        reason = "; ".join(_unpickler_details(str(error))) or "empty or truncated"
        raise CheckpointError(
            f"{path}: not a readable {what} (not a PyTorch file, or damaged: {type(error).__name__}: {reason})"
        ) from None


def _unpickler_details(message: str) -> list[str]:
    """The lines of a torch.load error that describe the file, without PyTorch's advice about
    `weights_only` (to turn it off) and its pointers to the documentation and issue tracker."""
    advice = ("weights_only", "Check the documentation", "Please file an issue", "If you are seeing this error")
    lines = []
    for line in message.splitlines():
        line = line.replace("WeightsUnpickler error:", "").strip()
        # torch's zip reader appends its advice to the reason in the same line.
        line = line.split(". This is an internal miniz error")[0]
        if line and not any(marker in line for marker in advice):
            lines.append(line)
    return lines


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
