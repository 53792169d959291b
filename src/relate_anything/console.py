"""What every `relate-anything` command shares: its consoles and the way it reports user errors.

An error the user can fix is printed as one message (no traceback) and ends the command with
the error's exit code.
"""

from __future__ import annotations

import typer
from rich.console import Console

from relate_anything.errors import RelateAnythingError

# soft_wrap: long paths and messages stay on one line instead of breaking at the terminal width.
stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


def report(error: RelateAnythingError) -> None:
    """Print `error` as one red-prefixed line on stderr."""
    stderr.print(f"[red]error:[/red] {error}")


def fail(error: RelateAnythingError) -> None:
    """Report `error` and end the command with its exit code."""
    report(error)
    raise typer.Exit(code=error.exit_code)


def check_device(device: str) -> str:
    """`device` if it exists here; under torchrun, plain "cuda" becomes this process's GPU."""
    import os

    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RelateAnythingError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if device == "cuda" and "LOCAL_RANK" in os.environ:
            return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device
