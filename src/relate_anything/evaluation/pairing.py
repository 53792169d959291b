"""Which prediction belongs to which ground-truth image.

A prediction is looked up, first match wins, by:
1. its `image_id`, then its key (when predictions are a mapping), against ground-truth
   `image_id`s;
2. its `file`, then its key, against ground-truth `file`s (exact string);
3. the basename of its `file` or key, against ground-truth file basenames (must be unique);
4. the stem (basename without extension) likewise, so a prediction keyed `000000417720` (the
   CLI keys JSON files by stem) finds `val2017/000000417720.jpg`.
Two predictions for one image, or a prediction whose image size differs from its ground truth,
are errors. Ground-truth images without a prediction are scored as empty predictions and
counted; predictions that match no ground-truth image are ignored and counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath

from relate_anything.errors import UsageError
from relate_anything.scene_graph import SceneGraph

Predictions = Mapping[str, SceneGraph] | Sequence[SceneGraph]


class EvaluationError(UsageError):
    """Predictions and ground truth that cannot be scored together (sizes, duplicates, vocabularies)."""


@dataclass
class Pairing:
    """Ground-truth images in order, each with its prediction (None when it has none)."""

    pairs: list[tuple[SceneGraph | None, SceneGraph]]
    missing: list[str] = field(default_factory=list)  # ground-truth images without a prediction
    unmatched: list[str] = field(default_factory=list)  # predictions that match no ground truth


def image_name(graph: SceneGraph, fallback: str = "?") -> str:
    """How messages name an image: its dataset id, else its file, else `fallback`."""
    if graph.image_id is not None and graph.file:
        return f"{graph.image_id} ({graph.file})"
    return graph.image_id or graph.file or fallback


def ground_truth_list(ground_truth: Iterable[SceneGraph] | Mapping[str, SceneGraph]) -> list[SceneGraph]:
    """Ground-truth graphs as a list (a mapping's values; its keys play no part)."""
    return list(ground_truth.values()) if isinstance(ground_truth, Mapping) else list(ground_truth)


def pair_predictions(
    predictions: Predictions, ground_truth: Iterable[SceneGraph] | Mapping[str, SceneGraph]
) -> Pairing:
    """Match each prediction to its ground-truth image (rules in the module docstring)."""
    gts = ground_truth_list(ground_truth)
    index = _GroundTruthIndex(gts)
    items = list(predictions.items()) if isinstance(predictions, Mapping) else [(None, p) for p in predictions]
    chosen: dict[int, tuple[str, SceneGraph]] = {}
    unmatched = []
    for position, (key, prediction) in enumerate(items):
        label = key or image_name(prediction, fallback=f"prediction #{position}")
        gt_index = index.find(key, prediction)
        if gt_index is None:
            unmatched.append(label)
            continue
        gt = gts[gt_index]
        if gt_index in chosen:
            raise EvaluationError(f"image {image_name(gt)}: two predictions, {chosen[gt_index][0]} and {label}")
        if (prediction.height, prediction.width) != (gt.height, gt.width):
            raise EvaluationError(
                f"image {image_name(gt)}: prediction {label} is {prediction.width}x{prediction.height} pixels, "
                f"the ground truth {gt.width}x{gt.height}; masks must be at the original image size"
            )
        chosen[gt_index] = (label, prediction)
    pairs = [(chosen[i][1] if i in chosen else None, gt) for i, gt in enumerate(gts)]
    missing = [image_name(gt, fallback=f"ground truth #{i}") for i, gt in enumerate(gts) if i not in chosen]
    return Pairing(pairs=pairs, missing=missing, unmatched=unmatched)


class _GroundTruthIndex:
    def __init__(self, gts: list[SceneGraph]) -> None:
        self.by_id: dict[str, int] = {}
        self.by_file: dict[str, int] = {}
        self.by_base: dict[str, list[int]] = defaultdict(list)
        self.by_stem: dict[str, list[int]] = defaultdict(list)
        for i, gt in enumerate(gts):
            if gt.image_id is not None:
                if gt.image_id in self.by_id:
                    raise EvaluationError(f"ground truth lists image id {gt.image_id} twice")
                self.by_id[gt.image_id] = i
            if gt.file:
                self.by_file.setdefault(gt.file, i)
                self.by_base[_basename(gt.file)].append(i)
                self.by_stem[_stem(gt.file)].append(i)

    def find(self, key: str | None, prediction: SceneGraph) -> int | None:
        # the graph's own image id and file come before the key (e.g. a JSON file's stem)
        for name in (prediction.image_id, key):
            if name is not None and name in self.by_id:
                return self.by_id[name]
        names = [n for n in (prediction.file, key) if n]
        for name in names:
            if name in self.by_file:
                return self.by_file[name]
        for table, part in ((self.by_base, _basename), (self.by_stem, _stem)):
            for name in names:
                found = table.get(part(name), [])
                if len(found) > 1:
                    raise EvaluationError(
                        f"prediction {name}: {len(found)} ground-truth images are named {part(name)!r}; "
                        "give predictions an image id (the ground truth's image_id) or the full file path"
                    )
                if found:
                    return found[0]
        return None


def _basename(name: str) -> str:
    return PureWindowsPath(PurePosixPath(name).name).name


def _stem(name: str) -> str:
    return PurePosixPath(_basename(name)).stem
