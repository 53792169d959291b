"""Synthetic PVSG-format clips with known answers: moving shapes whose relations follow from
their geometry, frame by frame.

Each clip is a few textured stuff bands (sky over grass, sky over water over sand, a wall over
a floor, ...) with things drawn on top: people, dogs, cats, horses and cars walking or driving
along the ground, birds flying across the sky, a bench with a bag or a ball on it. Movers go
back and forth along lines that reach past the frame's edges, so they enter, leave and come
back; nearer movers pass in front of farther ones and can hide them completely for a while.
Things are drawn far to near, so the masks are the visible parts, as in PVSG.

Relations are not sampled but computed from the drawn masks of each frame by `frame_relations`
(the rule an oracle pipeline can use too), and a relation's ranges are the runs of frames where
it holds. Names exist in PSG's and PVSG's vocabularies alike where possible (classes: dog, cat,
horse, car, bench, bird, sand, snow; adult, ball, bag, sky, grass, ... through
`pvsg.PSG_TO_PVSG_CATEGORIES`; predicates: all six are in both), so a PSG-vocabulary pipeline
can be scored on them. The rules, for a thing A and another segment B, first match wins:

- `standing on` / `on`: more than half of the pixels just below A's lowest row belong to B, and
  B is ground-like stuff (grass, ground, sand, snow, floor, water, rock) or a thing drawn
  before A (a nearer thing below A hides A's feet rather than carrying it). People and animals
  stand; anything else is on.
- `in`: B is stuff that is not ground-like (sky, wall, tree, ceiling) and surrounds A: every
  pixel next to A (4-neighbourhood) belongs to B and A does not touch the frame's edge (a bird
  in the sky).
- `in front of`: B is a thing drawn before A (farther) and their visible masks touch.
- `over`: B is a thing, A does not stand on ground-like stuff, A ends at least a row above B's
  first row and their columns overlap.
- `beside`: B is a thing in the same vertical band (row ranges overlap by half the shorter),
  A left of B, the gap no wider than the wider of the two.

"Drawn before" is the drawing order, which is also the object id order: in these clips a
larger object id is nearer. A relation's ranges are its runs of frames, a gap between two runs
bridged when in every frame of the gap one of its two objects is not visible (PVSG annotates
relations through such gaps; its evaluator counts only the frames where both are visible).
Every clip has between 1 and 20 relations, so a perfect prediction scores R@20 = 1. The same
seed gives the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from relate_anything import pvsg
from relate_anything.datasets.pvsg import write_pvsg
from relate_anything.datasets.synthetic import THINGS, is_above, is_beside, support_of, touches
from relate_anything.masks import encode_label_map
from relate_anything.video_scene_graph import Track, TrackFrame, VideoInfo, VideoRelation, VideoSceneGraph

__all__ = [
    "MAX_RELATIONS",
    "frame_relations",
    "make_synthetic_pvsg",
    "relation_intervals",
    "relations_from_tracks",
    "synthetic_video",
]

MAX_RELATIONS = 20  # per clip: a perfect prediction then fits in R@20
STANDING = {"adult", "child", "baby", "dog", "cat", "horse", "bird"}
GROUND_LIKE = {"grass", "ground", "sand", "snow", "floor", "water", "rock"}

# How each thing is drawn: synthetic.THINGS' silhouettes (PSG names) under PVSG's names.
KINDS = {
    "adult": THINGS["person"],
    "dog": THINGS["dog"],
    "cat": THINGS["cat"],
    "horse": THINGS["horse"],
    "car": THINGS["car"],
    "bench": THINGS["bench"],
    "bird": replace(THINGS["bird"], height=(0.05, 0.08)),
    "ball": THINGS["sports ball"],
    "bag": THINGS["backpack"],
}

STUFF_COLOURS = {
    "sky": (120, 170, 235),
    "grass": (70, 150, 60),
    "water": (30, 90, 160),
    "sand": (220, 200, 150),
    "snow": (235, 235, 245),
    "wall": (180, 160, 140),
    "floor": (140, 100, 70),
    "tree": (30, 100, 40),
    "ground": (125, 105, 85),
}


@dataclass(frozen=True)
class _Scene:
    """Stuff bands top to bottom (the last is the ground) and the things that may appear."""

    bands: tuple[str, ...]
    walkers: tuple[str, ...]
    fliers: tuple[str, ...] = ()


SCENES = (
    _Scene(("sky", "grass"), walkers=("adult", "dog", "horse", "cat"), fliers=("bird",)),
    _Scene(("sky", "water", "sand"), walkers=("adult", "dog"), fliers=("bird",)),
    _Scene(("sky", "snow"), walkers=("adult", "dog", "horse"), fliers=("bird",)),
    _Scene(("wall", "floor"), walkers=("adult", "dog", "cat")),
    _Scene(("sky", "tree", "ground"), walkers=("adult", "car", "dog"), fliers=("bird",)),
)


# -- the relation rule ----------------------------------------------------------------------------


def frame_relations(masks: np.ndarray, labels: Sequence[str], order: Sequence[int]) -> list[tuple[int, int, str]]:
    """The (subject, object, predicate) triplets that hold on one frame.

    Args:
        masks: the visible masks of the segments on the frame, [N, H, W] bool; they do not
            overlap (pixels of no segment are void).
        labels: [N] PVSG class names (things are `pvsg.thing_classes()`).
        order: [N] drawing order, larger = nearer (object ids in synthetic clips).

    Returns:
        Index triplets (i, j, predicate) into `masks`, i != j, at most one per ordered pair;
        the rules are in the module docstring.
    """
    count = len(masks)
    if count < 2:
        return []
    things = set(pvsg.thing_classes())
    is_thing = [label in things for label in labels]
    label_map = np.full(masks.shape[1:], count, dtype=np.int64)  # `count` = void
    for index in range(count):
        label_map[masks[index]] = index
    frame = _Frame(
        masks=masks,
        labels=list(labels),
        order=list(order),
        is_thing=is_thing,
        supports=[_support(masks[i], label_map, count) if is_thing[i] else None for i in range(count)],
        around=[_around(m, label_map, count) if is_thing[i] else None for i, m in enumerate(masks)],
    )
    triplets = []
    for a in range(count):
        if not is_thing[a] or not masks[a].any():
            continue
        for b in range(count):
            if b != a and masks[b].any():
                predicate = _predicate(frame, a, b)
                if predicate is not None:
                    triplets.append((a, b, predicate))
    return triplets


@dataclass(frozen=True)
class _Frame:
    """What the rules look at on one frame, per segment: visible masks [N, H, W], class names,
    drawing order, thing or stuff, the segment under each thing and the one around it."""

    masks: np.ndarray
    labels: list[str]
    order: list[int]
    is_thing: list[bool]
    supports: list[int | None]
    around: list[int | None]


def _support(mask: np.ndarray, label_map: np.ndarray, void: int) -> int | None:
    below = support_of(mask, label_map)
    return None if below is None or below == void else below


def _around(mask: np.ndarray, label_map: np.ndarray, void: int) -> int | None:
    """The one segment that every pixel next to `mask` belongs to, if there is one and the mask
    does not touch the frame's edge (void counts as a segment of its own)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1], cols[0], cols[-1]
    if y0 == 0 or x0 == 0 or y1 == mask.shape[0] - 1 or x1 == mask.shape[1] - 1:
        return None
    crop = mask[y0 - 1 : y1 + 2, x0 - 1 : x1 + 2]
    ring = ndimage.binary_dilation(crop) & ~crop  # 4-neighbourhood (the default cross)
    values = np.unique(label_map[y0 - 1 : y1 + 2, x0 - 1 : x1 + 2][ring])
    return int(values[0]) if len(values) == 1 and values[0] != void else None


