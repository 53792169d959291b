"""PVSG-format video data in and out: read pvsg.json + per-frame panoptic PNGs as
`VideoSceneGraph`s, check a dataset, write one.

The format (Panoptic Video Scene Graph generation, CVPR 2023, OpenPVSG):

    <root>/pvsg.json
        {"objects": {"thing": [...], "stuff": [...]},     # class names; index = position in thing + stuff
         "relations": [...],                               # predicate names
         "split": {source: {"train": [video_id, ...], "val": [...]}},
         "data": [{"video_id", "meta": {"height", "width", "fps", "num_frames", ...},
                   "objects": [{"object_id", "category", "is_thing", ...}],
                   "relations": [[subject_id, object_id, "predicate", [[start, end], ...]], ...]}]}
    <root>/<source>/masks/<video_id>/0000.png, 0001.png, ...   # one per sampled frame
    <root>/<source>/videos/<video_id>.mp4                      # the clip (not read here)

A mask PNG is single-channel; its pixel value is the object_id covering the pixel (0 = void).
Frame ranges are 0-based and inclusive at both ends, as PVSG's evaluator reads them (its
training-set builder reads the end as exclusive; see docs/video_metrics.md). A relation may be
annotated over frames where one of its objects is off-screen. A video's source is the one whose
split lists it; a video no split lists gets OpenPVSG's guess from its id (starts with "P":
epic_kitchen; four digits and "_": vidor; else ego4d).

Ground truth is a `VideoSceneGraph` like any prediction:

    >>> dataset = PvsgDataset("data/pvsg", split="val")
    >>> graph = dataset[0]                       # reads that video's mask PNGs now
    >>> [graph.describe(r) for r in graph.relations]   # "adult #1 holding cup #4 (1.00) frames 10-42"

Three entry points: `PvsgDataset` (read; fails on the first problem it meets), `check_pvsg`
(every problem, for `relate-anything data check`) and `write_pvsg` (graphs -> PVSG files).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from relate_anything import pvsg
from relate_anything.datasets.psg import _paint, _present_ids
from relate_anything.errors import UsageError
from relate_anything.masks import LabelMapRegions, encode_label_map
from relate_anything.video_scene_graph import Track, TrackFrame, VideoInfo, VideoRelation, VideoSceneGraph

__all__ = [
    "PvsgDataset",
    "PvsgFormatError",
    "VideoProblem",
    "check_pvsg",
    "pvsg_paths",
    "read_pvsg_json",
    "relation_frames",
    "write_pvsg",
]

TOP_LEVEL_KEYS = ("objects", "relations", "data")
VIDEO_KEYS = ("video_id", "meta", "objects", "relations")
META_KEYS = ("height", "width", "num_frames")
OBJECT_KEYS = ("object_id", "category", "is_thing")
MAX_OBJECT_ID = 65535  # 16-bit PNGs
SOURCES = ("vidor", "epic_kitchen", "ego4d")  # OpenPVSG's; our own data may add others


class PvsgFormatError(UsageError):
    """A PVSG-format dataset that cannot be read; the message names the video (and frame)."""


@dataclass(frozen=True)
class VideoProblem:
    """One problem of a PVSG dataset.

    Attributes:
        video_id: the video it concerns (None: pvsg.json as a whole).
        message: what is wrong.
        frame: the sampled frame it concerns, if one.
        blocking: whether `PvsgDataset` refuses the video for it. A range that runs past the
            last frame is not blocking: the reader clips it, as PVSG's evaluator skips frames
            past the end.
    """

    video_id: str | None
    message: str
    frame: int | None = None
    blocking: bool = True

    def __str__(self) -> str:
        if self.video_id is None:
            return f"pvsg.json: {self.message}"
        where = f"video {self.video_id}" + (f", frame {self.frame}" if self.frame is not None else "")
        return f"{where}: {self.message}"


# -- paths --------------------------------------------------------------------------------------


def pvsg_paths(root_or_json: str | Path) -> tuple[Path, Path]:
    """(pvsg.json, dataset root): root/pvsg.json when given a folder; the JSON's folder otherwise."""
    path = Path(root_or_json)
    json_path = path / "pvsg.json" if path.is_dir() else path
    return json_path, json_path.parent


