"""PVSG's vocabulary: 126 classes (115 things, 11 stuff) and 57 predicates, in dataset order,
and how PSG's names map onto them.

The lists are data shipped with the package (data/pvsg_meta.json), in the order of pvsg.json's
`objects.thing`, `objects.stuff` and `relations`: a class index is its position in
thing + stuff, a predicate index its position in the (alphabetical) predicate list. The names
keep PVSG's own spellings ("ballon", "scissor", "vaccum").

PSG (images) and PVSG (video) name things differently: 39 predicates are spelled the same in
both, and our relation head predicts PSG's 56. `PSG_TO_PVSG_PREDICATES` and
`PSG_TO_PVSG_CATEGORIES` say which PSG names stand for which PVSG ones where the spelling
differs; docs/video_metrics.md lists them with the reasons. They are ours, not PVSG's.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

__all__ = [
    "PSG_TO_PVSG_CATEGORIES",
    "PSG_TO_PVSG_PREDICATES",
    "categories",
    "predicates",
    "stuff_classes",
    "thing_classes",
]


@cache
def _meta() -> dict[str, tuple[str, ...]]:
    text = resources.files("relate_anything").joinpath("data/pvsg_meta.json").read_text()
    return {key: tuple(names) for key, names in json.loads(text).items()}


def thing_classes() -> tuple[str, ...]:
    """PVSG's 115 thing classes, class indices 0-114 (alphabetical, as in pvsg.json)."""
    return _meta()["thing_classes"]


def stuff_classes() -> tuple[str, ...]:
    """PVSG's 11 stuff classes, class indices 115-125."""
    return _meta()["stuff_classes"]


def categories() -> tuple[str, ...]:
    """All 126 class names; the index is PVSG's 0-based class index (thing + stuff)."""
    return thing_classes() + stuff_classes()


def predicates() -> tuple[str, ...]:
    """PVSG's 57 predicate names (alphabetical); the index is PVSG's predicate index."""
    return _meta()["predicate_classes"]


# PSG predicate -> PVSG predicate, for the PSG names that PVSG spells differently. The 39 names
# the two share map to themselves and are not listed. PVSG has both "beside" and "next to"; PSG's
# "beside" maps to PVSG's "beside" (same name), and `eval-video --map-predicate beside="next to"`
# scores it as "next to" instead. PSG-only predicates with no PVSG counterpart ("attached to",
# "parked on", "flying over", ...) are left unmapped: they cannot match PVSG ground truth.
PSG_TO_PVSG_PREDICATES: dict[str, str] = {
    "drinking": "drinking from",
    "slicing": "cutting",
}

# PSG category -> PVSG class, for PSG names that PVSG spells differently (the 33 shared names,
# e.g. "dog", "bench", "sand", map to themselves). PVSG splits people into adult / child / baby;
# PSG's "person" maps to "adult", the commonest, so a PSG-vocabulary model can never match a
# child or a baby by class (the class-agnostic recall does not need classes). PSG's merged stuff
# classes map to the PVSG stuff they contain.
PSG_TO_PVSG_CATEGORIES: dict[str, str] = {
    "person": "adult",
    "bicycle": "bike",
    "sports ball": "ball",
    "backpack": "bag",
    "handbag": "bag",
    "suitcase": "bag",
    "baseball bat": "bat",
    "tennis racket": "racket",
    "wine glass": "glass",
    "cell phone": "cellphone",
    "laptop": "computer",
    "couch": "sofa",
    "dining table": "table",
    "potted plant": "plant",
    "refrigerator": "fridge",
    "scissors": "scissor",
    "teddy bear": "toy",
    "counter": "countertop",
    "door-stuff": "door",
    "window-other": "window",
    "window-blind": "window",
    "rug-merged": "carpet",
    "cabinet-merged": "cabinet",
    "table-merged": "table",
    "paper-merged": "paper",
    "fence-merged": "fence",
    "ceiling-merged": "ceiling",
    "floor-wood": "floor",
    "floor-other-merged": "floor",
    "grass-merged": "grass",
    "playingfield": "grass",
    "dirt-merged": "ground",
    "gravel": "ground",
    "pavement-merged": "ground",
    "road": "ground",
    "rock-merged": "rock",
    "mountain-merged": "rock",
    "sky-other-merged": "sky",
    "tree-merged": "tree",
    "wall-brick": "wall",
    "wall-stone": "wall",
    "wall-tile": "wall",
    "wall-wood": "wall",
    "wall-other-merged": "wall",
    "building-other-merged": "wall",
    "sea": "water",
    "river": "water",
    "water-other": "water",
}
