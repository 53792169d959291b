"""The `relate-anything` command: a thin shell over `RelateAnything`.

Errors the user can fix (missing weights, unreadable images, wrong checkpoints) are printed as
one message with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from relate_anything.console import (
    BoxNmsThreshOption,
    DeviceOption,
    PointsPerSideOption,
    PredIouThreshOption,
    SamOption,
    StabilityScoreThreshOption,
    check_device,
    fail,
    progress_bar,
    report,
)
from relate_anything.datasets.cli import app as data_app
from relate_anything.errors import RelateAnythingError
from relate_anything.evaluation.cli import evaluate_command
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


@app.command()
def run(
    images: Annotated[
        list[Path],
        # Checked before any model loads: a typo should not cost a multi-GB download first.
        typer.Argument(help="Photos to process (JPEG, PNG, ...).", show_default=False, exists=True, dir_okay=False),
    ],
    out: Annotated[Path, typer.Option(help="Folder for <stem>.json (the scene graph) and <stem>.png (the picture).")] = Path("."),
    point: Annotated[str | None, typer.Option(help="X,Y in pixels: relate the thing at this point with everything else.", show_default=False)] = None,
    box: Annotated[str | None, typer.Option(help="X0,Y0,X1,Y1 in pixels: relate the thing in this box with everything else.", show_default=False)] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Relations to keep per image, best first.")] = 20,
    device: DeviceOption = "cpu",
    sam: SamOption = None,
    ram: Annotated[str | None, typer.Option(help="RAM head weights: ram_epoch12.pth, a .safetensors head, or hf://OWNER/REPO/FILE (default: $RELATE_ANYTHING_RAM, else the authors' ram_epoch12.pth).", show_default=False)] = None,
    points_per_side: PointsPerSideOption = 32,
    pred_iou_thresh: PredIouThreshOption = 0.88,
    stability_score_thresh: StabilityScoreThreshOption = 0.95,
    box_nms_thresh: BoxNmsThreshOption = 0.7,
    features: Annotated[bool, typer.Option("--features", help="Store each segment's 256-d SAM feature in the JSON.")] = False,
) -> None:
    """Build the scene graph of each IMAGE: writes OUT/<stem>.json and OUT/<stem>.png."""
    point_xy = _parse_numbers(point, 2, "--point")
    box_xyxy = _parse_numbers(box, 4, "--box")
    try:
        pipeline = _load_pipeline(
            sam=sam,
            ram=ram,
            device=device,
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
                _process_one(pipeline, path, out, point=point_xy, box=box_xyxy, features=features)
            except RelateAnythingError as error:
                failures += 1
                report(error)
            progress.advance(task)
    if failures:
        raise typer.Exit(code=2)


def _load_pipeline(*, sam: str | None, ram: str | None, device: str, top_k: int, **segmenter_options):
    from transformers.utils import logging as transformers_logging

    from relate_anything.pipeline import RelateAnything

    transformers_logging.disable_progress_bar()  # our own progress bar is the one that matters
    transformers_logging.set_verbosity_error()  # load problems reach the user as our one message

    return RelateAnything.from_pretrained(sam, ram, device=check_device(device), top_k=top_k, **segmenter_options)


def _process_one(pipeline, path: Path, out: Path, *, point, box, features: bool) -> None:
    from relate_anything.image_io import load_image
    from relate_anything.visualize import draw_scene_graph

    pixels = load_image(path)
    graph = pipeline(pixels, point=point, box=box, file=path.name)
    graph.save(out / f"{path.stem}.json", features=features)
    draw_scene_graph(pixels, graph).save(out / f"{path.stem}.png")


@app.callback()
def _root() -> None:
    """Panoptic scene graphs from any image."""


# The other stages' commands: data preparation, evaluation and training.
app.add_typer(data_app, name="data")
app.command("eval")(evaluate_command)
app.command("collect")(collect_command)
app.command("train")(train_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
