"""Devices and precisions by name, checked before any model loads."""

from __future__ import annotations

import os

from relate_anything.errors import UsageError

__all__ = ["DTYPES", "check_device", "dtype_name", "parse_dtype"]

#: Accepted precision names and the torch dtype each means.
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


_EXPECTED_DEVICES = "expected cpu, cuda, cuda:N (an NVIDIA GPU: cuda, or cuda:1 for the second) or mps (Apple)"


def check_device(device: str) -> str:
    """`device` ("cpu", "cuda", "cuda:1", "mps") if it exists here; under torchrun, plain "cuda"
    becomes this process's GPU (cuda:$LOCAL_RANK).

    Raises:
        UsageError: an unknown device name, or one this machine does not have.
    """
    name = str(device).strip().lower()
    if name == "cpu":
        return name  # every machine has one; torch need not load yet (the commands' errors come sooner)
    import torch

    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"device {device!r}: {_EXPECTED_DEVICES}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r}: CUDA is not available on this machine; use cpu")
        if parsed.index is None and "LOCAL_RANK" in os.environ:
            return f"cuda:{int(os.environ['LOCAL_RANK'])}"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPUs")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"device {device!r}: MPS is not available on this machine; use cpu")
    elif parsed.type != "cpu":
        raise UsageError(f"device {device!r}: {_EXPECTED_DEVICES}")
    return name


def dtype_name(name: str) -> str:
    """The canonical name ("float32", "bfloat16", "float16") of a precision name, also
    fp32/bf16/fp16; raises `UsageError` for any other."""
    canonical = DTYPES.get(str(name).strip().lower())
    if canonical is None:
        raise UsageError(f"dtype must be float32, bfloat16 or float16 (or fp32, bf16, fp16), got {name!r}")
    return canonical


def parse_dtype(name: str):
    """The torch dtype of a precision name (see `dtype_name`)."""
    import torch

    return getattr(torch, dtype_name(name))
