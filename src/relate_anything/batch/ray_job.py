"""The batch job on a Ray cluster: Ray Data maps the images over one actor per GPU.

Each actor builds the pipeline once (`pipeline.PipelineSpec.build`) and relates the batches Ray Data hands
it with the same `relate_items` as a local job (decoding ahead in threads, `RelateAnything.batch`).
The outcomes stream back to the driver, which writes them with the local job's single writer: the
output format, the resume rule and exactly-once are the same as without Ray.

Every node must be able to read the images (shared storage, or URLs) and the weights (hub ids, or
paths present on every node).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from relate_anything.batch.inputs import InputItem
from relate_anything.batch.relate import Outcome, relate_items
from relate_anything.errors import RelateAnythingError
from relate_anything.weights import quiet_loading

if TYPE_CHECKING:
    from relate_anything.pipeline_spec import PipelineSpec

__all__ = ["relate_on_ray"]

# Rows handed to an actor at once, in pipeline batches: decoding the next batch of a call overlaps
# relating the current one.
_BATCHES_PER_CALL = 4


def relate_on_ray(
    items: Sequence[InputItem],
    spec: PipelineSpec,
    *,
    address: str,
    cpu_actors: int = 1,
    batch_size: int = 4,
    features: bool = False,
    decode_threads: int = 2,
) -> Iterator[Outcome]:
    """The `Outcome` of every item, related by Ray actors (in no particular order).

    Args:
        address: "auto" (the cluster this machine belongs to, or $RAY_ADDRESS), "ray://HOST:PORT",
            or "local" (a Ray instance started here and stopped at the end). If Ray is already
            initialised in this process, that instance is used.
        cpu_actors: actors when the cluster has no GPU (each takes one CPU).
    """
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RelateAnythingError(f"--ray {address}: cannot reach a Ray cluster ({error})") from error
    try:
        # The job's own progress bar and summary are the ones that matter.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
        gpus = int(ray.cluster_resources().get("GPU", 0))
        dataset = ray.data.from_items([{"file": item.file, "location": item.location} for item in items])
        dataset = dataset.map_batches(
            _RelateActor,
            fn_constructor_kwargs={
                "spec": spec,
                "device": "cuda" if gpus else "cpu",
                "batch_size": batch_size,
                "features": features,
                "decode_threads": decode_threads,
            },
            batch_size=batch_size * _BATCHES_PER_CALL,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=gpus or max(1, cpu_actors)),
            num_gpus=1 if gpus else 0,
            num_cpus=1,
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for file, graph, error, reason in zip(
                    batch["file"], batch["scene_graph"], batch["error"], batch["reason"]
                ):
                    yield Outcome(str(file), str(graph) or None, str(error) or None, str(reason) or None)
        except Exception as error:  # Ray wraps what an actor raised (with its traceback in the message)
            cause = _user_error(error)
            if cause is None:
                raise
            raise cause from None
    finally:
        if started_here:
            ray.shutdown()


class _RelateActor:
    """A Ray Data actor: one pipeline on its device, relating batches of {"file", "location"} rows."""

    def __init__(
        self, *, spec: PipelineSpec, device: str, batch_size: int, features: bool, decode_threads: int
    ) -> None:
        quiet_loading()
        self.pipeline = spec.build(device)
        self.options = {"batch_size": batch_size, "features": features, "decode_threads": decode_threads}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [InputItem(str(file), str(location)) for file, location in zip(batch["file"], batch["location"])]
        outcomes = list(relate_items(self.pipeline, items, **self.options))
        # Empty strings for "none": Arrow columns want one type.
        return {
            "file": np.array([o.file for o in outcomes], dtype=object),
            "scene_graph": np.array([o.scene_graph or "" for o in outcomes], dtype=object),
            "error": np.array([o.error or "" for o in outcomes], dtype=object),
            "reason": np.array([o.reason or "" for o in outcomes], dtype=object),
        }


def _user_error(error: BaseException) -> RelateAnythingError | None:
    """The `RelateAnythingError` an actor raised, if Ray's exception wraps one."""
    for _ in range(10):  # a chain of wrappers is short; never loop on a cycle
        if error is None:
            return None
        if isinstance(error, RelateAnythingError) and not type(error).__module__.startswith("ray."):
            return error  # Ray's wrappers subclass the user's error: look past them to the original
        error = getattr(error, "cause", None) or error.__cause__
    return None


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise RelateAnythingError("--ray needs Ray Data: pip install 'relate-anything[ray]'") from None
    return ray
