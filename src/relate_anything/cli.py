"""The `relate-anything` command: a thin shell over `RelateAnything`.

Errors the user can fix (missing weights, unreadable images, wrong checkpoints) are printed as
one message with the exit code of `console.EXIT_CODES`, never as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from relate_anything.batch.cli import batch_command
from relate_anything.console import (
    EXIT_CODES_HELP,
    EXIT_INPUTS,
    DetectorOption,
    DeviceOption,
    DtypeOption,
    LabelerOption,
    LabelThresholdOption,
    MultimaskOption,
    RamOption,
    SamOption,
    SeggptOption,
    TopKOption,
    VocabOption,
    handles_errors,
    optional_model,
    parse_numbers,
    progress_bar,
    report,
    segment_settings_options,
    warn,
)
from relate_anything.datasets.cli import app as data_app
from relate_anything.errors import RelateAnythingError
from relate_anything.evaluation.cli import evaluate_command
from relate_anything.evaluation.video_cli import evaluate_video_command
from relate_anything.serving.cli import serve_command
from relate_anything.serving.ui_cli import ui_command
from relate_anything.settings import SegmentSettings
from relate_anything.training.cli import collect_command, distill_command, train_command
from relate_anything.video.cli import VIDEO_EXAMPLES, video_command

app = typer.Typer(
    help="Panoptic scene graphs from any image: segment everything with SAM, relate everything with RAM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass(frozen=True)
class _Request:
    """What `run` asks of every image."""

    point: tuple[float, ...] | None
    box: tuple[float, ...] | None
    multimask: bool
    find: str | None
    examples: list | None
    query: dict[str, str]
    top_k: int
    features: bool


@app.command(epilog=EXIT_CODES_HELP)
@segment_settings_options
@handles_errors
def run(
    images: Annotated[
        list[Path],
        # Checked before any model loads: a typo should not cost a multi-GB download first.
        typer.Argument(help="Photos to process (JPEG, PNG, ...).", show_default=False, exists=True, dir_okay=False),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for <stem>.json (the scene graph) and <stem>.png (the picture).")
    ] = Path("."),
    point: Annotated[
        str | None,
        typer.Option(help="X,Y in pixels: relate the thing at this point with everything else.", show_default=False),
    ] = None,
    box: Annotated[
        str | None,
        typer.Option(
            help="X0,Y0,X1,Y1 in pixels: relate the thing in this box with everything else.", show_default=False
        ),
    ] = None,
    multimask: MultimaskOption = False,
    top_k: TopKOption = 20,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    sam: SamOption = None,
    ram: RamOption = None,
    features: Annotated[
        bool, typer.Option("--features", help="Store each segment's 256-d SAM feature in the JSON.")
    ] = False,
    labeler: LabelerOption = None,
    vocab: VocabOption = None,
    label_threshold: LabelThresholdOption = None,
    find: Annotated[
        str | None,
        typer.Option(
            help='Find a thing by a phrase ("the dog") and relate it with everything else.',
            show_default=False,
            rich_help_panel="Naming and finding",
        ),
    ] = None,
    detector: DetectorOption = None,
    example: Annotated[
        list[Path] | None,
        typer.Option(
            help="Example photo for segment-by-example (repeatable; pairs with --example-mask).",
            show_default=False,
            exists=True,
            dir_okay=False,
            rich_help_panel="Naming and finding",
        ),
    ] = None,
    example_mask: Annotated[
        list[Path] | None,
        typer.Option(
            help="Mask PNG of the thing in the example photo (non-zero = the thing).",
            show_default=False,
            exists=True,
            dir_okay=False,
            rich_help_panel="Naming and finding",
        ),
    ] = None,
    seggpt: SeggptOption = None,
    subject: Annotated[
        str | None,
        typer.Option(
            help="Keep relations whose subject's name matches this text.",
            show_default=False,
            rich_help_panel="Filters",
        ),
    ] = None,
    predicate: Annotated[
        str | None,
        typer.Option(
            help='Keep relations whose predicate matches this text ("on" matches "standing on").',
            show_default=False,
            rich_help_panel="Filters",
        ),
    ] = None,
    object_: Annotated[
        str | None,
        typer.Option(
            "--object",
            help="Keep relations whose object's name matches this text.",
            show_default=False,
            rich_help_panel="Filters",
        ),
    ] = None,
    settings: SegmentSettings = SegmentSettings(),
) -> None:
    """Build the scene graph of each IMAGE: writes OUT/<stem>.json and OUT/<stem>.png."""
    from relate_anything.devices import check_device
    from relate_anything.pipeline import PipelineSpec
    from relate_anything.weights import DETECTOR_WEIGHTS, LABELER_WEIGHTS, SEGGPT_WEIGHTS

    if len(example or []) != len(example_mask or []):
        raise typer.BadParameter("give one --example-mask for each --example", param_hint="--example-mask")
    query = {
        key: value for key, value in (("subject", subject), ("predicate", predicate), ("object", object_)) if value
    }
    request = _Request(
        point=parse_numbers(point, 2, "--point"),
        box=parse_numbers(box, 4, "--box"),
        multimask=multimask,
        find=find,
        examples=_load_examples(example or [], example_mask or []),
        query=query,
        top_k=top_k,
        features=features,
    )
    naming = labeler is not None or vocab is not None or find is not None or subject is not None or object_ is not None
    spec = PipelineSpec(
        sam=sam,
        ram=ram,
        dtype=dtype,
        settings=settings,
        top_k=top_k,
        labeler=optional_model(LABELER_WEIGHTS, labeler, wanted=naming),
        label_threshold=label_threshold,
        vocabulary=vocab,
        detector=optional_model(DETECTOR_WEIGHTS, detector, wanted=detector is not None),
        seggpt=optional_model(SEGGPT_WEIGHTS, seggpt, wanted=bool(example)),
    )
    spec.load_vocabulary()  # a bad vocabulary fails before any model loads
    pipeline = spec.build(check_device(device))
    for warning in pipeline.warnings:
        warn(warning)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    with progress_bar(enabled=len(images) > 1) as progress:
        task = progress.add_task("relating", total=len(images))
        for path in images:
            progress.update(task, description=path.name)
            try:
                _process_one(pipeline, path, out, request)
            except RelateAnythingError as error:
                failures += 1
                report(error)
            progress.advance(task)
    if failures:
        raise typer.Exit(code=EXIT_INPUTS)


def _load_examples(images: list[Path], masks: list[Path]) -> list | None:
    if not images:
        return None
    from relate_anything.seggpt import load_example

    return [load_example(image, mask) for image, mask in zip(images, masks)]


def _process_one(pipeline, path: Path, out: Path, request: _Request) -> None:
    from relate_anything.image_io import load_image
    from relate_anything.visualize import draw_scene_graph

    pixels = load_image(path)
    # A query filters the ranked relations, so rank many more than it will keep.
    top_k = max(1000, 50 * request.top_k) if request.query else request.top_k
    graph = pipeline(
        pixels,
        point=request.point,
        box=request.box,
        multimask=request.multimask,
        find=request.find,
        examples=request.examples,
        top_k=top_k,
        file=path.name,
    )
    if request.query:
        from relate_anything.naming import query

        graph = query(graph, **request.query)
        graph = graph.with_relations(graph.relations[: request.top_k])
    graph.save(out / f"{path.stem}.json", features=request.features)
    draw_scene_graph(pixels, graph).save(out / f"{path.stem}.png")


@app.callback()
def _root() -> None:
    """Panoptic scene graphs from any image."""


# The other stages' commands: large jobs, data preparation, evaluation, training and serving.
app.command("batch", epilog=EXIT_CODES_HELP)(batch_command)
app.add_typer(data_app, name="data")
app.command("eval", epilog=EXIT_CODES_HELP)(evaluate_command)
app.command("eval-video", epilog=EXIT_CODES_HELP)(evaluate_video_command)
app.command("collect", epilog=EXIT_CODES_HELP)(collect_command)
app.command("train", epilog=EXIT_CODES_HELP)(train_command)
app.command("distill", epilog=EXIT_CODES_HELP)(distill_command)
app.command("ui", epilog=EXIT_CODES_HELP)(ui_command)
app.command("serve", epilog=EXIT_CODES_HELP)(serve_command)
app.command("video", epilog=f"{VIDEO_EXAMPLES}\n\n{EXIT_CODES_HELP}")(video_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