def _predicate(frame: _Frame, a: int, b: int) -> str | None:
    """The first rule that holds for the ordered pair (a, b), or None."""
    masks, labels, order, is_thing, support = frame.masks, frame.labels, frame.order, frame.is_thing, frame.supports[a]
    if support == b and (labels[b] in GROUND_LIKE or (is_thing[b] and order[b] < order[a])):
        return "standing on" if labels[a] in STANDING else "on"
    if not is_thing[b]:
        if labels[b] not in GROUND_LIKE and frame.around[a] == b:
            return "in"
        return None
    if order[b] < order[a] and touches(masks[a], masks[b]):
        return "in front of"
    on_ground = support is not None and labels[support] in GROUND_LIKE
    if not on_ground and is_above(masks[a], masks[b]):
        return "over"
    if is_beside(masks[a], masks[b]):
        return "beside"
    return None


def relation_intervals(
    holds: dict[tuple[int, int, str], np.ndarray], visible: dict[int, np.ndarray]
) -> dict[tuple[int, int, str], tuple[tuple[int, int], ...]]:
    """Inclusive frame ranges of each relation from the frames where it holds.

    Args:
        holds: {(subject id, object id, predicate): [T] bool, the frames where the rule holds}.
        visible: {object id: [T] bool, the frames where the object has a mask}.

    Returns:
        {triplet: ((start, end), ...)}: the runs of `holds`, a gap between two runs bridged when
        in every frame of the gap the subject or the object is not visible.
    """
    result = {}
    for (subject, object_, predicate), frames in holds.items():
        hidden = ~(visible[subject] & visible[object_])
        runs = _runs(np.flatnonzero(frames))
        merged: list[tuple[int, int]] = []
        for start, end in runs:
            if merged and hidden[merged[-1][1] + 1 : start].all():
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        result[(subject, object_, predicate)] = tuple(merged)
    return result


