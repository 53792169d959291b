"""The batch job: every image of an input through the pipeline into committed shards, exactly once.

    summary = run_batch(list_inputs("photos/"), "graphs/", PipelineSpec(sam=..., ram=...), devices=["cuda:0", "cuda:1"])

The pipeline is described by a `relate_anything.pipeline.PipelineSpec` (the one builder), which each
worker process or Ray actor builds on its own device.

One process writes the output (`shards.ShardWriter`, `shards.ErrorLog`); the images are related
in that process (one device), in one worker process per device (several GPUs, or `--workers N`
on the CPU: inputs are dealt round-robin, results come back over a queue), or on a Ray cluster
(`ray_job`). Before starting, the job reads what the committed shards and errors.jsonl already
hold and skips those images; the rest are decoded ahead in background threads (JPEG decoding
overlaps the model) and related in groups of `batch_size` with `RelateAnything.batch`
(`batch.relate`).

An image that fails (unreadable, or an error in the pipeline) is recorded in errors.jsonl with
the reason, and the job goes on.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from relate_anything import weights
from relate_anything.atomic import write_text_atomically
from relate_anything.batch.inputs import InputItem
from relate_anything.batch.relate import Outcome, relate_items
from relate_anything.batch.shards import ErrorLog, ShardWriter, finished_files, read_errors
from relate_anything.errors import RelateAnythingError, UsageError
from relate_anything.pipeline_spec import LoadedModel, PipelineSpec
from relate_anything.weights import quiet_loading

__all__ = ["BatchSummary", "ProgressCallback", "run_batch"]

#: Called with (images finished, images to do) as the job goes.
ProgressCallback = Callable[[int, int], None]

JOB_FILE = "job.json"
_LOCK_FILE = ".lock"


@dataclass
class BatchSummary:
    """What a `run_batch` call found and did.

    Attributes:
        inputs: images in the input.
        already_done, already_failed: images skipped because a committed shard / errors.jsonl held them.
        done, failed: images related / failed in this call.
        seconds: wall time of this call's processing, loading the models included.
    """

    inputs: int
    already_done: int
    already_failed: int
    done: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def failed_total(self) -> int:
        """Failures in the whole job's output (this call's and earlier ones')."""
        return self.already_failed + self.failed

    @property
    def images_per_second(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0


def run_batch(
    inputs: Sequence[InputItem],
    out_dir: str | Path,
    spec: PipelineSpec,
    *,
    devices: Sequence[str] = ("cpu",),
    ray_address: str | None = None,
    batch_size: int = 4,
    shard_size: int = 256,
    features: bool = False,
    output_format: str = "jsonl",
    retry_errors: bool = False,
    decode_threads: int = 2,
    progress: ProgressCallback | None = None,
    on_loaded: Callable[[LoadedModel], None] | None = None,
    pipeline=None,
) -> BatchSummary:
    """Relate every image of `inputs` that `out_dir` does not hold yet, and commit the results.

    Args:
        inputs: the images (`inputs.list_inputs`).
        out_dir: the output folder (see `shards`); a second call with the same settings resumes.
        spec: the pipeline to build (in this process, each worker, or each Ray actor).
        devices: one device: relate in this process; several: one worker process per entry.
        ray_address: run on this Ray cluster instead ("auto", "ray://host:port", or "local" to
            start a Ray instance here); `devices` then only gives the number of CPU actors when
            the cluster has no GPU.
        batch_size: images whose SAM image encodings are computed together.
        shard_size: scene graphs per committed shard.
        features: keep each segment's 256-d SAM feature in the graphs.
        output_format: "jsonl" or "parquet".
        retry_errors: try the images in errors.jsonl again (their records are dropped first).
        decode_threads: threads decoding images ahead of the model, per process.
        progress: called with (finished, to do) at the start and after each image.
        on_loaded: called with each model loaded in this process or a worker process (not on Ray).
        pipeline: an already-built `RelateAnything` that `spec` describes, used in this process
            instead of building one (only with a single device and no Ray).

    Returns:
        A `BatchSummary`. Raises `RelateAnythingError` for job-level problems (output folder of
        another job or in use, weights missing, a worker dying); failed images are not raised.
        `spec`'s weights are recorded in OUT/job.json as resolved (flag, environment variable or
        default alike), so a restart with other weights is refused however they were given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with lock_output(out_dir):
        check_job_settings(out_dir, job_settings(spec, features=features, output_format=output_format))
        errors = ErrorLog(out_dir)
        if retry_errors:
            errors.clear()
        done = finished_files(out_dir)
        failed = {record["file"] for record in read_errors(out_dir)} - done
        todo = [item for item in inputs if item.file not in done and item.file not in failed]
        listed = {item.file for item in inputs}
        summary = BatchSummary(inputs=len(inputs), already_done=len(done & listed), already_failed=len(failed & listed))
        if not todo:
            return summary
        writer = ShardWriter(out_dir, output_format=output_format, shard_size=shard_size)  # before any model loads
        started = time.perf_counter()
        options = {"batch_size": batch_size, "features": features, "decode_threads": decode_threads}
        if ray_address is not None:
            from relate_anything.batch.ray_job import relate_on_ray

            outcomes = relate_on_ray(todo, spec, address=ray_address, cpu_actors=len(devices), **options)
        elif len(devices) == 1:
            if pipeline is None:
                pipeline = spec.build(devices[0], on_loaded=on_loaded)
            outcomes = relate_items(pipeline, todo, **options)
        else:
            outcomes = _relate_in_workers(todo, spec, devices, on_loaded=on_loaded, **options)
        finished = 0
        if progress is not None:
            progress(finished, len(todo))
        with writer, contextlib.closing(iter(outcomes)) as stream:
            for outcome in stream:
                if outcome.scene_graph is not None:
                    writer.add(outcome.file, outcome.scene_graph)
                    summary.done += 1
                else:
                    errors.add(outcome.file, outcome.error or "Error", outcome.reason or "")
                    summary.failed += 1
                finished += 1
                if progress is not None:
                    progress(finished, len(todo))
        summary.seconds = time.perf_counter() - started
    return summary


def job_settings(
    spec: PipelineSpec, *, features: bool, output_format: str, paths: Mapping[str, Path] | None = None
) -> dict[str, Any]:
    """What OUT/job.json records: everything that shapes the graphs.

    Each model is recorded as `{"reference": ..., "fingerprint": "sha256:..."}`: the reference as
    it was given or resolved (flag, environment variable or default alike) and the fingerprint
    of the content it resolves to (`weights.fingerprint`), which is what `check_job_settings`
    compares. So other weights are refused however they are given, and the same weights given
    another way (a hub id or its cached folder, a relative or absolute path, a copy) are not.

    Args:
        paths: the models' weights on disk (`spec.check_weights()`, which is called if None).
    """
    paths = spec.check_weights() if paths is None else paths
    recorded = asdict(spec.resolved())
    for name, (reference, _) in spec.model_references().items():
        recorded[name] = {"reference": reference, "fingerprint": weights.fingerprint(paths[name])}
    return recorded | {"features": features, "format": output_format}


# -- the output folder: one job, one writer ------------------------------------------------------


@contextlib.contextmanager
def lock_output(out_dir: Path) -> Iterator[None]:
    """Hold OUT/.lock while the job writes, so that a second job on the same folder is refused
    (the lock goes with the process, even on SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out_dir / _LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"{out_dir}: another batch job is writing to this folder") from None
        yield


def check_job_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Record the settings that shape the output in OUT/job.json, or check that they are the
    recorded ones: graphs made with other weights or thresholds must not mix in one output."""
    path = out_dir / JOB_FILE
    settings = json.loads(json.dumps(settings))  # tuples as lists, as they read back
    if not path.is_file():
        write_text_atomically(path, json.dumps({"settings": settings}, indent=1))
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["settings"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UsageError(
            f"{path} is damaged ({error}); remove it only if every shard was made with these settings"
        ) from error
    changed = sorted(
        key for key in settings.keys() | recorded.keys() if not _same_setting(recorded.get(key), settings.get(key))
    )
    if changed:
        difference = "; ".join(_difference(key, recorded.get(key), settings.get(key)) for key in changed)
        raise UsageError(
            f"{out_dir} holds a job with other settings ({difference}): use the same settings or another --out"
        )


def _is_model(value: Any) -> bool:
    return isinstance(value, dict) and "fingerprint" in value


def _same_setting(before: Any, now: Any) -> bool:
    """Whether a recorded setting and the current one make the same graphs: models by the
    fingerprint of their weights (not by how they were named); everything else as it is."""
    if _is_model(before) and _is_model(now):
        return before["fingerprint"] == now["fingerprint"]
    if isinstance(before, str) and _is_model(now):  # job.json of an older version: references only
        return before == now["reference"]
    return before == now


def _difference(key: str, before: Any, now: Any) -> str:
    if _is_model(before) and _is_model(now):
        return (
            f"{key}: other weights ({before['reference']!r}, {before['fingerprint'][:19]}... before; "
            f"{now['reference']!r}, {now['fingerprint'][:19]}... now)"
        )
    if _is_model(now):
        now = now["reference"]
    return f"{key}: {before!r} before, {now!r} now"


# -- one worker process per device ---------------------------------------------------------------


class _WorkerDone(NamedTuple):
    device: str


class _WorkerFailed(NamedTuple):
    error: RelateAnythingError


def _relate_in_workers(
    items: Sequence[InputItem],
    spec: PipelineSpec,
    devices: Sequence[str],
    *,
    batch_size: int,
    features: bool,
    decode_threads: int,
    on_loaded: Callable[[LoadedModel], None] | None = None,
) -> Iterator[Outcome]:
    """Outcomes from one worker process per device; worker k relates items k, k + n, k + 2n, ...
    The workers' `LoadedModel`s go to `on_loaded`."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    results = context.Queue(maxsize=4 * batch_size * len(devices))
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    workers = [
        context.Process(
            target=_worker,
            args=(spec, device, list(items[k :: len(devices)]), results, os.getpid()),
            kwargs={
                "batch_size": batch_size,
                "features": features,
                "decode_threads": decode_threads,
                "cpu_threads": threads,
            },
            daemon=True,
            name=f"relate-anything-{device}",
        )
        for k, device in enumerate(devices)
    ]
    for worker in workers:
        worker.start()
    try:
        running = len(workers)
        while running:
            try:
                message = results.get(timeout=1.0)
            except queue.Empty:
                for worker in workers:
                    if worker.exitcode not in (None, 0):
                        raise RelateAnythingError(
                            f"the worker on {worker.name.removeprefix('relate-anything-')} died (exit code {worker.exitcode}); "
                            "finished images are saved: run the same command again to go on"
                        ) from None
                continue
            if isinstance(message, _WorkerDone):
                running -= 1
            elif isinstance(message, LoadedModel):
                if on_loaded is not None:
                    on_loaded(message)
            elif isinstance(message, _WorkerFailed):
                raise message.error
            else:
                yield message
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=10)


def _worker(
    spec: PipelineSpec,
    device: str,
    items: list[InputItem],
    results,
    parent_pid: int,
    *,
    batch_size: int,
    features: bool,
    decode_threads: int,
    cpu_threads: int,
) -> None:
    """A worker process: build the pipeline on `device`, put every item's `Outcome` on `results`."""
    _exit_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    try:
        import torch

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(cpu_threads)  # workers share the cores instead of oversubscribing them
        quiet_loading()
        pipeline = spec.build(device, on_loaded=results.put)
        for outcome in relate_items(
            pipeline, items, batch_size=batch_size, features=features, decode_threads=decode_threads
        ):
            results.put(outcome)
    except RelateAnythingError as error:
        results.put(_WorkerFailed(error))
        return
    except Exception as error:  # tell the parent what went wrong rather than die without a word
        results.put(
            _WorkerFailed(RelateAnythingError(f"the worker on {device} failed: {type(error).__name__}: {error}"))
        )
        return
    results.put(_WorkerDone(device))


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when the job's process is gone (killed with SIGKILL, say): its results
    could no longer be written, and the restarted job does the work again."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