def source_of(video_id: str, split: Mapping[str, Any] | None) -> str:
    """The source folder of a video: the split that lists it, else OpenPVSG's guess from the id."""
    for source, parts in (split or {}).items():
        if isinstance(parts, dict) and any(isinstance(ids, list) and video_id in ids for ids in parts.values()):
            return str(source)
    head = video_id.split("_")[0]
    if video_id.startswith("P"):
        return "epic_kitchen"
    if head.isdigit() and len(head) == 4:
        return "vidor"
    return "ego4d"


def mask_path(mask_dir: Path, frame: int) -> Path:
    """The PNG of sampled frame `frame` in a video's mask folder (%04d.png)."""
    return mask_dir / f"{frame:04d}.png"


# -- reading ------------------------------------------------------------------------------------


def read_pvsg_json(root_or_json: str | Path) -> dict[str, Any]:
    """Load pvsg.json (a folder holding it, or the file itself) and check its top level."""
    path = pvsg_paths(root_or_json)[0]
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise PvsgFormatError(f"{path}: no such file (a PVSG dataset is a pvsg.json with mask PNGs)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PvsgFormatError(f"{path}: cannot read it as JSON: {error}") from None
    problems = _top_level_problems(meta)
    if problems:
        raise PvsgFormatError(f"{path}: {problems[0].message}")
    return meta


class PvsgDataset:
    """The videos of a PVSG-format dataset, each read as a ground-truth `VideoSceneGraph` on demand.

    Args:
        root_or_json: the folder holding pvsg.json (and the `<source>/masks` folders), or the
            JSON file itself.
        split: "val" or "train" keeps the videos that `split` lists under that name (any
            source); None keeps every video of `data`.
        workers: threads that decode a video's mask PNGs (default: one per CPU, at most 8);
            PNG decoding releases the GIL.

    The JSON is checked when the dataset is opened, the PNGs when a video is read; either
    raises `PvsgFormatError` naming the video (and frame). `check_pvsg` lists every problem.

    Ground-truth graphs: `video.file` = "<source>/videos/<video_id>.mp4" (relative to the
    root; its stem is the video id), `frame_index` 0..num_frames-1, fps from meta. One track per
    object, in file order, id = object_id, label = its class name, score 1.0, one frame per
    PNG where the object has pixels (an object off-screen has no frame there). One relation per
    row, in file order, score 1.0, predicates = the file's `relations` list, intervals = the
    row's ranges as sorted disjoint runs (overlapping ranges merged; ends past the last frame
    clipped).
    """

    def __init__(
        self,
        root_or_json: str | Path,
        *,
        split: Literal["train", "val"] | None = None,
        workers: int | None = None,
    ) -> None:
        self.json_path, self.root = pvsg_paths(root_or_json)
        meta = read_pvsg_json(self.json_path)
        problems = [p for p in _json_problems(meta) if p.blocking]
        if problems:
            more = (
                f" (and {len(problems) - 1} more problems: run `relate-anything data check`)"
                if len(problems) > 1
                else ""
            )
            raise PvsgFormatError(f"{self.json_path}: {problems[0]}{more}")
        self.thing_classes: tuple[str, ...] = tuple(meta["objects"]["thing"])
        self.stuff_classes: tuple[str, ...] = tuple(meta["objects"]["stuff"])
        self.categories: tuple[str, ...] = self.thing_classes + self.stuff_classes
        self.predicates: tuple[str, ...] = tuple(meta["relations"])
        self.split = split
        self.split_lists: dict[str, Any] = meta.get("split") or {}
        listed = None
        if split is not None:
            listed = {i for parts in self.split_lists.values() for i in (parts.get(split) or [])}
        self.records: list[dict[str, Any]] = [
            record for record in meta["data"] if listed is None or record["video_id"] in listed
        ]
        self.workers = workers if workers is not None else min(8, os.cpu_count() or 1)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[VideoSceneGraph]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> VideoSceneGraph:
        """The ground-truth graph of video `index` (decodes its mask PNGs)."""
        record = self.records[index]
        source = self.source(index)
        try:
            frames = _read_regions(self.root / source / "masks" / record["video_id"], record["meta"], self.workers)
        except _FrameProblem as problem:
            raise PvsgFormatError(f"video {record['video_id']}, frame {problem.frame}: {problem}") from None
        return ground_truth_graph(record, frames, predicates=self.predicates, source=source)

    @property
    def video_ids(self) -> list[str]:
        """The video ids of this dataset, in file order."""
        return [record["video_id"] for record in self.records]

    def index(self, video_id: str) -> int:
        """The position of `video_id` in this dataset (KeyError if it is not in it)."""
        for position, record in enumerate(self.records):
            if record["video_id"] == video_id:
                return position
        raise KeyError(video_id)

    def source(self, index: int) -> str:
        """The source folder of video `index` (vidor, epic_kitchen, ego4d, or a dataset's own)."""
        return source_of(self.records[index]["video_id"], self.split_lists)

    def mask_dir(self, index: int) -> Path:
        """The folder of video `index`'s mask PNGs."""
        return self.root / self.source(index) / "masks" / self.records[index]["video_id"]

    def video_path(self, index: int) -> Path:
        """Where the clip of video `index` is expected (<source>/videos/<video_id>.mp4)."""
        return self.root / self.source(index) / "videos" / f"{self.records[index]['video_id']}.mp4"

    def __repr__(self) -> str:
        return f"PvsgDataset({str(self.json_path)!r}, split={self.split!r}, videos={len(self)})"


def ground_truth_graph(
    record: Mapping[str, Any], frames: Sequence[LabelMapRegions], *, predicates: Sequence[str], source: str
) -> VideoSceneGraph:
    """The `VideoSceneGraph` of one (valid) video record, given its frames' regions."""
    meta = record["meta"]
    num_frames, height, width = int(meta["num_frames"]), int(meta["height"]), int(meta["width"])
    per_object: dict[int, list[TrackFrame]] = {int(o["object_id"]): [] for o in record["objects"]}
    for t, regions in enumerate(frames):
        boxes, areas = regions.boxes.tolist(), regions.areas.tolist()
        for position, object_id in enumerate(regions.ids.tolist()):
            if object_id in per_object:  # ids that are no object of the video are left out (check reports them)
                x0, y0, x1, y1 = boxes[position]
                per_object[object_id].append(
                    TrackFrame(
                        frame=t,
                        mask=regions.masks[position],
                        bbox=(float(x0), float(y0), float(x1), float(y1)),
                        area=areas[position],
                        score=1.0,
                    )
                )
    tracks = [
        Track(id=int(o["object_id"]), frames=tuple(per_object[int(o["object_id"])]), score=1.0, label=o["category"])
        for o in record["objects"]
    ]
    predicate_index = {name: i for i, name in enumerate(predicates)}
    relations = [
        VideoRelation(
            subject=int(s),
            predicate=p,
            predicate_id=predicate_index[p],
            object=int(o),
            score=1.0,
            intervals=_runs(relation_frames(ranges, num_frames)),
        )
        for s, o, p, ranges in record["relations"]
    ]
    fps = meta.get("fps")
    video = VideoInfo(
        width=width,
        height=height,
        frame_index=tuple(range(num_frames)),
        fps=None if fps is None else float(fps),
        sampled_fps=None if fps is None else float(fps),
        file=f"{source}/videos/{record['video_id']}.mp4",
    )
    return VideoSceneGraph(video=video, tracks=tracks, relations=relations, predicates=tuple(predicates))


def relation_frames(ranges: Iterable[Sequence[int]], num_frames: int) -> np.ndarray:
    """The sampled frames a relation's inclusive ranges cover, clipped to 0..num_frames-1: a
    sorted int64 array without repeats."""
    covered = np.zeros(num_frames, dtype=bool)
    for start, end in ranges:
        covered[max(0, int(start)) : min(num_frames, int(end) + 1)] = True
    return np.flatnonzero(covered)


def _runs(frames: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Maximal runs of consecutive frames as inclusive (start, end) pairs."""
    if not len(frames):
        return ()
    breaks = np.flatnonzero(np.diff(frames) > 1)
    starts = np.concatenate([[frames[0]], frames[breaks + 1]])
    ends = np.concatenate([frames[breaks], [frames[-1]]])
    return tuple((int(a), int(b)) for a, b in zip(starts, ends))


class _FrameProblem(Exception):
    """A problem with one frame's PNG; the caller adds the video id."""

    def __init__(self, frame: int, message: str) -> None:
        super().__init__(message)
        self.frame = frame


def _read_label_map(path: Path, frame: int, height: int, width: int) -> np.ndarray:
    """Object ids [H, W] of one mask PNG, checked for mode and size."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise _FrameProblem(frame, f"mask PNG {path} is {image.mode}, not single-channel (pixel = object_id)")
            labels = np.asarray(image)
    except FileNotFoundError:
        raise _FrameProblem(frame, f"mask PNG {path} not found") from None
    except OSError as error:
        raise _FrameProblem(frame, f"cannot read mask PNG {path}: {error}") from None
    if labels.shape != (height, width):
        raise _FrameProblem(
            frame, f"mask PNG is {labels.shape[0]}x{labels.shape[1]} (height x width), meta says {height}x{width}"
        )
    return labels


def _read_regions(mask_dir: Path, meta: Mapping[str, Any], workers: int) -> list[LabelMapRegions]:
    """Every frame's regions of one video, frames decoded by `workers` threads."""
    num_frames, height, width = int(meta["num_frames"]), int(meta["height"]), int(meta["width"])

    def read(frame: int) -> LabelMapRegions:
        return encode_label_map(_read_label_map(mask_path(mask_dir, frame), frame, height, width))

    if workers <= 1 or num_frames < 2:
        return [read(t) for t in range(num_frames)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(read, range(num_frames)))


# -- checking -----------------------------------------------------------------------------------


def check_pvsg(root_or_json: str | Path, *, workers: int | None = None) -> list[VideoProblem]:
    """Every problem of a PVSG dataset (all videos, whatever their split).

    The JSON: top-level keys and class / predicate lists, each video's keys and meta, object ids
    (positive, unique, at most 65535), classes and is_thing, relation rows (known object ids and
    predicates, ranges [start, end] with 0 <= start <= end < num_frames), the split lists. The
    files: every frame's PNG exists, is single-channel and has meta's size; every non-zero id in
    a PNG is an object of the video; every object appears in some PNG; no PNG past num_frames;
    every relation has a frame in its ranges where both its objects are in the masks (else no
    prediction can match it). Raises `PvsgFormatError` only when pvsg.json itself cannot be read
    or lacks a top-level key. JSON problems come first, then file problems, in video order.
    Videos are checked by `workers` threads (default: one per CPU).
    """
    json_path, root = pvsg_paths(root_or_json)
    meta = read_pvsg_json(json_path)
    problems = _json_problems(meta)
    broken = {p.video_id for p in problems if p.blocking}  # their files are not checked
    split = meta.get("split") if isinstance(meta.get("split"), dict) else None
    videos = [v for v in meta["data"] if isinstance(v, dict) and v.get("video_id") not in broken]

    def check(video: dict[str, Any]) -> list[VideoProblem]:
        source = source_of(video["video_id"], split)
        return _file_problems(video, root / source / "masks" / video["video_id"])

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for found in pool.map(check, videos):
            problems += found
    return problems


def _top_level_problems(meta: Any) -> list[VideoProblem]:
    if not isinstance(meta, dict):
        return [VideoProblem(None, "the top level is not a JSON object")]
    missing = [key for key in TOP_LEVEL_KEYS if key not in meta]
    if missing:
        return [
            VideoProblem(
                None, f"missing top-level key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
            )
        ]
    objects = meta["objects"]
    if not isinstance(objects, dict) or not all(
        isinstance(objects.get(kind), list) and all(isinstance(n, str) for n in objects[kind])
        for kind in ("thing", "stuff")
    ):
        return [VideoProblem(None, 'objects must be {"thing": [names], "stuff": [names]}')]
    if not isinstance(meta["relations"], list) or not all(isinstance(n, str) for n in meta["relations"]):
        return [VideoProblem(None, "relations must be a list of predicate names")]
    if not isinstance(meta["data"], list):
        return [VideoProblem(None, "data must be a list of videos")]
    return []


def _json_problems(meta: Mapping[str, Any]) -> list[VideoProblem]:
    problems = _top_level_problems(meta)
    if problems:
        return problems
    classes = list(meta["objects"]["thing"]) + list(meta["objects"]["stuff"])
    for what, names in (("class", classes), ("predicate", meta["relations"])):
        problems += [
            VideoProblem(None, f"{what} {name!r} is listed {n} times") for name, n in Counter(names).items() if n > 1
        ]
    vocabulary = _Vocabulary(set(classes), set(meta["objects"]["thing"]), set(meta["relations"]))
    ids = []
    for index, video in enumerate(meta["data"]):
        video_id = video.get("video_id") if isinstance(video, dict) else None
        name = video_id if isinstance(video_id, str) else f"data[{index}]"
        ids.append(name)
        problems += _video_problems(video, name, vocabulary)
    problems += [
        VideoProblem(None, f"video id {i!r} appears {n} times in data") for i, n in Counter(ids).items() if n > 1
    ]
    problems += _split_problems(meta.get("split"), set(ids))
    return problems


@dataclass(frozen=True)
class _Vocabulary:
    classes: set[str]
    things: set[str]
    predicates: set[str]


def _video_problems(video: Any, name: str, vocabulary: _Vocabulary) -> list[VideoProblem]:
    if not isinstance(video, dict):
        return [VideoProblem(name, "video record is not a JSON object")]
    missing = [key for key in VIDEO_KEYS if key not in video]
    if missing:
        return [VideoProblem(name, f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")]
    messages = []
    if not isinstance(video["video_id"], str) or not video["video_id"] or "/" in video["video_id"]:
        messages.append(f"video_id {video['video_id']!r} is not a non-empty name without '/'")
    meta = video["meta"]
    if not isinstance(meta, dict) or any(key not in meta for key in META_KEYS):
        messages.append(f"meta must be an object with {', '.join(META_KEYS)}")
    else:
        messages += [
            f"meta.{key} is {meta[key]!r}, not a positive integer"
            for key in META_KEYS
            if not _is_int(meta[key]) or meta[key] < 1
        ]
        fps = meta.get("fps")
        if "fps" in meta and not (isinstance(fps, int | float) and not isinstance(fps, bool) and fps > 0):
            messages.append(f"meta.fps is {fps!r}, not a positive number")
    objects = video["objects"]
    if messages or not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        return [VideoProblem(name, m) for m in messages or ["objects is not a list of objects"]]
    for index, item in enumerate(objects):
        messages += [f"objects[{index}]: {m}" for m in _object_problems(item, vocabulary)]
    counts = Counter(o.get("object_id") for o in objects)
    messages += [f"object_id {i} appears {n} times in objects" for i, n in counts.items() if n > 1]
    object_ids = {o.get("object_id") for o in objects}
    problems = [VideoProblem(name, m) for m in messages]
    return problems + _relation_problems(video["relations"], name, object_ids, vocabulary, int(meta["num_frames"]))


def _object_problems(item: dict[str, Any], vocabulary: _Vocabulary) -> list[str]:
    missing = [key for key in OBJECT_KEYS if key not in item]
    if missing:
        return [f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"]
    problems = []
    if not _is_int(item["object_id"]) or not 0 < item["object_id"] <= MAX_OBJECT_ID:
        problems.append(f"object_id {item['object_id']!r} is not an integer in 1..{MAX_OBJECT_ID} (0 is void)")
    category = item["category"]
    if category not in vocabulary.classes:
        problems.append(f"unknown class {category!r} (not in objects.thing or objects.stuff)")
    elif bool(item["is_thing"]) != (category in vocabulary.things):
        kind = "thing" if category in vocabulary.things else "stuff"
        problems.append(f"is_thing is {item['is_thing']!r} but {category!r} is a {kind} class")
    return problems


def _relation_problems(
    relations: Any, name: str, object_ids: set[Any], vocabulary: _Vocabulary, num_frames: int
) -> list[VideoProblem]:
    if not isinstance(relations, list):
        return [VideoProblem(name, "relations is not a list")]
    problems = []
    for index, row in enumerate(relations):
        if not (isinstance(row, list) and len(row) == 4 and isinstance(row[3], list)):
            problems.append(
                VideoProblem(
                    name, f"relation {index} is {row!r}, not [subject_id, object_id, predicate, [[start, end], ...]]"
                )
            )
            continue
        subject, object_, predicate, ranges = row
        messages = [
            f"{role} id {value!r} is not an object of the video"
            for role, value in (("subject", subject), ("object", object_))
            if value not in object_ids
        ]
        if subject == object_:
            messages.append(f"subject and object are the same object {subject!r}")
        if predicate not in vocabulary.predicates:
            messages.append(f"unknown predicate {predicate!r} (not in relations)")
        if not ranges:
            messages.append("no frame range")
        for pair in ranges:
            if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) for v in pair)):
                messages.append(f"range {pair!r} is not [start, end] (integers)")
            elif not 0 <= pair[0] <= pair[1]:
                messages.append(f"range {pair} must have 0 <= start <= end")
            elif pair[1] >= num_frames:
                problems.append(
                    VideoProblem(
                        name,
                        f"relation {index}: range {pair} runs past the last frame {num_frames - 1} "
                        "(ranges are inclusive; read as clipped to the video)",
                        blocking=False,
                    )
                )
        problems += [VideoProblem(name, f"relation {index}: {m}") for m in messages]
    return problems


def _split_problems(split: Any, video_ids: set[str]) -> list[VideoProblem]:
    if split is None:
        return []
    if not isinstance(split, dict) or not all(
        isinstance(parts, dict) and all(isinstance(ids, list) for ids in parts.values()) for parts in split.values()
    ):
        return [VideoProblem(None, 'split must be {source: {"train": [video ids], "val": [...]}}')]
    problems = []
    for source, parts in split.items():
        for name, ids in parts.items():
            unknown = [i for i in ids if i not in video_ids]
            if unknown:
                shown = ", ".join(map(str, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                problems.append(VideoProblem(None, f"split {source}/{name} lists videos not in data: {shown}"))
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _file_problems(video: Mapping[str, Any], mask_dir: Path) -> list[VideoProblem]:
    """Problems of one video's mask PNGs (its JSON is known to be valid)."""
    video_id = video["video_id"]
    meta = video["meta"]
    num_frames, height, width = int(meta["num_frames"]), int(meta["height"]), int(meta["width"])
    if not mask_dir.is_dir():
        return [VideoProblem(video_id, f"mask folder {mask_dir} not found")]
    position = {int(o["object_id"]): i for i, o in enumerate(video["objects"])}
    problems = []
    visible = np.zeros((num_frames, len(position)), dtype=bool)  # [frame, object]
    for t in range(num_frames):
        try:
            labels = _read_label_map(mask_path(mask_dir, t), t, height, width)
        except _FrameProblem as problem:
            problems.append(VideoProblem(video_id, str(problem), frame=t))
            continue
        present = _present_ids(labels)
        present = [int(i) for i in present.tolist() if i != 0]
        visible[t, [position[i] for i in present if i in position]] = True
        unknown = [i for i in present if i not in position]
        if unknown:
            problems.append(VideoProblem(video_id, f"mask ids {unknown} are not object_ids of the video", frame=t))
    absent = [i for i, p in position.items() if not visible[:, p].any()]
    if absent:
        problems.append(VideoProblem(video_id, f"object_ids {absent} appear in no mask PNG"))
    extra = sorted(
        int(m.group(1))
        for p in mask_dir.glob("*.png")
        if (m := re.fullmatch(r"(\d+)\.png", p.name)) and int(m.group(1)) >= num_frames
    )
    if extra:
        problems.append(
            VideoProblem(video_id, f"{len(extra)} mask PNGs past num_frames = {num_frames} (first: frame {extra[0]})")
        )
    for index, (subject, object_, predicate, ranges) in enumerate(video["relations"]):
        frames = relation_frames(ranges, num_frames)
        both = visible[frames, position[subject]] & visible[frames, position[object_]]
        if len(frames) and not both.any():
            problems.append(
                VideoProblem(
                    video_id,
                    f"relation {index} ({subject} {predicate} {object_}): the two objects are never both in the "
                    "masks within its ranges, so no prediction can match it",
                    blocking=False,
                )
            )
    return problems


# -- writing ------------------------------------------------------------------------------------


def write_pvsg(
    graphs: Mapping[str, VideoSceneGraph],
    out_dir: str | Path,
    *,
    source: str = "synthetic",
    val_ids: Iterable[str] = (),
    thing_classes: Sequence[str] | None = None,
    stuff_classes: Sequence[str] | None = None,
    predicates: Sequence[str] | None = None,
) -> Path:
    """Write graphs as a PVSG dataset: out_dir/pvsg.json and out_dir/<source>/masks/<video_id>/%04d.png.

    Each graph (keyed by its video id) becomes one video: meta from `graph.video` (fps: the
    sampled rate, else the video's, else 5, PVSG's); one object per track, in order, with
    object_id = its position + 1 (relations are rewritten to match), category = the track's
    `category` (it must be one of the classes), is_thing from the class lists; one relation row
    per relation, ranges = its intervals (scores are dropped: the format has none). Masks may
    overlap in a prediction: each frame is painted larger masks first, so a small object in
    front of a large one stays visible; a track hidden everywhere is an error. Videos listed in
    `val_ids` go to split[source]["val"], the others to "train". The class and predicate lists
    default to PVSG's (`relate_anything.pvsg`).

    Returns:
        The path of the written pvsg.json, e.g. for `PvsgDataset(path)`.
    """
    things = tuple(thing_classes) if thing_classes is not None else pvsg.thing_classes()
    stuff = tuple(stuff_classes) if stuff_classes is not None else pvsg.stuff_classes()
    vocabulary = tuple(predicates) if predicates is not None else pvsg.predicates()
    out = Path(out_dir)
    val = {str(i) for i in val_ids}
    unknown = sorted(val - set(graphs))
    if unknown:
        raise PvsgFormatError(f"val_ids {unknown} are not among the graphs' video ids")
    records = [
        _write_video(
            video_id, graph, out / source / "masks" / video_id, set(things), set(things + stuff), set(vocabulary)
        )
        for video_id, graph in graphs.items()
    ]
    meta = {
        "objects": {"thing": list(things), "stuff": list(stuff)},
        "relations": list(vocabulary),
        "split": {source: {"train": [i for i in graphs if i not in val], "val": [i for i in graphs if i in val]}},
        "data": records,
    }
    path = out / "pvsg.json"
    path.write_text(json.dumps(meta))
    return path


def _write_video(
    video_id: str, graph: VideoSceneGraph, mask_dir: Path, things: set[str], classes: set[str], predicates: set[str]
) -> dict[str, Any]:
    if not video_id or "/" in video_id or video_id in (".", ".."):
        raise PvsgFormatError(f"video id {video_id!r} must be a non-empty name without '/'")
    if len(graph.tracks) > MAX_OBJECT_ID:
        raise PvsgFormatError(f"video {video_id}: {len(graph.tracks)} tracks, more than a 16-bit PNG can hold")
    for track in graph.tracks:
        if track.category not in classes:
            raise PvsgFormatError(
                f"video {video_id}: track {track.id} is labelled {track.category!r}, not one of the dataset's classes "
                "(PVSG's 126 by default, e.g. 'adult', 'dog', 'grass')"
            )
    for relation in graph.relations:
        if relation.predicate not in predicates:
            raise PvsgFormatError(f"video {video_id}: predicate {relation.predicate!r} is not one of the dataset's")
    object_id = {track.id: position + 1 for position, track in enumerate(graph.tracks)}
    mask_dir.mkdir(parents=True, exist_ok=True)
    seen = np.zeros(len(graph.tracks) + 1, dtype=bool)
    by_frame: list[list[tuple[int, TrackFrame]]] = [[] for _ in range(graph.num_frames)]
    for position, track in enumerate(graph.tracks):
        for item in track.frames:
            by_frame[item.frame].append((position, item))
    for t, items in enumerate(by_frame):
        labels = np.zeros((graph.height, graph.width), dtype=np.uint32)
        if items:
            painted = _paint(np.stack([item.decode() for _, item in items]))  # index k -> k + 1, larger first
            lookup = np.array([0] + [position + 1 for position, _ in items], dtype=np.uint32)
            labels = lookup[painted]
        seen[np.unique(labels)] = True
        dtype = np.uint8 if len(graph.tracks) < 256 else np.uint16
        Image.fromarray(labels.astype(dtype)).save(mask_path(mask_dir, t))
    hidden = [track.id for position, track in enumerate(graph.tracks) if not seen[position + 1]]
    if hidden:
        raise PvsgFormatError(
            f"video {video_id}: tracks {hidden} have no visible pixel on any frame once masks are painted, "
            "so the mask PNGs cannot hold them"
        )
    fps = graph.video.sampled_fps or graph.video.fps or 5.0
    return {
        "video_id": video_id,
        "meta": {
            "height": graph.height,
            "width": graph.width,
            "fps": fps,
            "num_frames": graph.num_frames,
            "duration": graph.num_frames / fps,
        },
        "objects": [
            {"object_id": object_id[t.id], "category": t.category, "is_thing": t.category in things}
            for t in graph.tracks
        ],
        "relations": [
            [object_id[r.subject], object_id[r.object], r.predicate, [list(i) for i in r.intervals]]
            for r in graph.relations
        ],
    }