def relations_from_tracks(graph: VideoSceneGraph, *, predicates: Sequence[str] | None = None) -> list[VideoRelation]:
    """The relations the rule finds between a graph's tracks (what an oracle relation model gives).

    Decodes every track's mask on every frame, applies `frame_relations` with the track labels
    and the track ids as drawing order (larger = nearer, as in synthetic clips), and turns the
    frames into ranges with `relation_intervals`. Relations are ranked by first frame, then
    subject, object and predicate; scores are 1.0; predicate ids index `predicates` (default
    the graph's).
    """
    vocabulary = tuple(predicates) if predicates is not None else graph.predicates
    index = {name: i for i, name in enumerate(vocabulary)}
    visible = {track.id: np.zeros(graph.num_frames, dtype=bool) for track in graph.tracks}
    holds: dict[tuple[int, int, str], np.ndarray] = {}
    by_frame: list[list[tuple[Track, TrackFrame]]] = [[] for _ in range(graph.num_frames)]
    for track in graph.tracks:
        for item in track.frames:
            by_frame[item.frame].append((track, item))
            visible[track.id][item.frame] = True
    for t, items in enumerate(by_frame):
        if len(items) < 2:
            continue
        masks = np.stack([item.decode() for _, item in items])
        labels = [track.category or "" for track, _ in items]
        for i, j, predicate in frame_relations(masks, labels, [track.id for track, _ in items]):
            key = (items[i][0].id, items[j][0].id, predicate)
            holds.setdefault(key, np.zeros(graph.num_frames, dtype=bool))[t] = True
    ranges = relation_intervals(holds, visible)
    ordered = sorted(ranges.items(), key=lambda kv: (kv[1][0][0], kv[0]))
    return [
        VideoRelation(subject=s, predicate=p, predicate_id=index[p], object=o, score=1.0, intervals=intervals)
        for (s, o, p), intervals in ordered
    ]


