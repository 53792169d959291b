"""`relate-anything serve`: the REST API on uvicorn, the models loaded once at startup.

Register it on the main Typer app with `app.command("serve")(serve_command)`. FastAPI and uvicorn
are imported only when the command runs, so the rest of the CLI works without the `serve` extra.
"""

from __future__ import annotations

from typing import Annotated

import typer

from relate_anything.console import (
    BoxNmsThreshOption,
    DeviceOption,
    DtypeOption,
    PointsPerSideOption,
    PredIouThreshOption,
    RamOption,
    SamOption,
    StabilityScoreThreshOption,
    check_device,
    check_dtype,
    fail,
    stderr,
)
from relate_anything.errors import RelateAnythingError
from relate_anything.image_io import MAX_PIXELS


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    sam: SamOption = None,
    ram: RamOption = None,
    labeler: Annotated[
        str | None,
        typer.Option(
            help="Name every segment with this CLIP/SigLIP model (hub id or folder); lets requests send `vocab`. Implied by --vocab.",
            show_default=False,
        ),
    ] = None,
    vocab: Annotated[
        str | None,
        typer.Option(
            help='Default names for requests without `vocab`: "dog,stick,sand", a file with one name a line, or "psg" (the default).',
            show_default=False,
        ),
    ] = None,
    label_threshold: Annotated[
        float | None,
        typer.Option(
            help="A segment stays unnamed when its best name scores below this (default: the labeler's).",
            show_default=False,
        ),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Relations per image when a request does not say.")] = 20,
    points_per_side: PointsPerSideOption = 32,
    pred_iou_thresh: PredIouThreshOption = 0.88,
    stability_score_thresh: StabilityScoreThreshOption = 0.95,
    box_nms_thresh: BoxNmsThreshOption = 0.7,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest image file accepted, in MiB (larger: HTTP 413).")
    ] = 20.0,
    max_pixels: Annotated[
        int,
        typer.Option(min=1, help="Largest image accepted, width x height, checked before decoding (larger: HTTP 413)."),
    ] = MAX_PIXELS,
    queue_size: Annotated[int, typer.Option(min=1, help="Requests that may wait for the model (more: HTTP 503).")] = 32,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request may wait and run in all (longer: HTTP 504).")
    ] = 60.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most photos run through the image encoder together.")] = 8,
) -> None:
    """Serve scene graphs over HTTP: POST /v1/scene-graph, GET /healthz, OpenAPI at /docs."""
    try:
        import uvicorn

        from relate_anything.serving.api import create_app
    except ImportError as error:
        fail(
            RelateAnythingError(
                f"serving needs the serve extra ({error.name} is missing): pip install 'relate-anything[serve]'"
            )
        )
    from relate_anything import weights
    from relate_anything.cli import _load_pipeline

    naming = labeler is not None or vocab is not None
    try:
        pipeline = _load_pipeline(
            sam=sam,
            ram=ram,
            device=check_device(device),
            dtype=check_dtype(dtype),
            labeler=labeler if naming else False,
            vocab=vocab,
            label_threshold=label_threshold,
            detector=None,
            seggpt=False,
            top_k=top_k,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
        )
    except RelateAnythingError as error:
        fail(error)
    models = {
        "sam": str(sam or weights.default_reference(weights.SAM_WEIGHTS, weights.DEFAULT_SAM)),
        "ram": str(ram or weights.default_reference(weights.RAM_WEIGHTS, weights.DEFAULT_RAM)),
    }
    if naming:
        from relate_anything.naming.hub import DEFAULT_LABELER, LABELER_WEIGHTS

        models["labeler"] = str(labeler or weights.default_reference(LABELER_WEIGHTS, DEFAULT_LABELER))
    app = create_app(
        pipeline,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        queue_size=queue_size,
        timeout=timeout,
        max_batch=max_batch,
        models=models,
    )
    stderr.print(f"serving on http://{host}:{port} (API docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")
