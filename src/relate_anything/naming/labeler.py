"""Naming segments APE's way: region–sentence alignment against a vocabulary of independent prompts.

Each vocabulary entry is one sentence-level embedding (its template sentences encoded by the
text tower, normalised and averaged, `Vocabulary`). Each segment is one region embedding: the
image tower applied to a crop of the segment with the background outside its mask suppressed
(`preprocess.region_crops`). All segments are scored against all entries with one matrix
product; a segment whose best score is below the threshold stays unnamed, so irrelevant prompts
are rejected rather than forced onto every region.

Scores by model family:
- CLIP: cosine similarity x the learned logit scale, softmax over the vocabulary (the
  probability that the entry, among the vocabulary, names the region).
- SigLIP: cosine x scale + bias, sigmoid (an independent probability per entry, as trained).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from relate_anything.errors import CheckpointError, RelateAnythingError
from relate_anything.image_io import check_rgb
from relate_anything.naming.hub import resolve_model_folder
from relate_anything.naming.preprocess import Normalization, region_crops
from relate_anything.naming.vocabulary import Vocabulary
from relate_anything.scene_graph import SceneGraph
from relate_anything.state_dicts import load_pretrained_folder
from relate_anything.weights import LABELER_WEIGHTS

__all__ = ["DEFAULT_THRESHOLDS", "Labeler", "Names", "load_text_image_model"]

#: Default minimum label score per model family. Untuned guesses for the published base models:
#: CLIP's softmax over PSG's 133 names rarely exceeds 0.2 on a wrong region; SigLIP's sigmoid
#: probabilities are small even for right ones.
DEFAULT_THRESHOLDS = {"clip": 0.2, "siglip": 0.05}

_FAMILIES = ("clip", "siglip")
# Sentences per text-tower forward pass (short sequences: memory is small).
_TEXT_BATCH = 256


class Labeler:
    """Names segments with a CLIP-family model (CLIPModel or SiglipModel from transformers).

    Args:
        model: a `CLIPModel` or `SiglipModel`, in eval mode.
        tokenizer: its tokenizer (any transformers tokenizer).
        normalization: the image tower's input size, mean and std (default: the family's
            published values at the vision config's image size).
        threshold: minimum label score for a segment to be named (default per family,
            `DEFAULT_THRESHOLDS`).
        batch_size: region crops per forward pass of the image tower; all crops of an image go
            through in fixed-size chunks of this many (bounds memory for images with many segments).
        margin: context around each bbox, as a fraction of its longer side (see `region_crops`).
        vocabulary_cache_size: text embeddings of this many recent vocabularies are kept (a
            server's clients may send a new vocabulary with every request).

    Example:
        >>> labeler = Labeler.from_pretrained("openai/clip-vit-base-patch32", device="cuda")
        >>> graph = labeler.label(pixels, graph, Vocabulary.parse("dog,stick,sand"))
        >>> [(s.label, s.label_score) for s in graph.segments]
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        normalization: Normalization | None = None,
        threshold: float | None = None,
        batch_size: int = 64,
        margin: float = 0.1,
        vocabulary_cache_size: int = 16,
    ) -> None:
        model_type = model.config.model_type
        if model_type not in _FAMILIES:
            raise CheckpointError(f"the labeler needs a CLIP or SigLIP model, got model_type {model_type!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        if margin < 0:
            raise ValueError("margin must be >= 0")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.family = model_type
        self.normalization = normalization or Normalization.from_folder(
            None, size=model.config.vision_config.image_size, model_type=model_type
        )
        self.threshold = DEFAULT_THRESHOLDS[self.family] if threshold is None else float(threshold)
        self.batch_size = batch_size
        self.margin = margin
        self.vocabulary_cache_size = vocabulary_cache_size
        self._text_cache: OrderedDict[Vocabulary, torch.Tensor] = OrderedDict()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> Labeler:
        """Load a CLIP or SigLIP model and its tokenizer from a folder or a hub id.

        `name_or_path` None means $RELATE_ANYTHING_LABELER, else `openai/clip-vit-base-patch32`.
        `options` are constructor keyword arguments (threshold, batch_size, margin).

        Raises:
            WeightsNotFoundError: the weights are not on disk and cannot be downloaded.
            CheckpointError: the folder holds no CLIP/SigLIP model or tokenizer.
        """
        folder = resolve_model_folder(name_or_path, LABELER_WEIGHTS)
        model, tokenizer = load_text_image_model(folder, ("clip", "siglip"), device=device, dtype=dtype)
        normalization = Normalization.from_folder(
            folder, size=model.config.vision_config.image_size, model_type=model.config.model_type
        )
        return cls(model, tokenizer, normalization=normalization, **options)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def name(self) -> str:
        """Where the weights came from (hub id or folder), else the model class."""
        return getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__

    # ------------------------------------------------------------------------------------------
    # Embeddings

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """[T, D] float32 unit-norm text embeddings of sentences (256 per text-tower pass)."""
        outputs = []
        for start in range(0, len(texts), _TEXT_BATCH):
            tokens = tokenize(self.tokenizer, texts[start : start + _TEXT_BATCH], self.model.config, self.family)
            features = _features(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))
            outputs.append(torch.nn.functional.normalize(features.float(), dim=-1))
        return torch.cat(outputs)

    def embed_vocabulary(self, vocabulary: Vocabulary) -> torch.Tensor:
        """[V, D] float32: per entry, the mean of its prompts' unit embeddings, renormalised.

        Cached per vocabulary (the `vocabulary_cache_size` most recent), so labelling many images
        encodes the vocabulary once.
        """
        if vocabulary in self._text_cache:
            self._text_cache.move_to_end(vocabulary)
        else:
            prompts = [prompt for entry in vocabulary.entries for prompt in entry.prompts]
            embeddings = self.embed_texts(prompts)
            sizes = [len(entry.prompts) for entry in vocabulary.entries]
            means = torch.stack([part.mean(dim=0) for part in embeddings.split(sizes)])
            self._text_cache[vocabulary] = torch.nn.functional.normalize(means, dim=-1)
            while len(self._text_cache) > max(self.vocabulary_cache_size, 1):
                self._text_cache.popitem(last=False)
        return self._text_cache[vocabulary]

    @torch.inference_mode()
    def embed_masks(self, image: np.ndarray, masks: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[N, D] float32 unit-norm region embeddings of boolean masks [N, H, W] on `image`.

        Args:
            image: [H, W, 3] uint8 RGB.
            masks: [N, H, W] bool, numpy or torch on any device (moved to the model's device).
        """
        masks = torch.as_tensor(masks).to(self.device)
        if len(masks) == 0:
            return torch.zeros(0, self.embed_texts([""]).shape[1], device=self.device)
        outputs = []
        for chunk in masks.split(self.batch_size):
            crops = region_crops(image, chunk, self.normalization, margin=self.margin)
            features = _features(self.model.get_image_features(pixel_values=crops.to(self.dtype)))
            outputs.append(torch.nn.functional.normalize(features.float(), dim=-1))
        return torch.cat(outputs)

    def embed_regions(self, image: np.ndarray, graph: SceneGraph) -> torch.Tensor:
        """[N, D] region embeddings of the graph's segments, in segment order.

        Masks are decoded `batch_size` at a time, so a large photo with many segments never
        holds all its masks decoded at once.
        """
        _check_image(image, graph)
        if not graph.segments:
            return self.embed_masks(image, np.zeros((0, graph.height, graph.width), dtype=bool))
        chunks = [graph.segments[i : i + self.batch_size] for i in range(0, len(graph.segments), self.batch_size)]
        return torch.cat([self.embed_masks(image, np.stack([s.decode() for s in chunk])) for chunk in chunks])

    # ------------------------------------------------------------------------------------------
    # Scoring

    def alignment(self, region_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """[N, V] logits: cosine similarity x the model's logit scale (+ bias for SigLIP), one matmul."""
        regions = torch.nn.functional.normalize(region_embeddings.float(), dim=-1)
        texts = torch.nn.functional.normalize(text_embeddings.float(), dim=-1).to(regions.device)
        if regions.shape[-1] != texts.shape[-1]:
            raise ValueError(f"embedding sizes differ: regions {tuple(regions.shape)}, texts {tuple(texts.shape)}")
        logits = regions @ texts.T * self.model.logit_scale.detach().float().exp().to(regions.device)
        if self.family == "siglip":
            logits = logits + self.model.logit_bias.detach().float().to(regions.device)
        return logits

    def score(self, region_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """[N, V] label scores: softmax over the V entries (CLIP) or sigmoid per entry (SigLIP)."""
        logits = self.alignment(region_embeddings, text_embeddings)
        return logits.sigmoid() if self.family == "siglip" else logits.softmax(dim=-1)

    # ------------------------------------------------------------------------------------------
    # Scene graphs

    def name_masks(
        self, image: np.ndarray, masks: torch.Tensor | np.ndarray, vocabulary: Vocabulary | None = None
    ) -> Names:
        """Names for boolean masks [N, H, W] (e.g. `SegmentationResult.masks`, on any device).

        Returns `Names` whose fields are `SceneGraph.from_masks` keyword arguments:
        `SceneGraph.from_masks(masks, scores, **labeler.name_masks(image, masks)._asdict())`.
        Masks scoring below `threshold` get None in all three lists.
        """
        if len(masks) == 0:
            return Names([], [], [])
        return self.names(self.embed_masks(image, masks), vocabulary)

    def names(self, region_embeddings: torch.Tensor, vocabulary: Vocabulary | None = None) -> Names:
        """Names for regions already embedded ([N, D] from `embed_masks` or `embed_regions`), so
        that one embedding of the crops serves naming and finding alike."""
        vocabulary = vocabulary or Vocabulary.psg()
        if len(region_embeddings) == 0:
            return Names([], [], [])
        scores = self.score(region_embeddings, self.embed_vocabulary(vocabulary))
        best_scores, best = scores.max(dim=1)
        names = Names([], [], [])
        for index, score in zip(best.tolist(), best_scores.tolist()):
            entry = vocabulary.entries[index] if score >= self.threshold else None
            names.labels.append(None if entry is None else entry.name)
            names.label_scores.append(None if entry is None else round(score, 6))
            names.category_ids.append(None if entry is None else entry.category_id)
        return names

    def label(self, image: np.ndarray, graph: SceneGraph, vocabulary: Vocabulary | None = None) -> SceneGraph:
        """Name every segment of `graph` with its best vocabulary entry.

        Args:
            image: the graph's photo, [H, W, 3] uint8 RGB.
            graph: segments to name (relations are kept as they are).
            vocabulary: names to choose from (default: PSG's 133 classes, `Vocabulary.psg()`).

        Returns:
            A copy of `graph` whose segments have `label`, `label_score` and `category_id` (None
            for entries without one) from the best entry; segments whose best score is below
            `threshold` get label, label_score and category_id None.
        """
        if not graph.segments:
            return graph
        names = self.names(self.embed_regions(image, graph), vocabulary)
        segments = [
            replace(segment, label=label, label_score=label_score, category_id=category_id)
            for segment, label, label_score, category_id in zip(graph.segments, *names)
        ]
        return replace(graph, segments=segments)


class Names(NamedTuple):
    """Per-mask names, in mask order; None where the best score is below the threshold."""

    labels: list[str | None]
    label_scores: list[float | None]
    category_ids: list[int | None]


def _check_image(image: np.ndarray, graph: SceneGraph) -> None:
    check_rgb(image)
    if image.shape[:2] != (graph.height, graph.width):
        raise RelateAnythingError(
            f"image is {image.shape[1]}x{image.shape[0]} but the scene graph is {graph.width}x{graph.height}"
        )


def _features(output: Any) -> torch.Tensor:
    """Projected embeddings from get_*_features: a tensor (transformers 4) or an output's pooler_output (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def tokenize(tokenizer: Any, texts: list[str], config: Any, family: str) -> dict[str, torch.Tensor]:
    """Token ids (and attention mask) for the text tower, padded as the family was trained.

    SigLIP pads to its full context ("max_length", as in training: its pooled token is the last
    position), OWLv2 too (as `Owlv2Processor`); CLIP pads to the longest text. Texts longer than the tower's context are
    truncated.
    """
    context = config.text_config.max_position_embeddings
    padding = "max_length" if family in ("siglip", "owlv2") else True
    tokens = tokenizer(texts, padding=padding, max_length=context, truncation=True, return_tensors="pt")
    return {key: value for key, value in tokens.items() if key in ("input_ids", "attention_mask")}


def load_text_image_model(
    folder: Path, families: tuple[str, ...], *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """The transformers model and tokenizer in `folder`, chosen by its config's model_type.

    Raises:
        CheckpointError: no config/tokenizer, or a model_type outside `families`.
    """
    from transformers import AutoTokenizer

    model = load_pretrained_folder(
        folder, {family: _model_class(family) for family in families}, name="/".join(families)
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{folder}: cannot load the tokenizer: {error}") from error
    model = model.to(device=device, dtype=dtype).eval()
    return model, tokenizer


def _model_class(model_type: str) -> Any:
    import transformers

    return {
        "clip": transformers.CLIPModel,
        "siglip": transformers.SiglipModel,
        "owlv2": transformers.Owlv2ForObjectDetection,
    }[model_type]
