"""The `relate-anything` command: a thin shell over `RelateAnything`.

Errors the user can fix (missing weights, unreadable images, wrong checkpoints) are printed as
one message with the exit code of `console.EXIT_CODES`, never as a traceback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from relate_anything.batch.cli import batch_command
from relate_anything.console import (
    EXIT_INPUTS,
    DetectorOption,
    DeviceOption,
    DtypeOption,
    HelpCommand,
    LabelerOption,
    LabelThresholdOption,
    MultimaskOption,
    RamOption,
    SamOption,
    SeggptOption,
    TopKOption,
    VocabOption,
    build_pipeline,
    epilog,
    handles_errors,
    optional_model,
    parse_numbers,
    progress_bar,
    report,
    say,
    segment_settings_options,
    warn,
)
from relate_anything.datasets.cli import app as data_app
from relate_anything.errors import RelateAnythingError, UsageError
from relate_anything.evaluation.cli import evaluate_command
from relate_anything.evaluation.video_cli import evaluate_video_command
from relate_anything.serving.cli import serve_command
from relate_anything.serving.ui_cli import ui_command
from relate_anything.settings import SegmentSettings
from relate_anything.training.cli import collect_command, distill_command, train_command
from relate_anything.video.cli import video_command

if TYPE_CHECKING:
    from relate_anything.scene_graph import SceneGraph

app = typer.Typer(
    help="Panoptic scene graphs from any image: segment everything with SAM, relate everything with RAM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help (console.HelpCommand): readable at 80 columns, where Rich's tables cut names.
    rich_markup_mode=None,
)

#: Each command's --help examples, as README shows them.
EXAMPLES = {
    "run": (
        "relate-anything run --sample --out out/       # the packaged sample photo",
        "relate-anything run photo.jpg --out out/ --device cuda",
        "relate-anything run photo.jpg --point 420,310  # that thing is the subject",
        "relate-anything run photo.jpg --vocab psg --subject dog --predicate holding",
        "relate-anything run photo.jpg --sam sam_vit_h_4b8939.pth --ram ram.pth",
    ),
    "batch": (
        "relate-anything batch photos/ --out graphs/ --device cuda --batch-size 8",
        "relate-anything batch list.csv --out graphs/ --devices cuda:0,cuda:1",
        "relate-anything batch photos/ --out graphs/ --retry-errors",
    ),
    "eval": (
        "relate-anything eval predictions/ /data/psg --json scores.json",
        "relate-anything eval predictions/ /data/psg --predcls predcls/ --split all",
    ),
    "collect": (
        "relate-anything collect /data/psg --out feats/ --device cuda",
        "relate-anything collect /data/psg --split test --out feats-test/",
    ),
    "train": (
        "relate-anything train feats/ --val-cache feats-test/ --device cuda",
        "relate-anything train feats/ --out runs/ram --resume  # after a stop",
    ),
    "ui": (
        "relate-anything ui --device cuda              # http://127.0.0.1:7860",
        "relate-anything ui --vocab psg --max-upload-mb 10  # names every segment",
    ),
    "serve": (
        "relate-anything serve --port 8000 --device cuda  # OpenAPI docs at /docs",
        "curl -F image=@photo.jpg -F top_k=10 http://localhost:8000/v1/scene-graph",
        "curl -F video=@clip.mp4 http://localhost:8000/v1/video-scene-graph  # a job",
    ),
    "video": (
        "relate-anything video clip.mp4 --out graphs/  # JSON, MP4, timeline",
        "relate-anything video clip.mp4 --point 320,200 --frame 10",
        "relate-anything video frames/ --fps 2 --tracker sam2 --device cuda",
        'relate-anything video clip.mp4 --vocab psg --find "the dog"',
    ),
    "eval-video": (
        "relate-anything eval-video predictions/ /data/pvsg --json scores.json",
        'relate-anything eval-video preds/ synth/ --map-predicate "beside=next to"',
    ),
    "distill": (
        "relate-anything distill photos/ --student-sam facebook/sam-vit-base",
        "relate-anything run photo.jpg --sam facebook/sam-vit-base \\",
        "    --ram runs/distill/head.safetensors",
    ),
}


#: Each command's line in `relate-anything --help` (whole, where the docstrings would be cut).
SUMMARIES = {
    "run": "Scene graphs of photos: a JSON and a picture each.",
    "batch": "Scene graphs of many images into shards; resumable.",
    "eval": "Score scene graphs against PSG ground truth.",
    "collect": "Cache SAM features matched to PSG ground truth.",
    "train": "Train the RAM relation head on cached features.",
    "ui": "The web page: upload, click, see the scene graph.",
    "serve": "The REST API: POST /v1/scene-graph.",
    "video": "Tracks and relations over time of clips.",
    "eval-video": "Score video scene graphs against PVSG ground truth.",
    "distill": "Teach a relation head for another segmenter.",
}


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


@app.command(cls=HelpCommand, short_help=SUMMARIES["run"], epilog=epilog(*EXAMPLES["run"]))
@segment_settings_options
@handles_errors
def run(
    images: Annotated[
        list[Path] | None,
        # Checked before any model loads: a typo should not cost a multi-GB download first.
        typer.Argument(
            metavar="IMAGE",
            help="Photos to process (JPEG, PNG, ...).",
            show_default=False,
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    sample: Annotated[
        bool,
        typer.Option(
            "--sample",
            help="Relate the sample photo that comes with relate-anything (dog.jpg), for a first try.",
        ),
    ] = False,
    out: Annotated[
        Path,
        typer.Option(metavar="DIR", help="Folder for <stem>.json (the scene graph) and <stem>.png (the picture)."),
    ] = Path("."),
    point: Annotated[
        str | None,
        typer.Option(
            metavar="X,Y", help="A point in pixels: relate the thing there with everything else.", show_default=False
        ),
    ] = None,
    box: Annotated[
        str | None,
        typer.Option(
            metavar="X0,Y0,X1,Y1",
            help="A box in pixels: relate the thing in it with everything else.",
            show_default=False,
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
            metavar="PHRASE",
            help='Find a thing by a phrase ("the dog") and relate it with everything else.',
            show_default=False,
            rich_help_panel="Naming and finding",
        ),
    ] = None,
    detector: DetectorOption = None,
    example: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="IMAGE",
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
            metavar="MASK",
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
            metavar="TEXT",
            help="Keep relations whose subject's name matches this text.",
            show_default=False,
            rich_help_panel="Filters",
        ),
    ] = None,
    predicate: Annotated[
        str | None,
        typer.Option(
            metavar="TEXT",
            help='Keep relations whose predicate matches this text ("on" matches "standing on").',
            show_default=False,
            rich_help_panel="Filters",
        ),
    ] = None,
    object_: Annotated[
        str | None,
        typer.Option(
            "--object",
            metavar="TEXT",
            help="Keep relations whose object's name matches this text.",
            show_default=False,
            rich_help_panel="Filters",
        ),
    ] = None,
    settings: SegmentSettings = SegmentSettings(),
) -> None:
    """Build the scene graph of each IMAGE: writes OUT/<stem>.json and OUT/<stem>.png.

    Models load once: SAM (default facebook/sam-vit-huge, 2.5 GB) and the RAM head are downloaded
    on the first run and cached; --sam and --ram take local files instead.
    """
    from relate_anything.devices import check_device
    from relate_anything.samples import sample_photo
    from relate_anything.weights import DETECTOR_WEIGHTS, LABELER_WEIGHTS, SEGGPT_WEIGHTS

    # Every flag is checked here, before any weights are looked for or loaded (or transformers imported).
    images = list(images or []) + ([sample_photo()] if sample else [])
    if not images:
        raise UsageError("give the photos to relate (IMAGE...), or --sample for the sample photo")
    device = check_device(device)
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
    from relate_anything.pipeline_spec import PipelineSpec

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
    # Weights: every missing one named at once, downloads with a bar per file, then a line per model.
    pipeline = build_pipeline(spec, device)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    with progress_bar(enabled=len(images) > 1) as progress:
        task = progress.add_task("relating", total=len(images))
        for path in images:
            progress.update(task, description=path.name)
            started = time.perf_counter()
            try:
                graph, ranked = _process_one(pipeline, path, out, request)
            except RelateAnythingError as error:
                failures += 1
                report(error if path.name in str(error) else f"{path.name}: {error}")
            else:
                say(
                    f"{path.name}: {len(graph.segments)} segments, {len(graph.relations)} relations -> "
                    f"{out / (path.stem + '.json')}, {out / (path.stem + '.png')} ({time.perf_counter() - started:.1f} s)"
                )
                for warning in _warnings(path.name, graph, ranked, request, settings):
                    warn(warning)
            progress.advance(task)
    if failures:
        say(f"{failures} of {len(images)} images failed (see the errors above)")
        raise typer.Exit(code=EXIT_INPUTS)


def _warnings(name: str, graph: SceneGraph, ranked: int, request: _Request, settings: SegmentSettings) -> list[str]:
    """What a user should hear about a graph that holds less than they asked for, and the flag to change."""
    if len(graph.segments) < 2:
        filters = [
            f"--{flag} (now {value:g})"
            for flag, value in (
                ("pred-iou-thresh", settings.pred_iou_thresh),
                ("stability-score-thresh", settings.stability_score_thresh),
                ("min-mask-area", settings.min_mask_area),
                ("mask-threshold", settings.mask_threshold),
            )
            if value > 0
        ]
        kept = "no mask" if not graph.segments else "only one mask, so no pair to relate,"
        hint = f"lower {' or '.join(filters)}" if filters else "try a larger --points-per-side"
        return [f"{name}: {kept} passed the segmentation thresholds: {hint}"]
    if request.query and ranked and not graph.relations:
        flags = " ".join(f"--{key} {value!r}" for key, value in request.query.items())
        names = sorted({segment.label for segment in graph.segments if segment.label})
        named = f"the segments here are named {', '.join(names[:12])}" if names else "no segment here has a name"
        return [f"{name}: no relation of the {ranked} ranked matches {flags} ({named}): change or drop the filter"]
    return []


def _load_examples(images: list[Path], masks: list[Path]) -> list | None:
    if not images:
        return None
    from relate_anything.seggpt import load_example

    return [load_example(image, mask) for image, mask in zip(images, masks)]


def _process_one(pipeline, path: Path, out: Path, request: _Request) -> tuple[SceneGraph, int]:
    """Relate one photo and write its JSON and PNG; returns the graph written and the number of
    relations ranked before any filter."""
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
    ranked = len(graph.relations)
    if request.query:
        from relate_anything.naming import query

        graph = query(graph, **request.query)
        graph = graph.with_relations(graph.relations[: request.top_k])
    graph.save(out / f"{path.stem}.json", features=request.features)
    draw_scene_graph(pixels, graph).save(out / f"{path.stem}.png")
    return graph, ranked


def _print_version(value: bool) -> None:
    if value:
        from relate_anything import __version__

        typer.echo(f"relate-anything {__version__}")
        raise typer.Exit()


@app.callback(epilog=epilog("relate-anything run --sample --out out/", "relate-anything run --help"))
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Panoptic scene graphs from any image: segment everything with SAM, relate everything with RAM."""


