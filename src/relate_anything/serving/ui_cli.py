"""`relate-anything ui`: load the models once, then serve the web page (see `serving.ui`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from relate_anything.console import (
    BoxNmsThreshOption,
    DeviceOption,
    DtypeOption,
    PointsPerSideOption,
    PredIouThreshOption,
    SamOption,
    StabilityScoreThreshOption,
    check_device,
    check_dtype,
    fail,
    stderr,
)
from relate_anything.errors import RelateAnythingError


def ui_command(
    sam: SamOption = None,
    ram: Annotated[
        str | None,
        typer.Option(
            help="RAM head weights (as for `run`; default: $RELATE_ANYTHING_RAM, else the authors' ram_epoch12.pth).",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    labeler: Annotated[
        str | None,
        typer.Option(
            help="Name segments and find by text with this CLIP/SigLIP model (hub id or folder).", show_default=False
        ),
    ] = None,
    vocab: Annotated[
        str | None,
        typer.Option(
            help='Names to choose from: "dog,stick,sand", a file, or "psg" (implies --labeler\'s default model).',
            show_default=False,
        ),
    ] = None,
    label_threshold: Annotated[
        float | None,
        typer.Option(help="A segment stays unnamed when its best name scores below this.", show_default=False),
    ] = None,
    detector: Annotated[
        str | None, typer.Option(help="Find by text with this OWLv2 detector (hub id or folder).", show_default=False)
    ] = None,
    seggpt: Annotated[
        str | None,
        typer.Option(
            help="Enable segment by example with these SegGPT weights (hub id or folder).", show_default=False
        ),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="Relations shown at first (the page has a slider).")] = 20,
    points_per_side: PointsPerSideOption = 32,
    pred_iou_thresh: PredIouThreshOption = 0.88,
    stability_score_thresh: StabilityScoreThreshOption = 0.95,
    box_nms_thresh: BoxNmsThreshOption = 0.7,
    samples: Annotated[
        Path | None,
        typer.Option(help="Folder of more sample photos to offer.", exists=True, file_okay=False, show_default=False),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    max_file_mb: Annotated[float, typer.Option(help="Largest upload accepted, in MB.")] = 50.0,
) -> None:
    """Serve the web UI: relate anything, relate me with anything (a click), find by text, segment by example."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        fail(RelateAnythingError('the web UI needs Gradio: pip install "relate-anything[ui]"'))
    from relate_anything.cli import _load_pipeline
    from relate_anything.serving.ui import SceneGraphDemo, build_ui, sample_photos

    try:
        pipeline = _load_pipeline(
            sam=sam,
            ram=ram,
            device=check_device(device),
            dtype=check_dtype(dtype),
            labeler=labeler if (labeler is not None or vocab is not None) else False,
            vocab=vocab,
            label_threshold=label_threshold,
            detector=detector,
            seggpt=seggpt if seggpt is not None else False,
            top_k=top_k,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
        )
    except RelateAnythingError as error:
        fail(error)
    page = build_ui(SceneGraphDemo(pipeline), samples=sample_photos(samples), top_k=top_k)
    stderr.print(f"relate-anything UI on http://{host}:{port} (Ctrl+C to stop)")
    try:
        page.queue(max_size=64).launch(
            server_name=host,
            server_port=port,
            max_file_size=int(max_file_mb * 1_000_000),
            ssr_mode=False,
            show_error=True,
            quiet=True,
        )
    except OSError as error:  # the port is taken, or the address is not this machine's
        fail(RelateAnythingError(f"cannot serve on {host}:{port}: {error}"))
