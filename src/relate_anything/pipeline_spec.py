"""`PipelineSpec`, the one builder: every front end (run, batch and its workers, serve, ui,
collect, video, distill) describes the pipeline it wants with one and calls `build(device)`.

This module imports neither torch nor transformers: a command checks its flags and finds every
model's weights (`check_weights`) in a second or two, and only `build` loads the models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relate_anything import weights
from relate_anything.devices import dtype_name, parse_dtype
from relate_anything.errors import UsageError
from relate_anything.settings import SegmentSettings

if TYPE_CHECKING:
    from relate_anything.naming import Vocabulary
    from relate_anything.pipeline import RelateAnything
    from relate_anything.sam import Segmenter

__all__ = ["LoadedModel", "PipelineSpec", "check_top_k", "sam_variant", "segmenter_name"]


@dataclass(frozen=True)
class PipelineSpec:
    """Which models make a pipeline, by reference: what a front end, a worker process or a Ray
    actor needs to build its own copy (plain, picklable, JSON-able values).

    Attributes:
        sam, ram: weights references as `weights.resolve` takes them (None: the environment
            variable, else the default; `resolved()` fills them in). `sam` may also be SAM-HQ or
            SAM 2 weights, with a relation head distilled for them (`relate-anything distill`).
        dtype: SAM's precision: "float32", "bfloat16" or "float16" (or fp32/bf16/fp16).
        settings: the "segment everything" settings of calls that give none.
        top_k: relations kept per image when a call does not say.
        labeler: CLIP/SigLIP weights that name every segment (None: no labeler).
        label_threshold: the labeler's minimum score (None: its family's default).
        vocabulary: the labeler's names: "psg", "dog,stick,sand", or a file with one name a line
            (None: PSG's 133 classes).
        detector: OWLv2 weights for finding by text (None: no detector).
        seggpt: SegGPT weights for segmenting by example and the "seggpt" video tracker (None:
            no example segmenter).
        sam2: SAM 2 video weights for the "sam2" video tracker (None: no SAM 2).
        points_per_batch: grid points decoded together (memory vs speed).
        decoder: SAM's mask decoder: "fast" or "transformers" (the same outputs; see `Segmenter`;
            SAM-HQ and SAM 2 always use transformers').
    """

    sam: str | None = None
    ram: str | None = None
    dtype: str = "float32"
    settings: SegmentSettings = field(default_factory=SegmentSettings)
    top_k: int = 20
    labeler: str | None = None
    label_threshold: float | None = None
    vocabulary: str | None = None
    detector: str | None = None
    seggpt: str | None = None
    sam2: str | None = None
    points_per_batch: int = 256
    decoder: str = "fast"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        check_top_k(self.top_k)
        if self.label_threshold is not None and not 0.0 <= self.label_threshold <= 1.0:
            raise UsageError(f"label_threshold must be between 0 and 1, got {self.label_threshold}")

    def resolved(self) -> PipelineSpec:
        """This spec with `sam` and `ram` filled in from the environment or the defaults, as
        they will be loaded (what a job records)."""
        return replace(self, sam=weights.SAM_WEIGHTS.reference(self.sam), ram=weights.RAM_WEIGHTS.reference(self.ram))

    def load_vocabulary(self) -> Vocabulary | None:
        """The `Vocabulary` that `vocabulary` names (None stays None: PSG's, chosen per call)."""
        if self.vocabulary is None:
            return None
        from relate_anything.naming import Vocabulary

        return Vocabulary.parse(self.vocabulary)

    def model_references(self) -> dict[str, tuple[str, weights.WeightsKind]]:
        """The weights reference of every model this spec names, by field ("sam", "ram", and
        "labeler", "detector", "seggpt", "sam2" when set), as they will be loaded."""
        kinds = {
            "sam": weights.SAM_WEIGHTS,
            "ram": weights.RAM_WEIGHTS,
            "labeler": weights.LABELER_WEIGHTS,
            "detector": weights.DETECTOR_WEIGHTS,
            "seggpt": weights.SEGGPT_WEIGHTS,
            "sam2": weights.SAM2_WEIGHTS,
        }
        return {
            name: (kind.reference(getattr(self, name)), kind)
            for name, kind in kinds.items()
            if name in ("sam", "ram") or getattr(self, name) is not None
        }

    def check_weights(self, *, only: Sequence[str] | None = None) -> dict[str, Path]:
        """Every model's weights on disk, by field, downloading what is not yet cached; nothing is loaded.

        Args:
            only: the fields to check (default: every model of the spec).

        Raises:
            WeightsNotFoundError: one message naming every model whose weights are neither on
                disk, nor cached, nor downloadable, each with its flag and environment variable;
                without network it comes at once (see `weights.resolve_all`).
        """
        references = {name: entry for name, entry in self.model_references().items() if only is None or name in only}
        return dict(zip(references, weights.resolve_all(list(references.values()))))

    def build_segmenter(
        self,
        device: str,
        *,
        embedding_cache_size: int = 1,
        on_loaded: Callable[[LoadedModel], None] | None = None,
    ) -> Segmenter:
        """The SAM stage alone, on `device` (what `collect` needs); `on_loaded` as for `build`."""
        paths = self.check_weights(only=["sam"])
        with weights.no_loading_bars():
            return self._segmenter(paths["sam"], device, embedding_cache_size, on_loaded)

    def build(
        self,
        device: str,
        *,
        embedding_cache_size: int = 1,
        on_loaded: Callable[[LoadedModel], None] | None = None,
    ) -> RelateAnything:
        """The pipeline on `device`, every stage this spec names loaded.

        Every model's weights are found (or downloaded) first, so that all missing ones are
        reported together before anything loads (`check_weights`).

        Args:
            device: "cpu", "cuda", "cuda:1", ...
            embedding_cache_size: photos whose SAM embeddings the segmenter keeps.
            on_loaded: called with a `LoadedModel` after each model is loaded (the commands
                print "loaded SAM ViT-H (facebook/sam-vit-huge) on cuda in 4.1 s"); the library
                itself prints nothing.

        Raises:
            WeightsNotFoundError, CheckpointError: weights missing, or not what they should be.
            UsageError: a vocabulary that cannot be read.
        """
        vocabulary = self.load_vocabulary()  # a bad vocabulary file fails before any model loads
        paths = self.check_weights()
        references = self.model_references()
        from relate_anything.pipeline import RelateAnything  # torch and transformers, once the weights are found
        from relate_anything.ram import RelationHead

        def loaded(name: str, field: str, started: float) -> None:
            if on_loaded is not None:
                on_loaded(LoadedModel(name, references[field][0], str(device), time.perf_counter() - started))

        with weights.no_loading_bars():
            segmenter = self._segmenter(paths["sam"], device, embedding_cache_size, on_loaded)
            started = time.perf_counter()
            relation_head = RelationHead.from_checkpoint(paths["ram"]).to(device)
            loaded(weights.RAM_WEIGHTS.name, "ram", started)
            # A head of another token width fails now, before the optional models load (the
            # pipeline records the same check's warning).
            relation_head.config.check_tokens(feature_dim=segmenter.feature_dim, segmenter=segmenter.name)
            labeler = detector = example_segmenter = video_tracker = None
            if self.labeler is not None:
                from relate_anything.naming import Labeler

                started = time.perf_counter()
                options = {} if self.label_threshold is None else {"threshold": self.label_threshold}
                labeler = Labeler.from_pretrained(paths["labeler"], device=device, **options)
                loaded(weights.LABELER_WEIGHTS.name, "labeler", started)
            if self.detector is not None:
                from relate_anything.naming import Detector

                started = time.perf_counter()
                detector = Detector.from_pretrained(paths["detector"], device=device)
                loaded(weights.DETECTOR_WEIGHTS.name, "detector", started)
            if self.seggpt is not None:
                from relate_anything.seggpt import ExampleSegmenter

                started = time.perf_counter()
                example_segmenter = ExampleSegmenter.from_pretrained(paths["seggpt"], device=device)
                loaded(weights.SEGGPT_WEIGHTS.name, "seggpt", started)
            if self.sam2 is not None:
                from relate_anything.video.sam2 import Sam2VideoTracker

                started = time.perf_counter()
                video_tracker = Sam2VideoTracker.from_pretrained(
                    paths["sam2"], device=device, dtype=parse_dtype(self.dtype)
                )
                loaded(weights.SAM2_WEIGHTS.name, "sam2", started)
        return RelateAnything(
            segmenter,
            relation_head,
            settings=self.settings,
            top_k=self.top_k,
            labeler=labeler,
            vocabulary=vocabulary,
            detector=detector,
            example_segmenter=example_segmenter,
            video_tracker=video_tracker,
        )

    def _segmenter(
        self, path: Path, device: str, embedding_cache_size: int, on_loaded: Callable[[LoadedModel], None] | None
    ) -> Segmenter:
        from relate_anything.cpu_allocator import reuse_freed_memory
        from relate_anything.sam import Segmenter, load_segmentation_model

        reuse_freed_memory(device)  # on CPUs, fewer page faults: ~1.2x faster (see cpu_allocator)
        started = time.perf_counter()
        # SAM, SAM-HQ or SAM 2's image model, by the config's model_type (checkpoint files: SAM).
        model = load_segmentation_model(path, device=device, dtype=parse_dtype(self.dtype))
        reference = weights.SAM_WEIGHTS.reference(self.sam)
        if on_loaded is not None:
            name = segmenter_name(model) + ("" if self.dtype == "float32" else f" in {self.dtype}")
            on_loaded(LoadedModel(name, reference, str(device), time.perf_counter() - started))
        return Segmenter(
            model,
            settings=self.settings,
            points_per_batch=self.points_per_batch,
            embedding_cache_size=embedding_cache_size,
            decoder=self.decoder,
            name=reference,
        )


@dataclass(frozen=True)
class LoadedModel:
    """A model that `PipelineSpec.build` has loaded: what the commands report, one line each.

    Attributes:
        name: what it is ("SAM ViT-H", "RAM relation head", "labeler (CLIP/SigLIP)", ...).
        reference: where its weights came from, as given (hub id, hf:// reference or path).
        device: where it runs.
        seconds: the time it took to load (reading and placing the weights).
    """

    name: str
    reference: str
    device: str
    seconds: float

    def __str__(self) -> str:
        return f"loaded {self.name} ({self.reference}) on {self.device} in {self.seconds:.1f} s"


def segmenter_name(model: Any) -> str:
    """What a segmentation model is, for the loaded-model line: "SAM ViT-H", "SAM-HQ ViT-L",
    "SAM 2" (by the config's model_type)."""
    kind = getattr(model.config, "model_type", "sam")
    if kind.startswith("sam2"):
        return "SAM 2"
    return ("SAM-HQ " if kind == "sam_hq" else "SAM ") + sam_variant(model.config)


def sam_variant(config: Any) -> str:
    """SAM's image encoder by name: "ViT-B", "ViT-L" or "ViT-H" (the published ones), else
    "ViT WIDTHxDEPTH"."""
    vision = config.vision_config
    shape = (vision.hidden_size, vision.num_hidden_layers)
    return {(768, 12): "ViT-B", (1024, 24): "ViT-L", (1280, 32): "ViT-H"}.get(shape, f"ViT {shape[0]}x{shape[1]}")


def check_top_k(top_k: int) -> int:
    """`top_k` if it is a whole number >= 0 (0 keeps no relation); else `UsageError`."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise UsageError(f"top_k must be a whole number >= 0, got {top_k!r}")
    return top_k
