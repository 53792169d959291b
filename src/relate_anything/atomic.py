"""Files that readers see whole or not at all.

A long job may be killed at any moment (SIGKILL, a lost node). Writing to a temporary name in the
same folder, fsync'ing it and moving it into place with `os.replace` (atomic on POSIX within one
file system) means a reader finds either the old file, or nothing, or the complete new one —
never a truncated one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, fsync it, then move it to `path`.

    Returns `path`. If `write` raises, the temporary file is left behind (named
    `<path>.tmp`); the next writer of `path` overwrites it, and readers never look at it.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TEMPORARY_SUFFIX)
    write(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """`write_atomically` for a text file (UTF-8)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
