"""What every `relate-anything` command shares: its consoles and the way it reports user errors.

An error the user can fix is printed as one message (no traceback) and ends the command with
the error's exit code.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from relate_anything.errors import RelateAnythingError

# soft_wrap: long paths and messages stay on one line instead of breaking at the terminal width.
stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


class _RateColumn(ProgressColumn):
    """Items per second over the last half minute ("-" until there is a rate)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:.2f} {self.unit}/s")


def progress_bar(*, enabled: bool = True, rate_unit: str | None = None) -> Progress:
    """A progress bar on stderr: description, bar, done/total, [rate_unit/s,] time left."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate_unit is not None:
        columns.append(_RateColumn(rate_unit))
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=stderr, disable=not enabled)


def quiet_transformers() -> None:
    """Silence transformers' download bars and load warnings: our own progress bar is the one
    that matters, and load problems reach the user as our one message."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def report(error: RelateAnythingError) -> None:
    """Print `error` as one red-prefixed line on stderr."""
    # Escaped: brackets in a message ("relate-anything[serve]", a file "photo[1].jpg") are text.
    stderr.print(f"[red]error:[/red] {escape(str(error))}")


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


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def check_dtype(name: str):
    """The torch dtype that `--dtype name` asks for (float32, bfloat16, float16, or fp32/bf16/fp16)."""
    import torch

    canonical = _DTYPES.get(name.lower())
    if canonical is None:
        raise RelateAnythingError(f"--dtype must be float32, bfloat16 or float16, got {name!r}")
    return getattr(torch, canonical)


# Options that several commands share (`run`, `batch`, `collect`), declared once so they read the same.
SamOption = Annotated[
    str | None,
    typer.Option(
        help="SAM weights: hub id, transformers folder, or original sam_vit_*.pth file "
        "(default: $RELATE_ANYTHING_SAM, else facebook/sam-vit-huge).",
        show_default=False,
    ),
]
RamOption = Annotated[
    str | None,
    typer.Option(
        help="RAM head weights: ram_epoch12.pth, a .safetensors head, or hf://OWNER/REPO/FILE "
        "(default: $RELATE_ANYTHING_RAM, else the authors' ram_epoch12.pth).",
        show_default=False,
    ),
]
TopKOption = Annotated[int, typer.Option(min=1, help="Relations to keep per image, best first.")]
DeviceOption = Annotated[
    str,
    typer.Option(help="Where to run the models: cpu, cuda, cuda:1, ... (under torchrun, cuda means cuda:LOCAL_RANK)."),
]
PointsPerSideOption = Annotated[
    int, typer.Option(min=1, help="Segment everything with an N x N grid of point prompts.")
]
PredIouThreshOption = Annotated[float, typer.Option(help="Keep masks whose predicted IoU is above this.")]
StabilityScoreThreshOption = Annotated[float, typer.Option(help="Keep masks whose stability score is at least this.")]
BoxNmsThreshOption = Annotated[
    float, typer.Option(help="Drop a mask whose box overlaps a better mask's box by more than this IoU.")
]
DtypeOption = Annotated[
    str,
    typer.Option(
        help="SAM's precision: float32, bfloat16 (faster on GPUs and on CPUs with AVX512-BF16 or AMX; "
        "masks and scores move slightly, see docs/benchmarks.md) or float16 (GPUs).",
    ),
]
