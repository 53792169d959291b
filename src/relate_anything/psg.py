"""PSG's vocabulary: 133 categories (80 things, 53 stuff) and 56 predicates, in dataset order.

The lists are data shipped with the package (data/psg_meta.json, as published with PSG), so
that no module repeats them.
"""

import json
from functools import cache
from importlib import resources


@cache
def _meta() -> dict[str, tuple[str, ...]]:
    text = resources.files("relate_anything").joinpath("data/psg_meta.json").read_text()
    return {key: tuple(names) for key, names in json.loads(text).items()}


def thing_classes() -> tuple[str, ...]:
    """PSG's 80 thing categories (COCO's), category ids 0-79."""
    return _meta()["thing_classes"]


def stuff_classes() -> tuple[str, ...]:
    """PSG's 53 stuff categories, category ids 80-132."""
    return _meta()["stuff_classes"]


def categories() -> tuple[str, ...]:
    """All 133 category names; the index is PSG's 0-based category id."""
    return thing_classes() + stuff_classes()


def predicates() -> tuple[str, ...]:
    """PSG's 56 predicate names; the index is the predicate id the relation head scores."""
    return _meta()["predicate_classes"]
