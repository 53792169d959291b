"""`relate-anything batch`: a thin shell over `relate_anything.batch.run_batch`.

Register it on the main Typer app with `app.command("batch")(batch_command)`. Exit codes as every
command's (`console.EXIT_CODES`): 0 every image has its scene graph, 4 some images failed (listed
in OUT/errors.jsonl), 2 the job could not start (bad INPUT or flag, an output folder of another
job), 3 weights missing or wrong.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from relate_anything.console import (
    EXIT_INPUTS,
    DeviceOption,
    DtypeOption,
    RamOption,
    SamOption,
    TopKOption,
    handles_errors,
    print_loaded,
    progress_callback,
    segment_settings_options,
    stderr,
)
from relate_anything.errors import UsageError
from relate_anything.settings import SegmentSettings


@segment_settings_options
@handles_errors
def batch_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="A folder (every image below it), a glob ('photos/**/*.jpg'), or a manifest (.txt / .csv / .jsonl of paths or URLs, local or a URL).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="Output folder: scene_graphs-*.jsonl (or .parquet) and errors.jsonl; run the same command again to resume.",
            show_default=False,
        ),
    ],
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="[jsonl|parquet]",
            help="Shard format: jsonl (one SceneGraph JSON a line) or parquet (columns file, scene_graph; needs pyarrow).",
        ),
    ] = "jsonl",
    top_k: TopKOption = 20,
    batch_size: Annotated[int, typer.Option(min=1, help="Images whose SAM encodings are computed together.")] = 4,
    shard_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Scene graphs per committed shard (what a kill can cost: graphs not yet committed are computed again).",
        ),
    ] = 256,
    device: DeviceOption = "cpu",
    devices: Annotated[
        str | None,
        typer.Option(
            metavar="DEVICES",
            help="Comma-separated devices, one worker process each: cuda:0,cuda:1,...",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes on --device (with --device cuda: one per GPU, cuda:0..N-1).")
    ] = 1,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run on a Ray cluster with Ray Data, one actor per GPU: auto, ray://HOST:PORT, or local (start Ray here).",
            show_default=False,
        ),
    ] = None,
    sam: SamOption = None,
    ram: RamOption = None,
    dtype: DtypeOption = "float32",
    features: Annotated[
        bool, typer.Option("--features", help="Store each segment's 256-d SAM feature in the graphs.")
    ] = False,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="Try the images listed in OUT/errors.jsonl again.")
    ] = False,
    decode_threads: Annotated[
        int, typer.Option(min=1, help="Threads decoding images ahead of the model, per worker.")
    ] = 2,
    settings: SegmentSettings = SegmentSettings(),
) -> None:
    """Relate every image of INPUT into sharded scene graphs in OUT: resumable, exactly once."""
    from relate_anything.batch import list_inputs, run_batch
    from relate_anything.pipeline_spec import PipelineSpec

    if output_format not in ("jsonl", "parquet"):
        raise UsageError(f"--format must be jsonl or parquet, got {output_format!r}")
    spec = PipelineSpec(sam=sam, ram=ram, dtype=dtype, settings=settings, top_k=top_k)
    chosen = _devices(device, devices, workers) if ray is None else ["cpu"] * workers
    items = list_inputs(source)
    # Every missing weight named at once, and downloads (with their own bars) before the job's bar.
    spec.check_weights()
    # A scheduler's SIGTERM (preemption, `kill`) stops the job like Ctrl-C: the graphs
    # already computed are committed before it exits.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with progress_callback("relating", rate_unit="images") as progress:
            summary = run_batch(
                items,
                out,
                spec,
                devices=chosen,
                ray_address=ray,
                batch_size=batch_size,
                shard_size=shard_size,
                features=features,
                output_format=output_format,
                retry_errors=retry_errors,
                decode_threads=decode_threads,
                progress=progress,
                on_loaded=print_loaded,
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    processed = summary.done + summary.failed
    line = (
        f"{summary.inputs} images: {summary.already_done + summary.done} done ({summary.done} in this run), "
        f"{summary.failed_total} failed"
    )
    if summary.failed_total:
        line += f" (see {out / 'errors.jsonl'})"
    if processed:
        line += f"; {processed} in {summary.seconds:.1f} s ({summary.images_per_second:.2f} images/s)"
    stderr.print(f"{line} -> {out}", highlight=False, markup=False)  # paths may hold brackets
    if summary.failed_total:
        raise typer.Exit(code=EXIT_INPUTS)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _devices(device: str, devices: str | None, workers: int) -> list[str]:
    """The device of each worker: --devices as listed; else --workers copies of --device, where
    plain "cuda" means one GPU each."""
    from relate_anything.devices import check_device

    if devices is not None:
        listed = [name.strip() for name in devices.split(",") if name.strip()]
        if not listed:
            raise UsageError("--devices lists no device")
        return [check_device(name) for name in listed]
    if device == "cuda" and workers > 1:
        import torch

        check_device(device)
        if workers > torch.cuda.device_count():
            raise UsageError(
                f"--workers {workers} with --device cuda: this machine has {torch.cuda.device_count()} GPUs"
            )
        return [f"cuda:{k}" for k in range(workers)]
    return [check_device(device)] * workers
