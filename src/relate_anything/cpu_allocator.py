"""Faster CPU inference on Linux: let the process reuse the memory it frees.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB, adjusted as the
process runs) with fresh pages from the kernel, and hands them back when the block is freed. SAM
on a CPU allocates and frees image-sized activations (16-64 MiB each) thousands of times per
photo, and each fresh page is paid again in a page fault, which costs more than the arithmetic of
the elementwise steps. With the mmap and trim thresholds raised, freed blocks stay in the heap
and are reused: on this project's 2-core machine, the ViT-B image encoder ran 1.4x faster,
decoding 256 prompts 1.1-1.25x, the whole pipeline 1.2x (docs/benchmarks.md). The price: the process keeps its
peak memory until it exits, which is what a command that processes photos until it ends wants.

The `relate-anything` commands call `reuse_freed_memory(device)`, which acts on CPU devices only; a program
that uses the Python API can call it too. Setting RELATE_ANYTHING_REUSE_FREED_MEMORY=0 turns it
off; with another allocator (jemalloc, tcmalloc through LD_PRELOAD) or another C library it does
nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["OPT_OUT_ENV_VAR", "reuse_freed_memory"]

OPT_OUT_ENV_VAR = "RELATE_ANYTHING_REUSE_FREED_MEMORY"

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap; the heap's top is returned to the kernel only above 2 GiB.
_MMAP_THRESHOLD = 1 << 30
_TRIM_THRESHOLD = 2**31 - 1

_applied = False


def reuse_freed_memory(device: str | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    `device`: the device the process runs its models on; only a CPU one ("cpu", None) gains, so
    for any other the allocator is left alone. Returns whether the process now reuses freed
    memory: False for a non-CPU device, off Linux, with a C library other than glibc, or when
    $RELATE_ANYTHING_REUSE_FREED_MEMORY is 0. Calling it again changes nothing.
    """
    global _applied
    if _applied:
        return True
    if device is not None and not str(device).startswith("cpu"):
        return False
    if os.environ.get(OPT_OUT_ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting either one ends glibc's dynamic adjustment, so if it is
    # refused, the trim threshold is left alone too (a fixed 128 KiB mmap threshold would be worse).
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) != 1:
        return False
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    _applied = True
    return True
