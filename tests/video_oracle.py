"""An oracle segmenter for video tests: the true masks of a synthetic scene, with noise.

`OracleSegmenter` answers the calls a tracker makes of SAM's `Segmenter` from the ground truth
of the frame it holds: "segment everything" gives every visible object's true mask (a few
boundary pixels flipped at random), a box prompt gives the visible object whose box fits the
prompt best, and each mask's feature is its object's fixed random vector plus noise. So a
tracker's identities can be checked exactly against the objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from relate_anything.boxes import masks_to_xyxy, masks_to_xyxy_inclusive
from relate_anything.sam import SegmentationResult
from relate_anything.settings import SegmentSettings

FEATURE_DIM = 32


@dataclass(frozen=True)
class Scene:
    """Per frame, the visible mask [H, W] bool of each object id (occlusion already applied)."""

    frames: list[dict[int, np.ndarray]]
    height: int
    width: int


def scene_of(graph) -> Scene:
    """The `Scene` of a ground-truth `VideoSceneGraph` (e.g. a synthetic PVSG clip): per frame,
    each track's mask under its id."""
    frames = [{} for _ in range(graph.num_frames)]
    for track in graph.tracks:
        for item in track.frames:
            frames[item.frame][track.id] = item.decode()
    return Scene(frames, graph.height, graph.width)


def moving_boxes(frames: int = 24, height: int = 60, width: int = 80) -> Scene:
    """Four objects: 0 moves right, 1 moves left across 0 and in front of it (occludes it), 2
    enters at frame 6, 3 leaves at frame 10 and comes back at frame 13 (a 2-frame absence); a
    'stuff' floor (id 9) along the bottom is always there."""
    scene = []
    for t in range(frames):
        canvas = np.full((height, width), -1)
        floor = np.zeros((height, width), bool)
        floor[50:, :] = True
        canvas[floor] = 9
        boxes = {
            0: (5 + 2 * t, 10, 20 + 2 * t, 25),  # x0, y0, x1, y1 (edges)
            3: (60, 35, 72, 47) if not 10 <= t <= 11 else None,
            2: (30, 30, 42, 44) if t >= 6 else None,
            1: (65 - 2 * t, 14, 78 - 2 * t, 30),  # drawn last: in front of 0 where they cross
        }
        for object_id, box in boxes.items():
            if box is None:
                continue
            x0, y0, x1, y1 = (max(0, v) for v in box)
            canvas[y0:y1, x0:x1] = object_id
        scene.append({object_id: canvas == object_id for object_id in np.unique(canvas) if object_id >= 0})
    return Scene(scene, height, width)


class OracleSegmenter:
    """The subset of `relate_anything.sam.Segmenter` a tracker uses, answered from a `Scene`."""

    def __init__(self, scene: Scene, *, noise: float = 0.02, seed: int = 0) -> None:
        self.scene = scene
        self.noise = noise
        self.settings = SegmentSettings()
        self.device = torch.device("cpu")
        self.feature_dim = FEATURE_DIM
        self.rng = np.random.default_rng(seed)
        ids = sorted({i for frame in scene.frames for i in frame})
        self.embeddings = {i: self.rng.normal(size=FEATURE_DIM) for i in ids}
        self.frame = 0
        self.calls = {"everything": 0, "prompts": 0}

    @property
    def original_size(self) -> tuple[int, int]:
        return self.scene.height, self.scene.width

    def set_frame(self, t: int) -> None:
        self.frame = t

    # The pipeline's batched-encoder calls: an "embedding" is the frame's index, in call order.
    def embed_images(self, images) -> list[int]:
        start = getattr(self, "_embedded", 0)
        self._embedded = start + len(images)
        return list(range(start, start + len(images)))

    def set_embedding(self, embedding: int) -> None:
        self.set_frame(embedding)

    def _result(self, object_ids: list[int | None]) -> SegmentationResult:
        truth = self.scene.frames[self.frame]
        masks = []
        for object_id in object_ids:
            mask = truth[object_id].copy() if object_id is not None else np.zeros(self.original_size, bool)
            if object_id is not None:
                edge = mask ^ np.roll(mask, 1, axis=1)
                flip = edge & (self.rng.random(mask.shape) < self.noise * 10)
                mask ^= flip & mask  # lose a few boundary pixels
            masks.append(mask)
        masks_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, *self.original_size, dtype=torch.bool)
        features = [
            self.embeddings[i] + self.rng.normal(scale=0.1, size=FEATURE_DIM)
            if i is not None
            else np.zeros(FEATURE_DIM)
            for i in object_ids
        ]
        return SegmentationResult(
            masks=masks_t,
            iou_predictions=torch.full((len(masks),), 0.9),
            stability_scores=torch.ones(len(masks)),
            boxes=masks_to_xyxy_inclusive(masks_t),
            features=torch.tensor(np.array(features).reshape(-1, FEATURE_DIM), dtype=torch.float32),
        )

    def segment_everything(self, *, settings: SegmentSettings | None = None) -> SegmentationResult:
        self.calls["everything"] += 1
        ids = sorted(self.scene.frames[self.frame], key=lambda i: -self.scene.frames[self.frame][i].sum())
        return self._result(ids)

    def segment_prompts(self, *, boxes=None, multimask_output: bool = True, settings=None, **_) -> SegmentationResult:
        """Each box's object: the visible one whose box has the largest IoU with the prompt."""
        self.calls["prompts"] += 1
        truth = self.scene.frames[self.frame]
        ids = list(truth)
        chosen = []
        if ids:
            truth_boxes = masks_to_xyxy(torch.from_numpy(np.stack([truth[i] for i in ids]))).float()
        for box in torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4):
            if not ids:
                chosen.append(None)
                continue
            top_left = torch.maximum(truth_boxes[:, :2], box[:2])
            bottom_right = torch.minimum(truth_boxes[:, 2:], box[2:])
            inter = (bottom_right - top_left).clamp(min=0).prod(1)
            areas = (truth_boxes[:, 2:] - truth_boxes[:, :2]).prod(1)
            union = areas + (box[2:] - box[:2]).prod() - inter
            iou = inter / union
            best = int(iou.argmax())
            chosen.append(ids[best] if iou[best] > 0 else None)
        return self._result(chosen)
