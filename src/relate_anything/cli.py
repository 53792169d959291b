"""The `relate-anything` command: a thin shell over `RelateAnything`.

Errors the user can fix (missing weights, unreadable images, wrong checkpoints) are printed as
one message with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from relate_anything.batch.cli import batch_command
from relate_anything.console import (
    BoxNmsThreshOption,
    DeviceOption,
    DtypeOption,
    PointsPerSideOption,
    PredIouThreshOption,
    RamOption,
    SamOption,
    StabilityScoreThreshOption,
    TopKOption,
    check_device,
    check_dtype,
    fail,
    progress_bar,
    quiet_transformers,
    report,
)
from relate_anything.datasets.cli import app as data_app
from relate_anything.errors import RelateAnythingError
from relate_anything.evaluation.cli import evaluate_command
from relate_anything.evaluation.video_cli import evaluate_video_command
from relate_anything.serving.cli import serve_command
from relate_anything.serving.ui_cli import ui_command
from relate_anything.training.cli import collect_command, train_command

app = typer.Typer(
    help="Panoptic scene graphs from any image: segment everything with SAM, relate everything with RAM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _parse_numbers(text: str | None, count: int, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise typer.BadParameter(f"expected {count} comma-separated numbers, got {text!r}", param_hint=option)
    return values


@dataclass(frozen=True)
class _Request:
    """What `run` asks of every image."""

    point: tuple[float, ...] | None
    box: tuple[float, ...] | None
    find: str | None
    examples: list | None
    query: dict[str, str]
    top_k: int
    features: bool


@app.command()
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
    top_k: TopKOption = 20,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    sam: SamOption = None,
    ram: RamOption = None,
    points_per_side: PointsPerSideOption = 32,
    pred_iou_thresh: PredIouThreshOption = 0.88,
    stability_score_thresh: StabilityScoreThreshOption = 0.95,
    box_nms_thresh: BoxNmsThreshOption = 0.7,
    features: Annotated[
        bool, typer.Option("--features", help="Store each segment's 256-d SAM feature in the JSON.")
    ] = False,
    labeler: Annotated[
        str | None,
        typer.Option(
            help="Name segments with this CLIP/SigLIP model: hub id or folder (default: $RELATE_ANYTHING_LABELER, else openai/clip-vit-base-patch32). Implied by --vocab, --find, --subject, --object.",
            show_default=False,
        ),
    ] = None,
    vocab: Annotated[
        str | None,
        typer.Option(
            help='Names to choose from: "dog,stick,sand", a file with one name a line, or "psg" (PSG\'s 133 classes, the default).',
            show_default=False,
        ),
    ] = None,
    label_threshold: Annotated[
        float | None,
        typer.Option(
            help="A segment stays unnamed when its best name scores below this (default: the labeler's, 0.2 for CLIP).",
            show_default=False,
        ),
    ] = None,
    find: Annotated[
        str | None,
        typer.Option(
            help='Find a thing by a phrase ("the dog") and relate it with everything else.', show_default=False
        ),
    ] = None,
    detector: Annotated[
        str | None,
        typer.Option(
            help="Find with this text-conditioned detector (OWLv2: hub id or folder), whose boxes prompt SAM for things the point grid missed.",
            show_default=False,
        ),
    ] = None,
    example: Annotated[
        list[Path] | None,
        typer.Option(
            help="Example photo for segment-by-example (repeatable; pairs with --example-mask).",
            show_default=False,
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    example_mask: Annotated[
        list[Path] | None,
        typer.Option(
            help="Mask PNG of the thing in the example photo (non-zero = the thing).",
            show_default=False,
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    seggpt: Annotated[
        str | None,
        typer.Option(
            help="SegGPT weights for --example: hub id or folder (default: $RELATE_ANYTHING_SEGGPT, else BAAI/seggpt-vit-large).",
            show_default=False,
        ),
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="Keep relations whose subject's name matches this text.", show_default=False)
    ] = None,
    predicate: Annotated[
        str | None,
        typer.Option(
            help='Keep relations whose predicate matches this text ("on" matches "standing on").', show_default=False
        ),
    ] = None,
    object_: Annotated[
        str | None,
        typer.Option("--object", help="Keep relations whose object's name matches this text.", show_default=False),
    ] = None,
) -> None:
    """Build the scene graph of each IMAGE: writes OUT/<stem>.json and OUT/<stem>.png."""
    if len(example or []) != len(example_mask or []):
        raise typer.BadParameter("give one --example-mask for each --example", param_hint="--example-mask")
    query = {
        key: value for key, value in (("subject", subject), ("predicate", predicate), ("object", object_)) if value
    }
    try:
        request = _Request(
            point=_parse_numbers(point, 2, "--point"),
            box=_parse_numbers(box, 4, "--box"),
            find=find,
            examples=_load_examples(example or [], example_mask or []),
            query=query,
            top_k=top_k,
            features=features,
        )
        naming = (
            labeler is not None or vocab is not None or find is not None or subject is not None or object_ is not None
        )
        pipeline = _load_pipeline(
            sam=sam,
            ram=ram,
            device=check_device(device),
            dtype=check_dtype(dtype),
            labeler=labeler if naming else False,
            vocab=vocab,
            label_threshold=label_threshold,
            detector=detector,
            seggpt=seggpt if example else False,
            top_k=top_k,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
        )
    except RelateAnythingError as error:
        fail(error)
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
        raise typer.Exit(code=2)


def _load_examples(images: list[Path], masks: list[Path]) -> list | None:
    if not images:
        return None
    from relate_anything.seggpt import load_example

    return [load_example(image, mask) for image, mask in zip(images, masks)]


def _load_pipeline(
    *, sam, ram, device: str, dtype, labeler, vocab, label_threshold, detector, seggpt, top_k: int, **segmenter_options
):
    """The pipeline with the optional stages asked for (`False`: the stage is not wanted); `dtype`
    is SAM's."""
    from relate_anything.cpu_allocator import reuse_freed_memory
    from relate_anything.pipeline import RelateAnything

    quiet_transformers()
    reuse_freed_memory(device)  # on CPUs, fewer page faults: ~1.2x faster (see cpu_allocator)
    pipeline = RelateAnything.from_pretrained(sam, ram, device=device, dtype=dtype, top_k=top_k, **segmenter_options)
    if labeler is not False:
        from relate_anything.naming import Labeler, Vocabulary

        options = {} if label_threshold is None else {"threshold": label_threshold}
        pipeline.labeler = Labeler.from_pretrained(labeler, device=device, **options)
        pipeline.vocabulary = None if vocab is None else Vocabulary.parse(vocab)
    if detector is not None:
        from relate_anything.naming import Detector

        pipeline.detector = Detector.from_pretrained(detector, device=device)
    if seggpt is not False:
        from relate_anything.seggpt import ExampleSegmenter

        pipeline.example_segmenter = ExampleSegmenter.from_pretrained(seggpt, device=device)
    return pipeline


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
app.command("batch")(batch_command)
app.add_typer(data_app, name="data")
app.command("eval")(evaluate_command)
app.command("eval-video")(evaluate_video_command)
app.command("collect")(collect_command)
app.command("train")(train_command)
app.command("ui")(ui_command)
app.command("serve")(serve_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