# The other stages' commands: large jobs, data preparation, evaluation, training and serving.
app.command("batch", cls=HelpCommand, short_help=SUMMARIES["batch"], epilog=epilog(*EXAMPLES["batch"]))(batch_command)
app.add_typer(data_app, name="data")
app.command("eval", cls=HelpCommand, short_help=SUMMARIES["eval"], epilog=epilog(*EXAMPLES["eval"]))(evaluate_command)
app.command("collect", cls=HelpCommand, short_help=SUMMARIES["collect"], epilog=epilog(*EXAMPLES["collect"]))(
    collect_command
)
app.command("train", cls=HelpCommand, short_help=SUMMARIES["train"], epilog=epilog(*EXAMPLES["train"]))(train_command)
app.command("ui", cls=HelpCommand, short_help=SUMMARIES["ui"], epilog=epilog(*EXAMPLES["ui"]))(ui_command)
app.command("serve", cls=HelpCommand, short_help=SUMMARIES["serve"], epilog=epilog(*EXAMPLES["serve"]))(serve_command)
app.command("eval-video", cls=HelpCommand, short_help=SUMMARIES["eval-video"], epilog=epilog(*EXAMPLES["eval-video"]))(
    evaluate_video_command
)
app.command("distill", cls=HelpCommand, short_help=SUMMARIES["distill"], epilog=epilog(*EXAMPLES["distill"]))(
    distill_command
)
app.command("video", cls=HelpCommand, short_help=SUMMARIES["video"], epilog=epilog(*EXAMPLES["video"]))(video_command)


def main() -> None:
    app(prog_name="relate-anything")


if __name__ == "__main__":
    main()
