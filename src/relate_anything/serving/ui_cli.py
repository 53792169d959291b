"""`relate-anything ui`: load the models once, then serve the web page (see `serving.ui`)."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Annotated

import typer

from relate_anything.console import (
    MAX_UPLOAD_MB,
    DetectorOption,
    DeviceOption,
    DtypeOption,
    LabelerOption,
    LabelThresholdOption,
    MaxUploadOption,
    RamOption,
    SamOption,
    SeggptOption,
    VocabOption,
    build_pipeline,
    handles_errors,
    optional_model,
    say,
    segment_settings_options,
)
from relate_anything.errors import UsageError
from relate_anything.settings import SegmentSettings


@segment_settings_options
@handles_errors
def ui_command(
    sam: SamOption = None,
    ram: RamOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    labeler: LabelerOption = None,
    vocab: VocabOption = None,
    label_threshold: LabelThresholdOption = None,
    detector: DetectorOption = None,
    seggpt: SeggptOption = None,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="Relations shown at first (the page has a slider).")] = 20,
    samples: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Folder of more sample photos to offer.",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 7860,
    max_upload_mb: MaxUploadOption = MAX_UPLOAD_MB,
    max_video_seconds: Annotated[
        float, typer.Option(min=0.001, help="Longest clip the video tab takes, in seconds.")
    ] = 30.0,
    settings: SegmentSettings = SegmentSettings(),
) -> None:
    """Serve the web UI: relate anything, relate me with anything (a click), find by text, segment by example."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from importlib.util import find_spec

    if find_spec("gradio") is None:  # found, not imported (seconds): errors come first
        raise UsageError('the web UI needs Gradio: pip install "relate-anything[ui]"')
    from relate_anything.devices import check_device
    from relate_anything.pipeline_spec import PipelineSpec
    from relate_anything.weights import DETECTOR_WEIGHTS, LABELER_WEIGHTS, SEGGPT_WEIGHTS

    spec = PipelineSpec(
        sam=sam,
        ram=ram,
        dtype=dtype,
        settings=settings,
        top_k=top_k,
        labeler=optional_model(LABELER_WEIGHTS, labeler, wanted=labeler is not None or vocab is not None),
        label_threshold=label_threshold,
        vocabulary=vocab,
        detector=optional_model(DETECTOR_WEIGHTS, detector, wanted=detector is not None),
        seggpt=optional_model(SEGGPT_WEIGHTS, seggpt, wanted=seggpt is not None),
    )
    spec.load_vocabulary()  # a bad vocabulary fails before any model loads
    device = check_device(device)
    spec.check_weights()  # every missing weight named before Gradio loads
    from relate_anything.serving.ui import CSS, EMBEDDING_CACHE_SIZE, SceneGraphDemo, build_ui, sample_photos

    pipeline = build_pipeline(spec, device, embedding_cache_size=EMBEDDING_CACHE_SIZE)
    demo = SceneGraphDemo(pipeline, max_video_seconds=max_video_seconds)
    page = build_ui(demo, samples=sample_photos(samples), top_k=top_k)
    say(f"relate-anything UI on http://{host}:{port}; uploads up to {max_upload_mb:g} MiB (Ctrl+C to stop)")
    queued = page.queue(max_size=64)
    # Gradio 6 takes the style sheet at launch (Gradio 5 took it in Blocks, which still works there).
    style = {"css": CSS} if "css" in inspect.signature(queued.launch).parameters else {}
    try:
        queued.launch(
            server_name=host,
            server_port=port,
            max_file_size=int(max_upload_mb * 2**20),
            ssr_mode=False,
            show_error=True,
            quiet=True,
            **style,
        )
    except OSError as error:  # the port is taken, or the address is not this machine's
        raise UsageError(f"cannot serve on {host}:{port}: {error}") from None
