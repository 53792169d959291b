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
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text
from typer.core import TyperCommand

from relate_anything.errors import (
    CheckpointError,
    InputFileError,
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
    (InputFileError, EXIT_INPUTS),
)

#: The table as every command's --help ends.
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 internal error; 2 usage (a bad flag, file or setting: nothing ran); "
    "3 weights missing or wrong; 4 some inputs failed (reported; the others are done)."
)


def epilog(*examples: str) -> str:
    """The end of a command's --help: its examples, one a line as written, then the exit codes."""
    if not examples:
        return EXIT_CODES_HELP
    # \b: click keeps the next paragraph's lines as they are instead of rewrapping them.
    return "\b\nExamples:\n" + "\n".join(f"  {example}" for example in examples) + "\n\n" + EXIT_CODES_HELP


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


def say(message: str) -> None:
    """Print one line of what a command did on stderr, as it is (paths may hold brackets)."""
    stderr.print(message, markup=False, highlight=False)


def print_loaded(model: Any) -> None:
    """Print a `pipeline_spec.LoadedModel` as one line: "loaded SAM ViT-H (facebook/sam-vit-huge) on cuda in 4.1 s"."""
    say(str(model))


def build_pipeline(spec: Any, device: str, **options: Any) -> Any:
    """`spec.build(device, **options)` as the commands run it: a line per loaded model, then the
    pipeline's warnings (such as a head trained on another segmenter's tokens)."""
    pipeline = spec.build(device, on_loaded=print_loaded, **options)
    for warning in pipeline.warnings:
        warn(warning)
    return pipeline


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


# -- help ----------------------------------------------------------------------------------------

# Metavars of option types that name none themselves: a word, as in most command-line tools.
_TYPE_METAVARS = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


class HelpCommand(TyperCommand):
    """A command whose --help reads well at 80 columns.

    Plain text (the apps are built with `rich_markup_mode=None`) instead of Rich's tables, which
    cut long option names ("--stability-score-thr…") and words at narrow widths: here option
    names stay whole and help text wraps. Options are grouped under the headings of their
    `rich_help_panel` ("Models", "Segment everything", ...); values are named by their metavar
    or a word (N, NUMBER, TEXT, PATH) rather than Python types; the usage line reads
    `IMAGE...`, not `{images}...`.
    """

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(_argument_usage(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                extra = "  [required]" if param.required else ""
                sections["Arguments"].append((_argument_usage(param), (getattr(param, "help", "") or "") + extra))
                continue
            if param.metavar is None and not getattr(param, "is_flag", False):
                param.metavar = _value_metavar(param)
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        for heading, records in sections.items():
            if records:
                with formatter.section(heading):
                    formatter.write_dl(records, col_max=34)


def _argument_usage(param: Any) -> str:
    name = param.metavar or (param.name or "").upper()
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


def _value_metavar(param: Any) -> str:
    """A word for an option's value from its annotation (typer >= 0.2x) or its click type."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is None:
        return str(getattr(param.type, "name", "value")).upper()
    repeated = typing.get_origin(annotation) is list
    if repeated:
        annotation = typing.get_args(annotation)[0]
    word = _TYPE_METAVARS.get(annotation) or getattr(annotation, "__name__", "value").upper()
    return word


# -- options -------------------------------------------------------------------------------------

# Options several commands share, declared once so they read the same.
SamOption = Annotated[
    str | None,
    typer.Option(
        metavar="WEIGHTS",
        help="SAM weights: hub id, transformers folder, or sam_vit_*.pth (default: $RELATE_ANYTHING_SAM, "
        "else facebook/sam-vit-huge).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
RamOption = Annotated[
    str | None,
    typer.Option(
        metavar="WEIGHTS",
        help="RAM head weights: ram_epoch12.pth, a .safetensors head, or hf://OWNER/REPO/FILE "
        "(default: $RELATE_ANYTHING_RAM, else the authors' ram_epoch12.pth).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
TopKOption = Annotated[int, typer.Option(min=1, help="Relations to keep per image, best first.")]
DeviceOption = Annotated[
    str,
    typer.Option(
        metavar="DEVICE", help="Where the models run: cpu, cuda, cuda:1, mps (under torchrun, cuda is cuda:LOCAL_RANK)."
    ),
]
DtypeOption = Annotated[
    str,
    typer.Option(
        metavar="DTYPE",
        help="SAM's precision: float32, bfloat16 (faster on GPUs and recent CPUs; masks and scores move "
        "slightly) or float16 (GPUs).",
    ),
]
LabelerOption = Annotated[
    str | None,
    typer.Option(
        metavar="WEIGHTS",
        help="Name segments with this CLIP/SigLIP model: hub id or folder (default: $RELATE_ANYTHING_LABELER, "
        "else openai/clip-vit-base-patch32).",
        show_default=False,
        rich_help_panel="Naming and finding",
    ),
]
VocabOption = Annotated[
    str | None,
    typer.Option(
        metavar="NAMES",
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
        metavar="WEIGHTS",
        help="Find by text with this OWLv2 detector (hub id or folder), whose boxes prompt SAM.",
        show_default=False,
        rich_help_panel="Naming and finding",
    ),
]
SeggptOption = Annotated[
    str | None,
    typer.Option(
        metavar="WEIGHTS",
        help="SegGPT weights for segment by example: hub id or folder (default: $RELATE_ANYTHING_SEGGPT, else "
        "BAAI/seggpt-vit-large).",
        show_default=False,
        rich_help_panel="Naming and finding",
    ),
]
Sam2Option = Annotated[
    str | None,
    typer.Option(
        metavar="WEIGHTS",
        help="SAM 2 video weights for the sam2 tracker: hub id or folder (default: $RELATE_ANYTHING_SAM2, else "
        "facebook/sam2.1-hiera-tiny).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
MaxUploadOption = Annotated[
    float,
    typer.Option(
        "--max-upload-mb",
        min=0.001,
        metavar="MIB",
        help="Largest image file accepted, in MiB (2^20 bytes); larger uploads are refused (the API: HTTP 413).",
    ),
]
#: The default of --max-upload-mb, the same for the UI and the API.
MAX_UPLOAD_MB = 20.0
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
