"""A synthetic PSG-format dataset: drawn scenes whose relations follow from their geometry.

Each image is a few horizontal bands of PSG stuff (sky over grass, sea over sand, a building over
a road, ...) with simple silhouettes of PSG things drawn on top (people, dogs, cars, buses,
benches, kites, boats, ...). Things are painted in order (farther, i.e. higher in the picture,
first), so the panoptic masks are the visible parts, as in PSG.

Relations are not sampled but derived from the painted masks by the rule functions below, so a
model that reads geometry can learn them and a test can check them on the masks read back:

- `in` / `enclosing`: A is surrounded by B (A ⊂ fill_holes(B); panoptic masks never overlap, so
  this is what "inside" means for them): "A in B", and "B enclosing A" for the same pair.
- `standing on` / `parked on` / `on`: more than half of the pixels just below A's lowest row
  belong to B, and B is not in front of A (people and animals stand, vehicles park, anything
  else is on).
- `in front of`: A and B are things, their whole shapes overlap, A was painted later and their
  visible masks touch.
- `flying over` / `over`: A is not standing on stuff (what is under it is a thing, or stuff that
  surrounds it, like the sky around a kite), it is entirely above thing B with at least one row
  between them, and their columns overlap (fliers fly over).
- `beside`: two things in the same vertical band (row ranges overlap by half the shorter one),
  A left of B, the gap between them no wider than the wider of the two.

The first rule that holds names the pair (in that order); pairs with none get no relation. Every
image has at least one relation (a scene without one is drawn again). The same seed gives the
same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from relate_anything import psg
from relate_anything.datasets.psg import write_psg
from relate_anything.scene_graph import Relation, SceneGraph

# -- shapes: boolean silhouettes [h, w] of a thing's bounding box, built from ellipses and rectangles


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as fractions of the box: y [h, 1], x [1, w] in (0, 1)."""
    yy, xx = np.ogrid[:h, :w]
    return (yy + 0.5) / h, (xx + 0.5) / w


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = _grid(h, w)
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def _rect(h: int, w: int, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
    y, x = _grid(h, w)
    return (y >= y0) & (y < y1) & (x >= x0) & (x < x1)


def _person(h: int, w: int) -> np.ndarray:
    head = _ellipse(h, w, 0.1, 0.5, 0.1, 0.25)
    legs = _rect(h, w, 0.6, 1, 0.22, 0.45) | _rect(h, w, 0.6, 1, 0.55, 0.78)
    return head | _rect(h, w, 0.19, 0.62, 0.12, 0.88) | legs


def _quadruped(h: int, w: int) -> np.ndarray:
    legs = _rect(h, w, 0.5, 1, 0.12, 0.22) | _rect(h, w, 0.5, 1, 0.3, 0.4) | _rect(h, w, 0.5, 1, 0.62, 0.72)
    return _ellipse(h, w, 0.45, 0.45, 0.22, 0.38) | _ellipse(h, w, 0.25, 0.85, 0.2, 0.14) | legs


def _vehicle(h: int, w: int) -> np.ndarray:
    wheels = _ellipse(h, w, 0.82, 0.22, 0.18, 0.09) | _ellipse(h, w, 0.82, 0.78, 0.18, 0.09)
    return _rect(h, w, 0.3, 0.85, 0, 1) | _rect(h, w, 0, 0.35, 0.2, 0.75) | wheels


def _bus(h: int, w: int) -> np.ndarray:
    wheels = _ellipse(h, w, 0.88, 0.2, 0.12, 0.07) | _ellipse(h, w, 0.88, 0.8, 0.12, 0.07)
    return _rect(h, w, 0, 0.88, 0, 1) | wheels


def _bench(h: int, w: int) -> np.ndarray:
    return _rect(h, w, 0, 0.35, 0, 1) | _rect(h, w, 0.3, 1, 0.05, 0.15) | _rect(h, w, 0.3, 1, 0.85, 0.95)


def _disc(h: int, w: int) -> np.ndarray:
    return _ellipse(h, w, 0.5, 0.5, 0.5, 0.5)


def _kite(h: int, w: int) -> np.ndarray:
    y, x = _grid(h, w)
    return np.abs(y - 0.5) * 2 + np.abs(x - 0.5) * 2 <= 1


def _airplane(h: int, w: int) -> np.ndarray:
    return _ellipse(h, w, 0.5, 0.5, 0.2, 0.5) | _rect(h, w, 0.05, 0.95, 0.4, 0.52) | _rect(h, w, 0.2, 0.5, 0.02, 0.1)


def _boat(h: int, w: int) -> np.ndarray:
    y, x = _grid(h, w)
    hull = (y >= 0.6) & (np.abs(x - 0.5) <= 0.5 - (y - 0.6) * 0.6)
    sail = (y >= 0.05) & (y < 0.6) & (x >= 0.5) & (x - 0.5 <= (y - 0.05) * 0.6)
    return hull | sail | _rect(h, w, 0.05, 0.6, 0.45, 0.5)


def _umbrella(h: int, w: int) -> np.ndarray:
    return (_ellipse(h, w, 0.4, 0.5, 0.4, 0.5) & _rect(h, w, 0, 0.4, 0, 1)) | _rect(h, w, 0.35, 1, 0.46, 0.54)


def _bird(h: int, w: int) -> np.ndarray:
    return _ellipse(h, w, 0.5, 0.5, 0.5, 0.5) | _ellipse(h, w, 0.3, 0.8, 0.3, 0.2)


def _bag(h: int, w: int) -> np.ndarray:
    return _ellipse(h, w, 0.55, 0.5, 0.45, 0.5) | _rect(h, w, 0, 0.3, 0.3, 0.7)


@dataclass(frozen=True)
class _Kind:
    """How to draw one PSG thing class: silhouette, height as a fraction of the image, width/height."""

    shape: Callable[[int, int], np.ndarray]
    height: tuple[float, float]
    aspect: float
    colour: tuple[int, int, int]


THINGS: dict[str, _Kind] = {
    "person": _Kind(_person, (0.25, 0.42), 0.42, (200, 60, 60)),
    "dog": _Kind(_quadruped, (0.12, 0.18), 1.5, (140, 90, 40)),
    "horse": _Kind(_quadruped, (0.25, 0.32), 1.3, (100, 60, 30)),
    "cow": _Kind(_quadruped, (0.18, 0.26), 1.5, (235, 235, 225)),
    "sheep": _Kind(_quadruped, (0.12, 0.16), 1.4, (245, 245, 240)),
    "cat": _Kind(_quadruped, (0.07, 0.1), 1.4, (90, 90, 90)),
    "car": _Kind(_vehicle, (0.16, 0.22), 2.0, (40, 80, 200)),
    "truck": _Kind(_vehicle, (0.22, 0.3), 2.2, (230, 180, 30)),
    "motorcycle": _Kind(_vehicle, (0.12, 0.16), 1.5, (30, 30, 30)),
    "bus": _Kind(_bus, (0.3, 0.42), 2.2, (240, 200, 0)),
    "bench": _Kind(_bench, (0.1, 0.15), 2.2, (120, 80, 50)),
    "umbrella": _Kind(_umbrella, (0.28, 0.36), 1.0, (220, 40, 140)),
    "sports ball": _Kind(_disc, (0.04, 0.06), 1.0, (250, 250, 250)),
    "backpack": _Kind(_bag, (0.06, 0.09), 0.8, (20, 120, 60)),
    "kite": _Kind(_kite, (0.08, 0.13), 0.8, (255, 90, 0)),
    "bird": _Kind(_bird, (0.04, 0.06), 1.6, (50, 50, 60)),
    "airplane": _Kind(_airplane, (0.08, 0.12), 2.5, (210, 210, 220)),
    "frisbee": _Kind(_disc, (0.025, 0.035), 2.5, (255, 40, 40)),
    "boat": _Kind(_boat, (0.14, 0.22), 1.4, (250, 250, 250)),
}

STUFF_COLOURS: dict[str, tuple[int, int, int]] = {
    "sky-other-merged": (120, 170, 235),
    "grass-merged": (70, 150, 60),
    "sea": (30, 90, 160),
    "sand": (220, 200, 150),
    "building-other-merged": (150, 130, 120),
    "road": (80, 80, 85),
    "mountain-merged": (110, 100, 95),
    "snow": (245, 245, 250),
    "tree-merged": (30, 100, 40),
    "playingfield": (90, 170, 80),
}

STANDING = {"person", "dog", "horse", "cow", "sheep", "cat", "bird"}
PARKED = {"car", "truck", "motorcycle", "bus", "bicycle"}
FLYING = {"kite", "bird", "airplane", "frisbee"}


@dataclass(frozen=True)
class _Template:
    """A kind of scene: stuff bands top to bottom and the things that may appear where."""

    bands: tuple[str, ...]  # the first is the sky, the last the ground things stand on
    ground: tuple[str, ...]
    fliers: tuple[str, ...] = ()
    floating: tuple[str, ...] = ()  # things that sit inside the middle band (boats in the sea)
    on_top: dict[str, tuple[str, ...]] | None = None  # support class -> things put on it
    inside: dict[str, tuple[str, ...]] | None = None  # container class -> things drawn within it


TEMPLATES = (
    _Template(
        ("sky-other-merged", "grass-merged"),
        ground=("person", "dog", "horse", "cow", "sheep", "bench", "umbrella"),
        fliers=("kite", "bird", "frisbee"),
        on_top={"bench": ("sports ball", "cat", "backpack")},
    ),
    _Template(
        ("sky-other-merged", "sea", "sand"),
        ground=("person", "dog", "umbrella"),
        fliers=("kite", "bird", "airplane"),
        floating=("boat",),
    ),
    _Template(
        ("sky-other-merged", "building-other-merged", "road"),
        ground=("person", "car", "bus", "truck", "motorcycle", "dog"),
        fliers=("bird", "airplane"),
        on_top={"car": ("cat",)},
        inside={"bus": ("person",), "car": ("dog",)},
    ),
    _Template(("sky-other-merged", "mountain-merged", "snow"), ground=("person", "dog"), fliers=("bird", "airplane")),
    _Template(
        ("sky-other-merged", "tree-merged", "playingfield"),
        ground=("person", "dog", "sports ball", "bench"),
        fliers=("frisbee", "kite"),
        on_top={"bench": ("backpack",)},
    ),
)


# -- relation rules on the painted masks ----------------------------------------------------------


def is_inside(a: np.ndarray, b_filled: np.ndarray) -> bool:
    """A [H, W] lies within B: no pixel of A outside B with its holes filled (`b_filled`)."""
    return bool(a.any()) and not (a & ~b_filled).any()


def touches(a: np.ndarray, b: np.ndarray) -> bool:
    """Masks A and B [H, W] share a pixel edge (4-neighbourhood)."""
    vertical = (a[1:] & b[:-1]).any() or (a[:-1] & b[1:]).any()
    return bool(vertical or (a[:, 1:] & b[:, :-1]).any() or (a[:, :-1] & b[:, 1:]).any())


def support_of(a: np.ndarray, label_map: np.ndarray) -> int | None:
    """The segment that more than half of the pixels just below A's lowest row belong to, if any.

    `label_map` [H, W] holds each pixel's segment index; None at the image's bottom or without a
    strict majority.
    """
    bottom = int(np.flatnonzero(a.any(axis=1))[-1])
    if bottom + 1 >= len(label_map):
        return None
    counts = np.bincount(label_map[bottom + 1, a[bottom]])
    return int(counts.argmax()) if 2 * counts.max() > counts.sum() else None


def is_above(a: np.ndarray, b: np.ndarray) -> bool:
    """A ends at least one row above B's first row, and their columns overlap."""
    rows_a, cols_a, rows_b, cols_b = *_extent(a), *_extent(b)
    return rows_a[1] < rows_b[0] - 1 and cols_a[0] <= cols_b[1] and cols_b[0] <= cols_a[1]


def is_beside(a: np.ndarray, b: np.ndarray) -> bool:
    """A is left of B in the same vertical band, the gap no wider than the wider of the two."""
    (ay0, ay1), (ax0, ax1) = _extent(a)
    (by0, by1), (bx0, bx1) = _extent(b)
    shared_rows = min(ay1, by1) - max(ay0, by0) + 1
    gap = bx0 - ax1 - 1
    return shared_rows >= 0.5 * min(ay1 - ay0 + 1, by1 - by0 + 1) and 0 <= gap <= max(ax1 - ax0, bx1 - bx0) + 1


def _extent(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """(first, last) row and (first, last) column of a non-empty mask, inclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))


def derive_relations(visible: np.ndarray, amodal: np.ndarray, labels: list[str]) -> list[tuple[int, int, str]]:
    """(subject, object, predicate) triplets that hold between painted segments.

    Args:
        visible: painted (panoptic) masks [N, H, W] bool, in painting order; they do not overlap
            and together cover the image.
        amodal: the whole shapes [N, H, W] bool, before later segments were painted over them.
        labels: PSG category names [N].

    The rules and their order are in the module docstring.
    """
    is_thing = [label in THINGS for label in labels]
    label_map = np.argmax(visible, axis=0)
    scene = _Geometry(
        visible=visible,
        amodal=amodal,
        filled=np.stack([ndimage.binary_fill_holes(m) for m in visible]),
        labels=labels,
        is_thing=is_thing,
        supports=[support_of(m, label_map) if t else None for m, t in zip(visible, is_thing)],
    )
    triplets = []
    for a in range(len(labels)):
        for b in range(len(labels)):
            predicate = _predicate(scene, a, b) if a != b else None
            if predicate:
                triplets.append((a, b, predicate))
    return triplets


@dataclass(frozen=True)
class _Geometry:
    """What the rules look at, per segment: masks [N, H, W], names, and the segment under each thing."""

    visible: np.ndarray
    amodal: np.ndarray
    filled: np.ndarray  # visible masks with their holes filled
    labels: list[str]
    is_thing: list[bool]
    supports: list[int | None]


def _predicate(scene: _Geometry, a: int, b: int) -> str | None:
    """The first rule that holds for the ordered pair (a, b), or None."""
    visible, amodal, filled, labels, is_thing, supports = (
        scene.visible,
        scene.amodal,
        scene.filled,
        scene.labels,
        scene.is_thing,
        scene.supports,
    )
    if is_inside(visible[a], filled[b]):
        return "in"
    if is_inside(visible[b], filled[a]):
        return "enclosing"
    if not is_thing[a]:
        return None
    overlapping = bool((amodal[a] & amodal[b]).any())
    if supports[a] == b and not (b > a and overlapping):
        return "standing on" if labels[a] in STANDING else "parked on" if labels[a] in PARKED else "on"
    if not is_thing[b]:
        return None
    if a > b and overlapping and touches(visible[a], visible[b]):
        return "in front of"
    support = supports[a]
    standing = support is not None and not is_thing[support] and not is_inside(visible[a], filled[support])
    if not standing and is_above(visible[a], visible[b]):
        return "flying over" if labels[a] in FLYING else "over"
    if is_beside(visible[a], visible[b]):
        return "beside"
    return None


# -- scene layout -------------------------------------------------------------------------------


@dataclass
class _Piece:
    """One drawn segment: PSG category and its whole shape [H, W] bool (before being painted over)."""

    label: str
    amodal: np.ndarray


def _band_pieces(
    template: _Template, rng: np.random.Generator, height: int, width: int
) -> tuple[list[_Piece], list[int]]:
    """Stuff bands, top to bottom, and the row each band starts at."""
    ground = int(height * rng.uniform(0.52, 0.68))
    starts = [0, ground] if len(template.bands) == 2 else [0, int(height * rng.uniform(0.3, 0.42)), ground]
    rows = np.arange(height)[:, None]
    top = np.full((1, width), starts[1])
    if template.bands[1] == "mountain-merged":  # jagged peaks; the ground line stays straight
        x = np.arange(width)[None] / width
        top = top - (np.abs(((x * rng.uniform(2, 4) + rng.uniform()) % 1) - 0.5) * height * 0.2).astype(int)
    bounds = [
        np.zeros((1, width), int),
        top,
        *[np.full((1, width), s) for s in starts[2:]],
        np.full((1, width), height),
    ]
    pieces = [_Piece(name, (rows >= bounds[i]) & (rows < bounds[i + 1])) for i, name in enumerate(template.bands)]
    return pieces, starts


def _place(mask: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray | None:
    """`mask` [h, w] pasted at (top, left) on an empty [height, width] canvas; None if it does not fit."""
    h, w = mask.shape
    if top < 0 or left < 0 or top + h > height or left + w > width:
        return None
    canvas = np.zeros((height, width), dtype=bool)
    canvas[top : top + h, left : left + w] = mask
    return canvas


def _shape(label: str, height: int) -> np.ndarray:
    """The silhouette [h, w] of a `label` thing `height` pixels tall (at least 6)."""
    kind = THINGS[label]
    height = max(6, height)
    return kind.shape(height, max(4, int(height * kind.aspect)))


def _random_height(label: str, rng: np.random.Generator, image_height: int) -> int:
    return int(image_height * rng.uniform(*THINGS[label].height))


def _clear_of(new: np.ndarray, placed: list[_Piece], limit: float = 0.3) -> bool:
    """`new` covers at most `limit` of any placed thing, and they cover at most `limit` of it."""
    area = new.sum()
    for piece in placed:
        overlap = (new & piece.amodal).sum()
        if overlap > limit * min(area, piece.amodal.sum()):
            return False
    return True


def _ground_thing(label: str, rng, starts: list[int], size: tuple[int, int], placed: list[_Piece]) -> np.ndarray | None:
    """A thing standing on the ground band: its feet in the band, its top above the band's first
    row, so that the band does not surround it (it stands on the ground, not in it)."""
    width, height = size
    ground = starts[-1]
    for _ in range(20):
        shape = _shape(label, int(_random_height(label, rng, height) * rng.uniform(0.8, 1.2)))
        h, w = shape.shape
        lowest = min(height - 3, ground + h - 4)
        if lowest < ground + 2:
            continue
        bottom = int(rng.integers(ground + 2, lowest + 1))
        mask = _place(shape, bottom - h + 1, int(rng.integers(0, max(1, width - w))), height, width)
        if mask is not None and _clear_of(mask, placed):
            return mask
    return None


def _free_thing(
    label: str,
    rng: np.random.Generator,
    rows: tuple[int, int],
    size: tuple[int, int],
    placed: list[_Piece],
    centre_columns: tuple[int, int] | None = None,
) -> np.ndarray | None:
    """A thing placed wholly within `rows` [first, last), 3 pixels clear of their edges and of the
    image's; its centre column within `centre_columns` [first, last] when given."""
    width, height = size
    for _ in range(20):
        shape = _shape(label, _random_height(label, rng, height))
        h, w = shape.shape
        if rows[1] - rows[0] - 6 < h or width - 6 < w:
            continue
        top = int(rng.integers(rows[0] + 3, rows[1] - 3 - h + 1))
        if centre_columns is None:
            left = int(rng.integers(3, width - 3 - w + 1))
        else:
            left = int(np.clip(rng.integers(centre_columns[0], centre_columns[1] + 1) - w // 2, 3, width - 3 - w))
        mask = _place(shape, top, left, height, width)
        if mask is not None and _clear_of(mask, placed):
            return mask
    return None


def _on_top_of(label: str, support: np.ndarray, rng, size: tuple[int, int]) -> np.ndarray | None:
    """A thing resting on `support`: centred on the support's top row, its lowest row just above it."""
    width, height = size
    (top, _), _ = _extent(support)
    columns = np.flatnonzero(support[top])
    shape = _shape(label, _random_height(label, rng, height))
    h, w = shape.shape
    if w > len(columns):
        return None
    left = int(columns[len(columns) // 2]) - w // 2
    return _place(shape, top - h, left, height, width)


def _inside_of(label: str, container: np.ndarray, rng, size: tuple[int, int]) -> np.ndarray | None:
    """A thing drawn within `container`, at least 3 pixels from its outline."""
    width, height = size
    core = ndimage.binary_erosion(container, iterations=3)
    (y0, y1), (x0, x1) = _extent(container)
    shape = _shape(label, int((y1 - y0) * rng.uniform(0.3, 0.45)))
    h, w = shape.shape
    for _ in range(30):  # random positions in the container's box until one lies in its core
        top, left = int(rng.integers(y0, max(y0 + 1, y1 - h + 2))), int(rng.integers(x0, max(x0 + 1, x1 - w + 2)))
        mask = _place(shape, top, left, height, width)
        if mask is not None and not (mask & ~core).any():
            return mask
    return None


def _layout(rng: np.random.Generator, size: tuple[int, int]) -> list[_Piece]:
    """The segments of one scene in painting order: bands, floating things, ground things from
    far (higher) to near, each followed by what sits on or in it, then fliers."""
    width, height = size
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    bands, starts = _band_pieces(template, rng, height, width)
    things: list[_Piece] = []
    if template.floating:
        for _ in range(int(rng.integers(0, 3))):
            label = str(rng.choice(template.floating))
            mask = _free_thing(label, rng, (starts[1] + 6, starts[2]), size, things)
            if mask is not None:
                things.append(_Piece(label, mask))
    groups = []
    for _ in range(int(rng.integers(1, 4))):
        label = str(rng.choice(template.ground))
        mask = _ground_thing(label, rng, starts, size, things + [p for g in groups for p in g])
        if mask is not None:
            groups.append([_Piece(label, mask), *_companions(label, mask, template, rng, size)])
    groups.sort(key=lambda group: _extent(group[0].amodal)[0][1])  # lowest row: far to near
    things += [piece for group in groups for piece in group]
    sky_bottom = int(np.flatnonzero(~bands[0].amodal.all(axis=1))[0])  # above the mountain peaks
    for _ in range(int(rng.integers(0, 3))):
        label = str(rng.choice(template.fliers))
        below = groups[int(rng.integers(len(groups)))][0] if groups and rng.uniform() < 0.5 else None
        if below is None:
            mask = _free_thing(label, rng, (0, sky_bottom - 2), size, things)
        else:  # above a ground thing, so that it flies over it
            (top, _), columns = _extent(below.amodal)
            mask = _free_thing(label, rng, (0, min(sky_bottom, top) - 2), size, things, centre_columns=columns)
        if mask is not None:
            things.append(_Piece(label, mask))
    return bands + things


def _companions(label: str, mask: np.ndarray, template: _Template, rng, size) -> list[_Piece]:
    """Sometimes a thing resting on the new ground thing, or drawn inside it."""
    options = (("on", (template.on_top or {}).get(label)), ("in", (template.inside or {}).get(label)))
    choices = [(kind, labels) for kind, labels in options if labels]
    if not choices or rng.uniform() < 0.4:
        return []
    kind, labels = choices[int(rng.integers(len(choices)))]
    other = str(rng.choice(labels))
    placed = _on_top_of(other, mask, rng, size) if kind == "on" else _inside_of(other, mask, rng, size)
    return [] if placed is None else [_Piece(other, placed)]


def _paint(pieces: list[_Piece], min_area: int = 12) -> tuple[list[_Piece], np.ndarray]:
    """Paint pieces in order; drop things left with fewer than `min_area` visible pixels.

    Returns the kept pieces and their visible masks [N, H, W] bool (no two overlap).
    """
    while True:
        label_map = np.zeros(pieces[0].amodal.shape, dtype=np.int64)
        for index, piece in enumerate(pieces):
            label_map[piece.amodal] = index
        visible = label_map[None] == np.arange(len(pieces))[:, None, None]
        areas = visible.sum(axis=(1, 2))
        keep = [i for i, p in enumerate(pieces) if p.label not in THINGS or areas[i] >= min_area]
        if len(keep) == len(pieces):
            return pieces, visible
        pieces = [pieces[i] for i in keep]


# -- rendering ----------------------------------------------------------------------------------


def _render(
    pieces: list[_Piece], visible: np.ndarray, rng: np.random.Generator, photo: np.ndarray | None
) -> np.ndarray:
    """RGB [H, W, 3] uint8: a flat colour per segment (jittered per instance), shading, noise;
    the stuff is blended 60:40 with `photo` [H, W, 3] when one is given."""
    colours = np.array([THINGS[p.label].colour if p.label in THINGS else STUFF_COLOURS[p.label] for p in pieces], float)
    colours += rng.uniform(-20, 20, size=colours.shape)
    label_map = np.argmax(visible, axis=0)
    height = label_map.shape[0]
    image = colours[label_map]
    image += (np.arange(height)[:, None, None] / height - 0.5) * 30  # light from above
    image += rng.normal(0, 6, size=image.shape)
    if photo is not None:
        stuff = np.isin(label_map, [i for i, p in enumerate(pieces) if p.label not in THINGS])
        image[stuff] = 0.6 * image[stuff] + 0.4 * photo[stuff]
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _photos(photos_dir: str | Path | None) -> list[Path]:
    if photos_dir is None:
        return []
    paths = sorted(p for p in Path(photos_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise FileNotFoundError(f"no .jpg/.jpeg/.png photo in {photos_dir}")
    return paths


def _load_photo(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A photo cropped to the aspect ratio of `size` = (width, height) and resized to it."""
    with Image.open(path) as image:
        image.draft("RGB", size)  # JPEG: decode at reduced scale, much faster for large photos
        return np.asarray(ImageOps.fit(image.convert("RGB"), size, Image.Resampling.BILINEAR), dtype=float)


# -- the dataset --------------------------------------------------------------------------------


def make_synthetic_psg(
    out_dir: str | Path,
    *,
    images: int = 20,
    seed: int = 0,
    size: tuple[int, int] = (320, 240),
    photos_dir: str | Path | None = None,
) -> Path:
    """Write a synthetic PSG dataset: out_dir/psg.json, out_dir/images/*.jpg, out_dir/panoptic/*.png.

    Args:
        out_dir: folder to write (created if needed).
        images: number of images; about 10% of them (at least one when there are two or more)
            are listed in `test_image_ids`.
        seed: the dataset is a function of the seed (same bytes for the same seed and arguments).
        size: (width, height) of every image, in pixels; at least 64 x 64.
        photos_dir: optional folder of photos whose crops texture the stuff (a photo per image,
            chosen with the seed); the labels stay the drawn bands.

    Returns:
        The path of the written psg.json, e.g. for `PsgDataset(path)`.
    """
    width, height = size
    if width < 64 or height < 64:
        raise ValueError(f"size must be at least (64, 64), got {size}")
    rng = np.random.default_rng(seed)
    photo_rng = np.random.default_rng([seed, 1])  # its own stream: photos change the pictures, not the scenes
    photos, loaded = _photos(photos_dir), {}
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    graphs = []
    for index in range(images):
        image_id = f"{index:06d}"
        pieces, visible, triplets = _scene(rng, size)
        photo = None
        if photos:
            path = photos[int(photo_rng.integers(len(photos)))]
            photo = loaded[path] if path in loaded else loaded.setdefault(path, _load_photo(path, size))
        Image.fromarray(_render(pieces, visible, rng, photo)).save(out / "images" / f"{image_id}.jpg", quality=90)
        graphs.append(_to_graph(image_id, pieces, visible, triplets))
    n_test = max(1, round(images * 0.1)) if images >= 2 else 0
    test_ids = [f"{i:06d}" for i in sorted(rng.choice(images, size=n_test, replace=False))]
    return write_psg(graphs, out, test_image_ids=test_ids)


def _scene(
    rng: np.random.Generator, size: tuple[int, int]
) -> tuple[list[_Piece], np.ndarray, list[tuple[int, int, str]]]:
    """Lay out and paint scenes until one has a relation (almost always the first)."""
    for _ in range(100):
        pieces, visible = _paint(_layout(rng, size))
        triplets = derive_relations(visible, np.stack([p.amodal for p in pieces]), [p.label for p in pieces])
        if triplets:
            return pieces, visible, triplets
    raise RuntimeError("no scene with a relation in 100 tries")  # unreachable in practice


def _to_graph(
    image_id: str, pieces: list[_Piece], visible: np.ndarray, triplets: list[tuple[int, int, str]]
) -> SceneGraph:
    predicates = psg.predicates()
    graph = SceneGraph.from_masks(
        visible, np.ones(len(pieces)), labels=[p.label for p in pieces], file=f"images/{image_id}.jpg"
    )
    relations = [
        Relation(subject=s, object=o, predicate=name, predicate_id=predicates.index(name), score=1.0)
        for s, o, name in triplets
    ]
    return replace(graph, image_id=image_id, relations=relations)
