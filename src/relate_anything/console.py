"""What every `relate-anything` command shares: consoles, progress, options, and the one table
of exit codes.

Commands are thin shells: parse flags into library objects (`PipelineSpec`, `SegmentSettings`),
call the library, print. The library raises `RelateAnythingError` subclasses and never exits;
`fail` maps an error's type to its exit code with `EXIT_CODES`, the same in every command.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from relate_anything.errors import (
    CheckpointError,
    ImageError,
    RelateAnythingError,
    UsageError,
    WeightsNotFoundError,
)
from relate_anything.settings import SegmentSettings, SettingsError

# soft_wrap: long paths and messages stay on one line instead of breaking at the terminal width.
stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)

# -- exit codes ---------------------------------------------------------------------------------

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_WEIGHTS = 3
EXIT_INPUTS = 4

#: Error type -> exit code, first match wins; any other `RelateAnythingError` exits with 1.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (UsageError, EXIT_USAGE),
    (CheckpointError, EXIT_WEIGHTS),
    (WeightsNotFoundError, EXIT_WEIGHTS),
    (ImageError, EXIT_INPUTS),
)

#: The table as every command's --help ends.
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 internal error; 2 usage (a bad flag, file or setting); 3 weights missing or wrong; "
    "4 some inputs failed (the others are done)."
)


def exit_code(error: BaseException) -> int:
    """The exit code of a command that stops on `error` (see `EXIT_CODES`)."""
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_INTERNAL


def report(error: BaseException, *, prefix: str = "error") -> None:
    """Print `error` as one red-prefixed line on stderr."""
    # Escaped: brackets in a message ("relate-anything[serve]", a file "photo[1].jpg") are text.
    stderr.print(f"[red]{prefix}:[/red] {escape(str(error))}")


def warn(message: str) -> None:
    """Print a yellow warning line on stderr."""
    stderr.print(f"[yellow]warning:[/yellow] {escape(message)}")


def fail(error: BaseException) -> typing.NoReturn:
    """Report `error` and end the command with its exit code."""
    report(error)
    raise typer.Exit(code=exit_code(error))


def handles_errors(command: Callable) -> Callable:
    """Wrap a command so that a `RelateAnythingError` it raises ends it with one message and the
    error's exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RelateAnythingError as error:
            fail(error)

    return wrapper


# -- progress -----------------------------------------------------------------------------------


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


@contextmanager
def progress_callback(description: str, *, enabled: bool = True, rate_unit: str | None = None) -> Iterator[Callable]:
    """A `(done, total)` callback for the library's long jobs, drawn as a progress bar."""
    with progress_bar(enabled=enabled, rate_unit=rate_unit) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# -- options -------------------------------------------------------------------------------------

# Options several commands share, declared once so they read the same.
SamOption = Annotated[
    str | None,
    typer.Option(
        help="SAM weights: hub id, transformers folder, or sam_vit_*.pth (default: $RELATE_ANYTHING_SAM, "
        "else facebook/sam-vit-huge).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
RamOption = Annotated[
    str | None,
    typer.Option(
        help="RAM head weights: ram_epoch12.pth, a .safetensors head, or hf://OWNER/REPO/FILE "
        "(default: $RELATE_ANYTHING_RAM, else the authors' ram_epoch12.pth).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
TopKOption = Annotated[int, typer.Option(min=1, help="Relations to keep per image, best first.")]
DeviceOption = Annotated[
    str, typer.Option(help="Where the models run: cpu, cuda, cuda:1, ... (under torchrun: cuda:LOCAL_RANK).")
]
DtypeOption = Annotated[
    str,
    typer.Option(
        help="SAM's precision: float32, bfloat16 (faster on GPUs and recent CPUs; masks and scores move "
        "slightly) or float16 (GPUs).",
    ),
]
LabelerOption = Annotated[
    str | None,
    typer.Option(
        help="Name segments with this CLIP/SigLIP model: hub id or folder (default: $RELATE_ANYTHING_LABELER, "
        "else openai/clip-vit-base-patch32).",
        show_default=False,
        rich_help_panel="Naming and finding",
    ),
]
VocabOption = Annotated[
    str | None,
    typer.Option(
        help='Names to choose from: "dog,stick,sand", a file with one name a line, or "psg" (PSG\'s 133 '
        "classes, the default). Implies a labeler.",
        show_default=False,
        rich_help_panel="Naming and finding",
    ),
]
LabelThresholdOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="A segment stays unnamed when its best name scores below this (default: the labeler's, 0.2 for CLIP).",
        show_default=False,
        rich_help_panel="Naming and finding",
    ),
]
DetectorOption = Annotated[
    str | None,
    typer.Option(
        help="Find by text with this OWLv2 detector (hub id or folder), whose boxes prompt SAM.",
        show_default=False,
        rich_help_panel="Naming and finding",
    ),
]
SeggptOption = Annotated[
    str | None,
    typer.Option(
        help="SegGPT weights for segment by example: hub id or folder (default: $RELATE_ANYTHING_SEGGPT, else "
        "BAAI/seggpt-vit-large).",
        show_default=False,
        rich_help_panel="Naming and finding",
    ),
]
MultimaskOption = Annotated[
    bool,
    typer.Option(
        "--multimask",
        help="For --point/--box: take the best of SAM's 3 candidate masks instead of its single-mask "
        "output (RAM's demo uses the single mask).",
    ),
]


def segment_settings_options(command: Callable) -> Callable:
    """Give a Typer command one option per `SegmentSettings` field (help, range and default from
    the dataclass); the command receives them as one `settings: SegmentSettings` argument.

    A new field of `SegmentSettings` becomes a flag of every command decorated with this, with
    nothing else to change.
    """
    # Evaluated: the command's module may use `from __future__ import annotations`, and Typer reads
    # the annotations of this new signature as they are.
    signature = inspect.signature(command, eval_str=True)
    if "settings" not in signature.parameters:
        raise TypeError(f"{command.__name__} needs a `settings` parameter")
    hints = typing.get_type_hints(SegmentSettings)
    defaults = SegmentSettings()
    names = [item.name for item in fields(SegmentSettings)]
    options = [
        inspect.Parameter(
            item.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=getattr(defaults, item.name),
            annotation=Annotated[
                hints[item.name],
                typer.Option(
                    f"--{item.name.replace('_', '-')}",
                    help=item.metadata["help"],
                    min=item.metadata["min"],
                    max=item.metadata["max"],
                    rich_help_panel="Segment everything",
                ),
            ],
        )
        for item in fields(SegmentSettings)
    ]
    kept = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for name, p in signature.parameters.items() if name != "settings"
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in names}
        try:
            settings = SegmentSettings(**values)
        except SettingsError as error:
            raise typer.BadParameter(str(error)) from None
        return command(*args, settings=settings, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=kept + options)
    return wrapper


def optional_model(kind, reference: str | None, *, wanted: bool) -> str | None:
    """The weights reference of an optional stage (labeler, detector, SegGPT) when it is wanted:
    the flag's value, else the kind's environment variable or default; None when not wanted."""
    return kind.reference(reference) if wanted else None


def parse_numbers(text: str | None, count: int, option: str) -> tuple[float, ...] | None:
    """`count` comma-separated finite numbers from an option's text ("420,310"), or None."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise typer.BadParameter(f"expected {count} comma-separated numbers, got {text!r}", param_hint=option)
    return values
