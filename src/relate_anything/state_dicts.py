"""Comparing a checkpoint's tensors with what a model expects, for errors that name the keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

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