def _runs(frames: np.ndarray) -> list[tuple[int, int]]:
    if not len(frames):
        return []
    breaks = np.flatnonzero(np.diff(frames) > 1)
    starts = np.concatenate([[frames[0]], frames[breaks + 1]])
    ends = np.concatenate([frames[breaks], [frames[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


# -- the clip ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mover:
    """One thing: its class, silhouette [h, w] and texture [h, w, 3], and where it is at frame t."""

    label: str
    shape: np.ndarray
    texture: np.ndarray
    top: float
    left: float
    speed: float  # pixels per frame along x (signed)
    low: float  # x range the left edge bounces within
    high: float
    bob: float = 0.0  # vertical swing amplitude (fliers)

    def position(self, t: int) -> tuple[int, int]:
        span = self.high - self.low
        x = self.left - self.low + self.speed * t
        x = x % (2 * span) if span > 0 else 0.0
        x = self.low + (x if x <= span else 2 * span - x)  # back and forth between low and high
        y = self.top + self.bob * np.sin(0.4 * t)
        return int(round(y)), int(round(x))


@dataclass(frozen=True)
class _Clip:
    """A clip: per-frame object ids [T, H, W], RGB frames [T, H, W, 3] and the class of each id."""

    label_maps: np.ndarray
    frames: np.ndarray
    labels: dict[int, str]


def _texture(colour: tuple[int, int, int], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A [h, w, 3] float texture: the colour jittered, with stripes and fixed grain."""
    base = np.asarray(colour, float) + rng.uniform(-20, 20, size=3)
    y, x = np.mgrid[:h, :w]
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
    stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)[..., None] * 12
    return base + stripes + rng.normal(0, 4, size=(h, w, 3))


def _paste(shape: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """`shape` [h, w] placed at (top, left) on an empty [height, width] canvas, clipped to it."""
    canvas = np.zeros((height, width), dtype=bool)
    h, w = shape.shape
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, height), min(left + w, width)
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] = shape[y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def _thing_shape(label: str, height: int) -> np.ndarray:
    kind = KINDS[label]
    height = max(6, int(height))
    return kind.shape(height, max(4, int(height * kind.aspect)))


def _layout(rng: np.random.Generator, size: tuple[int, int], things: int) -> tuple[list[str], list[int], list[_Mover]]:
    """Stuff band names, the row each starts at, and the things in drawing order (far to near)."""
    width, height = size
    scene = SCENES[int(rng.integers(len(SCENES)))]
    ground = int(height * rng.uniform(0.45, 0.6))
    starts = [0, ground] if len(scene.bands) == 2 else [0, int(height * rng.uniform(0.28, 0.38)), ground]
    scale = width / 320
    walkers: list[tuple[float, _Mover]] = []
    n_fliers = int(rng.integers(0, 2)) if scene.fliers and things > 1 else 0
    for _ in range(things - n_fliers):
        depth = float(rng.uniform(0, 1))  # 0 far (near the horizon), 1 near (low in the frame)
        bottom = ground + 4 + depth * (height - ground - 10)
        if rng.uniform() < 0.2 and not any(m.label == "bench" for _, m in walkers):
            bench = _thing_shape("bench", height * rng.uniform(*KINDS["bench"].height) * (0.6 + 0.4 * depth))
            left = float(rng.uniform(0, width - bench.shape[1]))
            mover = _Mover(
                "bench",
                bench,
                _texture(KINDS["bench"].colour, *bench.shape, rng),
                bottom - bench.shape[0],
                left,
                0,
                left,
                left,
            )
            walkers.append((depth, mover))
            on_top = str(rng.choice(["bag", "ball", "cat"]))
            shape = _thing_shape(on_top, height * rng.uniform(*KINDS[on_top].height))
            top_left = left + (bench.shape[1] - shape.shape[1]) / 2
            item = _Mover(
                on_top,
                shape,
                _texture(KINDS[on_top].colour, *shape.shape, rng),
                mover.top - shape.shape[0],
                top_left,
                0,
                top_left,
                top_left,
            )
            walkers.append((depth + 1e-6, item))  # drawn right after the bench
            continue
        label = str(rng.choice(scene.walkers))
        shape = _thing_shape(label, height * rng.uniform(*KINDS[label].height) * (0.6 + 0.4 * depth))
        h, w = shape.shape
        margin = float(rng.uniform(0, 40))
        low, high = -w - margin, width + margin
        walkers.append(
            (
                depth,
                _Mover(
                    label,
                    shape,
                    _texture(KINDS[label].colour, h, w, rng),
                    bottom - h,
                    float(rng.uniform(low, high)),
                    float(rng.uniform(1.5, 5) * scale * rng.choice([-1, 1])),
                    low,
                    high,
                ),
            )
        )
    movers = [mover for _, mover in sorted(walkers, key=lambda item: item[0])]
    for _ in range(n_fliers):
        label = str(rng.choice(scene.fliers))
        shape = _thing_shape(label, height * rng.uniform(*KINDS[label].height))
        h, w = shape.shape
        top = float(rng.uniform(4, max(5, starts[1] - h - 8)))
        low, high = -w - 10.0, width + 10.0
        speed = float(rng.uniform(3, 7) * scale * rng.choice([-1, 1]))
        movers.append(
            _Mover(
                label,
                shape,
                _texture(KINDS[label].colour, h, w, rng),
                top,
                float(rng.uniform(low, high)),
                speed,
                low,
                high,
                2.0,
            )
        )
    return list(scene.bands), starts, movers


def _draw(rng: np.random.Generator, size: tuple[int, int], frames: int, things: int, min_area: int = 12) -> _Clip:
    """Lay out a scene and draw its frames: object ids 1..S for the bands, then things far to near."""
    width, height = size
    bands, starts, movers = _layout(rng, size, things)
    background = np.zeros((height, width), dtype=np.int64)
    colours = np.zeros((height, width, 3))
    bounds = [*starts, height]
    for index, name in enumerate(bands):
        background[bounds[index] : bounds[index + 1]] = index + 1
        colours[bounds[index] : bounds[index + 1]] = _texture(
            STUFF_COLOURS[name], bounds[index + 1] - bounds[index], width, rng
        )
    first_thing = len(bands) + 1
    label_maps = np.empty((frames, height, width), dtype=np.uint8)
    images = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        placed = []
        for mover in movers:
            top, left = mover.position(t)
            placed.append((top, left, _paste(mover.shape, top, left, height, width)))
        shown = list(range(len(movers)))
        while True:  # things left with fewer than min_area pixels are not drawn on this frame
            labels = background.copy()
            for k in shown:
                labels[placed[k][2]] = first_thing + k
            small = [k for k in shown if (labels == first_thing + k).sum() < min_area]
            if not small:
                break
            shown = [k for k in shown if k not in small]
        image = colours.copy()
        for k in shown:
            top, left, _ = placed[k]
            mine = labels == first_thing + k
            ys, xs = np.nonzero(mine)
            image[ys, xs] = movers[k].texture[ys - top, xs - left]
        label_maps[t] = labels
        images[t] = np.clip(image, 0, 255).round().astype(np.uint8)
    names = {index + 1: name for index, name in enumerate(bands)}
    names |= {first_thing + k: mover.label for k, mover in enumerate(movers)}
    return _Clip(label_maps=label_maps, frames=images, labels=names)


def _graph(clip: _Clip, fps: float, video_id: str) -> VideoSceneGraph:
    """The clip's tracks (one per object id, in id order) with the rule's relations."""
    frames, height, width = clip.label_maps.shape
    per_object: dict[int, list[TrackFrame]] = {i: [] for i in clip.labels}
    for t in range(frames):
        regions = encode_label_map(clip.label_maps[t])
        for k, object_id in enumerate(regions.ids.tolist()):
            x0, y0, x1, y1 = (float(v) for v in regions.boxes[k])
            per_object[object_id].append(
                TrackFrame(frame=t, mask=regions.masks[k], bbox=(x0, y0, x1, y1), area=int(regions.areas[k]), score=1.0)
            )
    tracks = [Track(id=i, frames=tuple(per_object[i]), score=1.0, label=label) for i, label in clip.labels.items()]
    video = VideoInfo(
        width=width, height=height, frame_index=tuple(range(frames)), fps=fps, sampled_fps=fps, file=f"{video_id}.mp4"
    )
    graph = VideoSceneGraph(video=video, tracks=tracks, predicates=pvsg.predicates())
    return graph.with_relations(relations_from_tracks(graph))


def synthetic_video(
    rng: np.random.Generator,
    *,
    frames: int = 30,
    size: tuple[int, int] = (320, 240),
    fps: float = 5.0,
    video_id: str = "clip",
) -> tuple[VideoSceneGraph, np.ndarray]:
    """One synthetic clip: its ground-truth graph and its RGB frames [T, H, W, 3] uint8.

    Draws scenes (2 to 5 things, fewer after failed tries) until one has between 1 and
    `MAX_RELATIONS` relations and every thing is visible on some frame.
    """
    for attempt in range(60):
        things = int(rng.integers(2, 6)) if attempt < 20 else int(rng.integers(1, 4))
        clip = _draw(rng, size, frames, things)
        visible = {int(i) for i in np.unique(clip.label_maps)}
        if set(clip.labels) - visible:
            continue
        graph = _graph(clip, fps, video_id)
        if 1 <= len(graph.relations) <= MAX_RELATIONS:
            return graph, clip.frames
    raise RuntimeError("no clip with 1 to 20 relations in 60 tries")  # unreachable in practice


# -- the dataset --------------------------------------------------------------------------------


def make_synthetic_pvsg(
    out_dir: str | Path,
    *,
    videos: int = 4,
    frames: int = 30,
    seed: int = 0,
    size: tuple[int, int] = (320, 240),
    fps: float = 5.0,
    write_videos: bool = True,
) -> Path:
    """Write a synthetic PVSG dataset: out_dir/pvsg.json, out_dir/synthetic/masks/<video_id>/%04d.png
    and (with `write_videos`) out_dir/synthetic/videos/<video_id>.mp4, lossless H.264.

    Args:
        out_dir: folder to write (created if needed).
        videos: number of clips, ids synth0000, synth0001, ...; about 20% of them (at least one
            when there are two or more) are listed as "val", the rest as "train".
        frames: sampled frames per clip (at least 2).
        seed: the dataset is a function of the seed and the arguments.
        size: (width, height) of every clip, at least 64 x 64.
        fps: the clips' frame rate (PVSG samples at 5).
        write_videos: also encode each clip; its decoded frames equal the drawn ones exactly.

    Returns:
        The path of the written pvsg.json, e.g. for `PvsgDataset(path)`.
    """
    from relate_anything.video.io import write_video

    width, height = size
    if width < 64 or height < 64:
        raise ValueError(f"size must be at least (64, 64), got {size}")
    if frames < 2 or videos < 1:
        raise ValueError(f"need at least 1 video of 2 frames, got videos={videos}, frames={frames}")
    out = Path(out_dir)
    graphs = {}
    for index in range(videos):
        video_id = f"synth{index:04d}"
        graph, images = synthetic_video(
            np.random.default_rng([seed, index + 1]), frames=frames, size=size, fps=fps, video_id=video_id
        )
        graph.video = replace(graph.video, file=f"synthetic/videos/{video_id}.mp4")
        graphs[video_id] = graph
        if write_videos:
            path = out / "synthetic" / "videos" / f"{video_id}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, iter(images), fps, lossless=True)
    n_val = max(1, round(videos * 0.2)) if videos >= 2 else 0
    val = sorted(np.random.default_rng(seed).choice(videos, size=n_val, replace=False).tolist())
    return write_pvsg(graphs, out, source="synthetic", val_ids=[f"synth{i:04d}" for i in val])
