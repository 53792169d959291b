"""Finding things by text: rank existing segments by a phrase, or detect boxes for phrases.

- `find_segments` ranks the segments SAM already found by region–sentence alignment with a
  phrase (the labeler's model; no new masks).
- `Detector` runs a text-conditioned detector (OWLv2) for things the point grid missed and
  returns boxes; the pipeline prompts SAM with them, giving masks with SAM features that join the
  graph like any other segment, already named by their phrase.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from relate_anything.errors import RelateAnythingError
from relate_anything.image_io import check_rgb
from relate_anything.naming.hub import resolve_model_folder
from relate_anything.naming.labeler import Labeler, load_text_image_model, tokenize
from relate_anything.naming.preprocess import Normalization, owlv2_boxes_to_image, owlv2_pixels
from relate_anything.naming.vocabulary import VocabularyEntry
from relate_anything.sam.ops import nms
from relate_anything.scene_graph import SceneGraph
from relate_anything.weights import DETECTOR_WEIGHTS

__all__ = ["Detection", "Detector", "find_segments", "phrase_scores"]


def find_segments(
    labeler: Labeler,
    image: np.ndarray,
    graph: SceneGraph,
    phrase: str,
    *,
    region_embeddings: torch.Tensor | None = None,
) -> list[tuple[int, float]]:
    """Segments of `graph` ranked by how well they match `phrase`, best first.

    The phrase is one vocabulary entry (its template sentences averaged, as in labelling), aligned
    with every region embedding in one matrix product. Scores:
    - CLIP: softmax over the graph's segments of the scaled cosine (CLIP's text-to-image
      direction: which region the phrase refers to; they sum to 1 over the segments);
    - SigLIP: the sigmoid probability of each (segment, phrase) pair, independent per segment.

    Args:
        labeler: the CLIP-family model.
        image: the graph's photo, [H, W, 3] uint8 RGB.
        graph: the segments to search.
        phrase: free text ("the dog", "red umbrella").
        region_embeddings: [N, D] from `labeler.embed_regions(image, graph)`, to search several
            phrases without re-embedding the regions (then `image` is not read).

    Returns:
        [(segment_id, score)] for every segment, by decreasing score (ties keep segment order).
    """
    if not graph.segments:
        return []
    regions = labeler.embed_regions(image, graph) if region_embeddings is None else region_embeddings
    if len(regions) != len(graph.segments):
        raise ValueError(f"region_embeddings has {len(regions)} rows for {len(graph.segments)} segments")
    scores = phrase_scores(labeler, regions, phrase)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    return [(graph.segments[i].id, round(float(scores[i]), 6)) for i in order]


def phrase_scores(labeler: Labeler, region_embeddings: torch.Tensor, phrase: str) -> torch.Tensor:
    """[N] how well each of N embedded regions matches `phrase` (see `find_segments` for the
    scores of each model family); regions may be segments of a photo or tracks of a clip."""
    entry = VocabularyEntry.from_name(phrase)
    text = torch.nn.functional.normalize(labeler.embed_texts(list(entry.prompts)).mean(dim=0, keepdim=True), dim=-1)
    logits = labeler.alignment(region_embeddings, text)[:, 0]
    return logits.sigmoid() if labeler.family == "siglip" else logits.softmax(dim=0)


class Detection(NamedTuple):
    """A detected box: xyxy in original image pixels (float), the phrase, its score in [0, 1]."""

    box: tuple[float, float, float, float]
    phrase: str
    score: float


class Detector:
    """OWLv2 (`Owlv2ForObjectDetection`): boxes for free-text phrases.

    Args:
        model: an `Owlv2ForObjectDetection`, in eval mode.
        tokenizer: its (CLIP) tokenizer.
        normalization: input size, mean and std (default: OpenAI CLIP's at the vision config's size).
        nms_threshold: boxes of the same phrase overlapping a better one by more than this IoU are
            dropped (OWLv2 predicts one box per image patch, so a large object gets many); None
            keeps all.

    Example:
        >>> detector = Detector.from_pretrained(device="cuda")
        >>> detector.detect(pixels, ["a dog", "a stick"], threshold=0.2)
        [Detection(box=(12.0, 40.5, 300.2, 410.0), phrase='a dog', score=0.61), ...]
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        normalization: Normalization | None = None,
        nms_threshold: float | None = 0.3,
    ) -> None:
        if model.config.model_type != "owlv2":
            raise RelateAnythingError(f"the detector needs an OWLv2 model, got model_type {model.config.model_type!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.normalization = normalization or Normalization.from_folder(
            None, size=model.config.vision_config.image_size, model_type="owlv2"
        )
        self.nms_threshold = nms_threshold

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> Detector:
        """Load OWLv2 and its tokenizer from a folder or hub id.

        `name_or_path` None means $RELATE_ANYTHING_DETECTOR, else `google/owlv2-base-patch16-ensemble`.
        """
        folder = resolve_model_folder(name_or_path, DETECTOR_WEIGHTS)
        model, tokenizer = load_text_image_model(folder, ("owlv2",), device=device, dtype=dtype)
        size = model.config.vision_config.image_size
        normalization = Normalization.from_folder(folder, size=size, model_type="owlv2")
        return cls(model, tokenizer, normalization=normalization, **options)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def detect(self, image: np.ndarray, phrases: Sequence[str], *, threshold: float = 0.1) -> list[Detection]:
        """Boxes for `phrases` in one photo, best first.

        Every box (one per image patch) goes to its best phrase, as transformers'
        `post_process_object_detection`; boxes scoring below `threshold` (sigmoid of OWLv2's
        class logit) or lying wholly in the square padding (zero size once clipped to the photo)
        are dropped, then per-phrase NMS.

        Args:
            image: [H, W, 3] uint8 RGB.
            phrases: free-text queries ("a dog"); at least one.
            threshold: minimum score in [0, 1].
        """
        phrases = [" ".join(phrase.split()) for phrase in phrases]
        if not phrases or not all(phrases):
            raise RelateAnythingError("give at least one non-empty phrase to detect")
        check_rgb(image)
        pixels = owlv2_pixels(image, self.normalization, device=self.device).to(next(self.model.parameters()).dtype)
        tokens = tokenize(self.tokenizer, phrases, self.model.config, "owlv2")
        output = self.model(pixel_values=pixels, **{k: v.to(self.device) for k, v in tokens.items()})
        logits = output.logits[0].float()  # [patches, phrases]
        scores, labels = logits.sigmoid().max(dim=-1)
        boxes = owlv2_boxes_to_image(output.pred_boxes[0], image.shape[:2])
        # Boxes wholly in the padding clip to zero width or height: nothing there to segment.
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        keep = torch.nonzero((scores >= threshold) & visible).flatten()
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if self.nms_threshold is not None and len(keep):
            # One NMS for all phrases: shifting each phrase's boxes apart keeps them independent.
            offsets = labels[:, None].float() * (boxes.max() + 1)
            keep = nms(boxes + offsets, scores, self.nms_threshold)
        else:
            keep = torch.sort(scores, descending=True, stable=True).indices
        return [
            Detection(
                box=tuple(round(v, 3) for v in boxes[i].tolist()),
                phrase=phrases[labels[i]],
                score=round(float(scores[i]), 6),
            )
            for i in keep.tolist()
        ]
