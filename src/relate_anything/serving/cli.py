"""`relate-anything serve`: the REST API on uvicorn, the models loaded once at startup.

Register it on the main Typer app with `app.command("serve")(serve_command)`. FastAPI and uvicorn
are imported only when the command runs, so the rest of the CLI works without the `serve` extra.
"""

from __future__ import annotations

from typing import Annotated

import typer

from relate_anything.console import (
    MAX_UPLOAD_MB,
    DeviceOption,
    DtypeOption,
    LabelerOption,
    LabelThresholdOption,
    MaxUploadOption,
    RamOption,
    Sam2Option,
    SamOption,
    VocabOption,
    build_pipeline,
    handles_errors,
    optional_model,
    say,
    segment_settings_options,
)
from relate_anything.errors import UsageError
from relate_anything.image_io import MAX_PIXELS
from relate_anything.settings import SegmentSettings


@segment_settings_options
@handles_errors
def serve_command(
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    sam: SamOption = None,
    ram: RamOption = None,
    labeler: LabelerOption = None,
    vocab: VocabOption = None,
    label_threshold: LabelThresholdOption = None,
    top_k: Annotated[int, typer.Option(min=1, help="Relations per image when a request does not say.")] = 20,
    max_upload_mb: MaxUploadOption = MAX_UPLOAD_MB,
    max_pixels: Annotated[
        int,
        typer.Option(min=1, help="Largest image accepted, width x height, checked before decoding (larger: HTTP 413)."),
    ] = MAX_PIXELS,
    queue_size: Annotated[int, typer.Option(min=1, help="Requests that may wait for the model (more: HTTP 503).")] = 32,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request may wait and run in all (longer: HTTP 504).")
    ] = 60.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most photos run through the image encoder together.")] = 8,
    max_video_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest clip accepted, in MiB (2^20 bytes; larger: HTTP 413).")
    ] = 200.0,
    max_video_seconds: Annotated[
        float,
        typer.Option(min=0.001, help="Longest clip accepted, in seconds, read before decoding (longer: HTTP 413)."),
    ] = 120.0,
    sam2: Sam2Option = None,
    settings: SegmentSettings = SegmentSettings(),
) -> None:
    """Serve scene graphs over HTTP: POST /v1/scene-graph, POST /v1/video-scene-graph (jobs),
    GET /healthz, OpenAPI at /docs."""
    from importlib.util import find_spec

    for package in ("fastapi", "uvicorn", "multipart"):  # found, not imported: errors come first
        if find_spec(package) is None:
            raise UsageError(
                f"serving needs the serve extra ({package} is missing): pip install 'relate-anything[serve]'"
            )
    from relate_anything.devices import check_device
    from relate_anything.pipeline_spec import PipelineSpec
    from relate_anything.weights import LABELER_WEIGHTS, SAM2_WEIGHTS

    spec = PipelineSpec(
        sam=sam,
        ram=ram,
        dtype=dtype,
        settings=settings,
        top_k=top_k,
        labeler=optional_model(LABELER_WEIGHTS, labeler, wanted=labeler is not None or vocab is not None),
        label_threshold=label_threshold,
        vocabulary=vocab,
        sam2=optional_model(SAM2_WEIGHTS, sam2, wanted=sam2 is not None),
    ).resolved()
    spec.load_vocabulary()  # a bad vocabulary fails before any model loads
    device = check_device(device)
    spec.check_weights()  # every missing weight named before the server's libraries load
    import uvicorn

    from relate_anything.serving.api import create_app

    pipeline = build_pipeline(spec, device)
    models = {"sam": spec.sam, "ram": spec.ram} | ({} if spec.labeler is None else {"labeler": spec.labeler})
    app = create_app(
        pipeline,
        max_upload_bytes=int(max_upload_mb * 2**20),
        max_pixels=max_pixels,
        queue_size=queue_size,
        timeout=timeout,
        max_batch=max_batch,
        models=models,
        max_video_bytes=int(max_video_mb * 2**20),
        max_video_seconds=max_video_seconds,
    )
    say(f"serving on http://{host}:{port} (API docs at /docs); uploads up to {max_upload_mb:g} MiB")
    uvicorn.run(app, host=host, port=port, log_level="info")
