"""PSG-format data in and out: read psg.json + panoptic PNGs as `SceneGraph`s, check, write.

The format (see shared/psg/format.md): one psg.json with `data` (one record per image),
`thing_classes`, `stuff_classes`, `predicate_classes` and `test_image_ids`, plus one RGB panoptic
PNG per image whose pixel value R + 256·G + 256²·B is the id of the segment covering it (0 =
unlabeled). Relations are `[subject_index, object_index, predicate_index]`, the indices pointing
into the record's `segments_info`.

Ground truth is a `SceneGraph` like any prediction:

    >>> dataset = PsgDataset("data/psg", split="test")
    >>> graph = dataset[0]          # decodes that image's PNG now, not before
    >>> graph.masks().shape         # [N, H, W] bool, N = len(segments_info)
    >>> [graph.describe(r) for r in graph.relations]   # "person #0 standing on grass-merged #3 (1.00)"

Three entry points: `PsgDataset` (read, fails on the first problem it meets), `check_psg` (every
problem of a dataset, for the `data check` command) and `write_psg` (graphs -> PSG files).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from relate_anything import psg
from relate_anything.errors import UsageError
from relate_anything.scene_graph import Relation, SceneGraph, Segment

TOP_LEVEL_KEYS = ("data", "thing_classes", "stuff_classes", "predicate_classes", "test_image_ids")
RECORD_KEYS = (
    "image_id",
    "file_name",
    "height",
    "width",
    "pan_seg_file_name",
    "segments_info",
    "annotations",
    "relations",
)
SEGMENT_KEYS = ("id", "category_id")

ImageSource = str | Path | np.ndarray | Image.Image


class PsgFormatError(UsageError):
    """A PSG-format dataset that cannot be read; the message names the image and the problem."""


@dataclass(frozen=True)
class Problem:
    """One problem of a PSG dataset: the image it concerns (None: the file as a whole) and what is wrong."""

    image_id: str | None
    message: str

    def __str__(self) -> str:
        return f"psg.json: {self.message}" if self.image_id is None else f"image {self.image_id}: {self.message}"


# -- reading ------------------------------------------------------------------------------------


def read_psg_json(root_or_json: str | Path) -> dict[str, Any]:
    """Load psg.json (a folder holding it, or the file itself) and check its top-level keys."""
    path = psg_paths(root_or_json)[0]
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise PsgFormatError(f"{path}: no such file (a PSG dataset is a psg.json with panoptic PNGs)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PsgFormatError(f"{path}: cannot read it as JSON: {error}") from None
    problems = _top_level_problems(meta)
    if problems:
        raise PsgFormatError(f"{path}: {problems[0].message}")
    return meta


class PsgDataset:
    """The images of a PSG-format dataset, each read as a ground-truth `SceneGraph` on demand.

    Args:
        root_or_json: the folder holding psg.json, or the JSON file itself (competition variants
            keep the same records under other names).
        images_root: folder that `file_name` is relative to (default: the JSON's folder).
        panoptic_root: folder that `pan_seg_file_name` is relative to (default: `images_root`).
        split: "test" keeps the images listed in `test_image_ids`, "train" every other one,
            None all of them.
        keep_without_relations: keep images that have no relation. The PSG protocol leaves them
            out of training and evaluation, so they are dropped by default.

    The JSON side (keys, category/predicate/segment indices, duplicate ids) is checked for every
    record when the dataset is opened; the files (image, PNG ids and size) when an image is read.
    Either raises `PsgFormatError` with the image id; `check_psg` lists every problem instead.

    Ground-truth graphs: `image_id` and `file` (`file_name`, relative) from the record; one segment
    per `segments_info` entry, in order, with `id` = its index (the index relations use), `label`
    = its category name, `score` 1.0, `label_score` None; one `Relation` per `[s, o, p]` row in file
    order (a pair may carry several predicates), score 1.0, predicate names from the file's
    `predicate_classes`.
    """

    def __init__(
        self,
        root_or_json: str | Path,
        *,
        images_root: str | Path | None = None,
        panoptic_root: str | Path | None = None,
        split: Literal["train", "test"] | None = None,
        keep_without_relations: bool = False,
    ) -> None:
        if split not in ("train", "test", None):
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        self.json_path, self.images_root, self.panoptic_root = psg_paths(
            root_or_json, images_root=images_root, panoptic_root=panoptic_root
        )
        meta = read_psg_json(self.json_path)
        problems = _records_problems(meta)
        if problems:
            more = (
                f" (and {len(problems) - 1} more problems: run `relate-anything data check`)"
                if len(problems) > 1
                else ""
            )
            raise PsgFormatError(f"{self.json_path}: {problems[0]}{more}")
        self.categories: tuple[str, ...] = tuple(meta["thing_classes"]) + tuple(meta["stuff_classes"])
        self.predicates: tuple[str, ...] = tuple(meta["predicate_classes"])
        self.test_image_ids: frozenset[str] = frozenset(str(i) for i in meta["test_image_ids"])
        self.split = split
        self.records: list[dict[str, Any]] = [
            record
            for record in meta["data"]
            if (keep_without_relations or record["relations"]) and self._in_split(str(record["image_id"]))
        ]

    def _in_split(self, image_id: str) -> bool:
        if self.split is None:
            return True
        return (image_id in self.test_image_ids) == (self.split == "test")

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[SceneGraph]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> SceneGraph:
        """The ground-truth graph of image `index` (decodes its panoptic PNG)."""
        record = self.records[index]
        try:
            png_ids = _read_png_ids(self.panoptic_path(index), record)
        except _FileProblem as problem:
            raise PsgFormatError(f"image {record['image_id']}: {problem}") from None
        segment_ids = np.array([int(s["id"]) for s in record["segments_info"]], dtype=np.uint32)
        masks = png_ids[None] == segment_ids[:, None, None]
        empty = segment_ids[~masks.any(axis=(1, 2))].tolist()
        if empty:
            raise PsgFormatError(f"image {record['image_id']}: {_missing_ids_message(empty)}")
        return _graph(record, masks, self.categories, self.predicates)

    @property
    def image_ids(self) -> list[str]:
        """PSG image ids (strings) of the images in this dataset, in order."""
        return [str(record["image_id"]) for record in self.records]

    def image_path(self, index: int) -> Path:
        """Where the photo of image `index` is (images_root / file_name)."""
        return self.images_root / self.records[index]["file_name"]

    def panoptic_path(self, index: int) -> Path:
        """Where the panoptic PNG of image `index` is (panoptic_root / pan_seg_file_name)."""
        return self.panoptic_root / self.records[index]["pan_seg_file_name"]

    def __repr__(self) -> str:
        return f"PsgDataset({str(self.json_path)!r}, split={self.split!r}, images={len(self)})"


def _graph(
    record: Mapping[str, Any], masks: np.ndarray, categories: Sequence[str], predicates: Sequence[str]
) -> SceneGraph:
    """The ground-truth SceneGraph of one record, given its segment masks [N, H, W] bool."""
    ids = [int(s["category_id"]) for s in record["segments_info"]]
    labels = [categories[i] for i in ids]
    # Category ids are PSG's only when the file uses PSG's class list (a variant may not).
    category_ids = ids if tuple(categories) == psg.categories() else None
    graph = SceneGraph.from_masks(
        masks, np.ones(len(masks)), labels=labels, category_ids=category_ids, file=record["file_name"]
    )
    relations = [
        Relation(subject=int(s), object=int(o), predicate=predicates[int(p)], predicate_id=int(p), score=1.0)
        for s, o, p in record["relations"]
    ]
    return replace(graph, image_id=str(record["image_id"]), predicates=tuple(predicates), relations=relations)


class _FileProblem(Exception):
    """A problem with one record's files; the caller adds the image id."""


def _read_png_ids(path: Path, record: Mapping[str, Any]) -> np.ndarray:
    """Segment ids of a panoptic PNG, R + 256·G + 256²·B, as uint32 [H, W] (the record's size)."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise _FileProblem(f"panoptic PNG {path} not found") from None
    except OSError as error:
        raise _FileProblem(f"cannot read panoptic PNG {path}: {error}") from None
    height, width = int(record["height"]), int(record["width"])
    if rgb.shape[:2] != (height, width):
        raise _FileProblem(
            f"panoptic PNG is {rgb.shape[0]}x{rgb.shape[1]} (height x width), the record says {height}x{width}"
        )
    ids = rgb[..., 2].astype(np.uint32) << 16
    ids |= rgb[..., 1].astype(np.uint32) << 8
    ids |= rgb[..., 0]
    return ids


def _missing_ids_message(ids: list[int]) -> str:
    return f"segment ids {ids} of segments_info are not in the panoptic PNG"


def psg_paths(
    root_or_json: str | Path,
    *,
    images_root: str | Path | None = None,
    panoptic_root: str | Path | None = None,
) -> tuple[Path, Path, Path]:
    """(psg.json, images root, panoptic root) of a dataset: the JSON is root/psg.json when given a
    folder; images are relative to the JSON's folder and PNGs to the images root unless given."""
    path = Path(root_or_json)
    json_path = path / "psg.json" if path.is_dir() else path
    images = Path(images_root) if images_root is not None else json_path.parent
    return json_path, images, Path(panoptic_root) if panoptic_root is not None else images


# -- checking -----------------------------------------------------------------------------------


def check_psg(
    root_or_json: str | Path,
    *,
    images_root: str | Path | None = None,
    panoptic_root: str | Path | None = None,
    workers: int | None = None,
) -> list[Problem]:
    """Every problem of a PSG dataset (all images, with or without relations).

    Checks the JSON (keys, category/predicate/segment indices, parallel `annotations`, duplicate
    ids) and the files: the photo exists and has the record's size, the PNG exists, has the
    record's size, contains every `segments_info` id and no other non-zero id. An empty list
    means `PsgDataset` will read every image. Raises `PsgFormatError` only when psg.json itself
    cannot be read or lacks a top-level key. Problems of the JSON come first, then those of the
    files, each in record order. Files are checked by `workers` threads (default: one per CPU);
    decoding the PNG dominates, a few ms per 640x480 image and thread.
    """
    json_path, images, panoptic = psg_paths(root_or_json, images_root=images_root, panoptic_root=panoptic_root)
    return check_records(read_psg_json(json_path), images_root=images, panoptic_root=panoptic, workers=workers)


def check_records(
    meta: Mapping[str, Any],
    *,
    images_root: str | Path,
    panoptic_root: str | Path,
    workers: int | None = None,
) -> list[Problem]:
    """`check_psg` on an already loaded psg.json (`read_psg_json`), files relative to the roots."""
    problems = _top_level_problems(meta)
    if problems:
        return problems
    problems = _records_problems(meta)
    broken = {p.image_id for p in problems}  # their files are not checked: the JSON cannot be trusted
    ids = [_record_id(record, index) for index, record in enumerate(meta["data"])]
    records = [(image_id, record) for image_id, record in zip(ids, meta["data"]) if image_id not in broken]

    def check_files(item: tuple[str, dict[str, Any]]) -> list[Problem]:
        return [Problem(item[0], m) for m in _file_problems(item[1], Path(images_root), Path(panoptic_root))]

    # PNG decoding dominates and Pillow releases the GIL while it decodes, so threads help.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for found in pool.map(check_files, records):
            problems += found
    return problems


def _top_level_problems(meta: Any) -> list[Problem]:
    if not isinstance(meta, dict):
        return [Problem(None, "top level is not a JSON object")]
    problems = [Problem(None, f"missing top-level key {key!r}") for key in TOP_LEVEL_KEYS if key not in meta]
    problems += [
        Problem(None, f"top-level {key!r} is not a list")
        for key in TOP_LEVEL_KEYS
        if key in meta and not isinstance(meta[key], list)
    ]
    return problems


def _records_problems(meta: Mapping[str, Any]) -> list[Problem]:
    """JSON-level problems of every record (no file is opened), plus duplicate image ids."""
    n_things = len(meta["thing_classes"])
    n_categories = n_things + len(meta["stuff_classes"])
    n_predicates = len(meta["predicate_classes"])
    problems = []
    for index, record in enumerate(meta["data"]):
        messages = _record_problems(record, n_categories=n_categories, n_things=n_things, n_predicates=n_predicates)
        problems += [Problem(_record_id(record, index), m) for m in messages]
    counts = Counter(_record_id(r, i) for i, r in enumerate(meta["data"]))
    return problems + [Problem(i, f"image id appears {n} times in data") for i, n in counts.items() if n > 1]


def _record_id(record: Any, index: int) -> str:
    """A record's image id, or `data[index]` for a record without one."""
    if isinstance(record, dict) and "image_id" in record:
        return str(record["image_id"])
    return f"data[{index}]"


def _record_problems(record: Any, *, n_categories: int, n_things: int, n_predicates: int) -> list[str]:
    if not isinstance(record, dict):
        return ["record is not a JSON object"]
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        return [f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"]
    problems = [
        f"{key} is {record[key]!r}, not a positive integer"
        for key in ("height", "width")
        if not _is_int(record[key]) or record[key] < 1
    ]
    problems += [
        f"{key} is {record[key]!r}, not a relative path"
        for key in ("file_name", "pan_seg_file_name")
        if not isinstance(record[key], str)
    ]
    segments = record["segments_info"]
    if not isinstance(segments, list) or not all(isinstance(s, dict) for s in segments):
        return problems + ["segments_info is not a list of objects"]
    for index, segment in enumerate(segments):
        problems += [f"segments_info[{index}]: {m}" for m in _segment_problems(segment, n_categories, n_things)]
    ids = Counter(s.get("id") for s in segments)
    problems += [f"segment id {i} appears {n} times in segments_info" for i, n in ids.items() if n > 1]
    problems += _annotation_problems(record["annotations"], segments)
    problems += _relation_problems(record["relations"], len(segments), n_predicates)
    return problems


def _segment_problems(segment: dict[str, Any], n_categories: int, n_things: int) -> list[str]:
    missing = [key for key in SEGMENT_KEYS if key not in segment]
    if missing:
        return [f"missing key {', '.join(map(repr, missing))}"]
    problems = []
    if not _is_int(segment["id"]) or not 0 < segment["id"] < 256**3:
        problems.append(f"segment id {segment['id']!r} is not an integer in 1..{256**3 - 1} (0 is unlabeled)")
    category = segment["category_id"]
    if not _is_int(category) or not 0 <= category < n_categories:
        problems.append(f"category_id {category!r} out of range 0..{n_categories - 1}")
    elif "isthing" in segment and bool(segment["isthing"]) != (category < n_things):
        kind = "thing" if category < n_things else "stuff"
        problems.append(f"isthing is {segment['isthing']!r} but category_id {category} is a {kind} class")
    return problems


def _annotation_problems(annotations: Any, segments: list[dict[str, Any]]) -> list[str]:
    if not isinstance(annotations, list) or len(annotations) != len(segments):
        count = len(annotations) if isinstance(annotations, list) else type(annotations).__name__
        return [f"annotations has {count} entries, segments_info has {len(segments)}: they must be parallel"]
    return [
        f"annotations[{i}].category_id {a.get('category_id')!r} differs from "
        f"segments_info[{i}].category_id {s.get('category_id')!r}"
        for i, (a, s) in enumerate(zip(annotations, segments))
        if isinstance(a, dict) and "category_id" in a and a["category_id"] != s.get("category_id")
    ]


def _relation_problems(relations: Any, n_segments: int, n_predicates: int) -> list[str]:
    if not isinstance(relations, list):
        return ["relations is not a list"]
    problems = []
    for index, row in enumerate(relations):
        if not isinstance(row, list) or len(row) != 3 or not all(_is_int(v) for v in row):
            problems.append(f"relation {index} is {row!r}, not [subject_index, object_index, predicate_index]")
            continue
        subject, object_, predicate = row
        for role, value in (("subject", subject), ("object", object_)):
            if not 0 <= value < n_segments:
                problems.append(
                    f"relation {index}: {role} index {value} out of range (the image has {n_segments} segments)"
                )
        if not 0 <= predicate < n_predicates:
            problems.append(f"relation {index}: predicate index {predicate} out of range 0..{n_predicates - 1}")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _file_problems(record: Mapping[str, Any], images_root: Path, panoptic_root: Path) -> list[str]:
    """Problems of one record's photo and panoptic PNG (the record's JSON is known to be valid)."""
    problems = _image_problems(images_root / record["file_name"], int(record["height"]), int(record["width"]))
    try:
        png_ids = _read_png_ids(panoptic_root / record["pan_seg_file_name"], record)
    except _FileProblem as problem:
        return problems + [str(problem)]
    return problems + _png_id_problems(png_ids, [int(s["id"]) for s in record["segments_info"]])


def _image_problems(path: Path, height: int, width: int) -> list[str]:
    """The photo exists, is readable and has the record's size (reads the header only)."""
    try:
        with Image.open(path) as image:
            size = (image.height, image.width)
    except FileNotFoundError:
        return [f"image file {path} not found"]
    except OSError as error:
        return [f"cannot read image {path}: {error}"]
    if size != (height, width):
        return [f"image {path} is {size[0]}x{size[1]} (height x width), the record says {height}x{width}"]
    return []


def _png_id_problems(png_ids: np.ndarray, segment_ids: list[int]) -> list[str]:
    present = set(_present_ids(png_ids).tolist()) - {0}
    problems = []
    missing = [i for i in segment_ids if i not in present]
    if missing:
        problems.append(_missing_ids_message(missing))
    extra = sorted(present - set(segment_ids))
    if extra:
        problems.append(f"panoptic PNG has ids {extra} that are not in segments_info")
    return problems


def _present_ids(png_ids: np.ndarray) -> np.ndarray:
    """The distinct values of a label image, fast: np.unique over the starts of horizontal runs.

    Panoptic PNGs are piecewise constant, so a 640x480 image has a few thousand runs against
    300k pixels; sorting those instead of every pixel makes checking thousands of images take
    seconds.
    """
    flat = png_ids.ravel()
    starts = np.empty(flat.shape, dtype=bool)
    starts[:1] = True
    np.not_equal(flat[1:], flat[:-1], out=starts[1:])
    return np.unique(flat[starts])


# -- writing ------------------------------------------------------------------------------------


def write_psg(
    graphs: Iterable[SceneGraph],
    out_dir: str | Path,
    *,
    test_image_ids: Iterable[str] = (),
    images: Mapping[str, ImageSource] | None = None,
) -> Path:
    """Write graphs as a PSG dataset: out_dir/psg.json and out_dir/panoptic/<stem>.png.

    Each graph becomes one record: `image_id` = `graph.image_id` (else its position, as a
    string), `file_name` = `graph.file` (a relative path; else `images/<image_id>.jpg`),
    `pan_seg_file_name` = `panoptic/<stem of file_name>.png`. Segments keep their order and get
    PNG ids 1..N; `category_id` comes from `segment.label`, which must be one of PSG's 133
    category names; relations are rewritten from segment ids to segment indices, with their
    `predicate_id` (scores are dropped: the format has none). The class lists are PSG's; the
    predicate list is the graphs' (they must all share one).

    PSG panoptic masks do not overlap, but predicted ones may: masks are painted in order of
    decreasing area (ties: later segments on top), so a small object in front of a large one
    stays visible. A segment left with no visible pixel is an error, since the PNG could not
    hold it. `area` and `annotations[].bbox` ([x1, y1, x2, y2], pixel edges) describe the
    painted (visible) mask, so `PsgDataset(out_dir)` gives back the input graphs exactly when
    their masks do not overlap, their segment ids are 0..N-1, scores 1.0 and no label scores.

    Args:
        graphs: scene graphs with labelled segments.
        out_dir: folder to write (created if needed; existing files are overwritten).
        test_image_ids: image ids listed as held out for testing.
        images: optional photos by image id (a file to copy, an RGB array [H, W, 3] uint8 or a
            PIL image, saved in the format `file_name`'s suffix names) written to out_dir/file_name.

    Returns:
        The path of the written psg.json.
    """
    out = Path(out_dir)
    records, predicates = [], None
    for position, graph in enumerate(graphs):
        if predicates is not None and tuple(graph.predicates) != predicates:
            raise PsgFormatError(f"image {graph.image_id or position}: predicate list differs from the first graph's")
        predicates = tuple(graph.predicates)
        records.append(_write_record(graph, position, out))
    _check_unique(records)
    test_ids = [str(i) for i in test_image_ids]
    unknown = sorted(set(test_ids) - {r["image_id"] for r in records})
    if unknown:
        raise PsgFormatError(f"test_image_ids {unknown} are not among the graphs' image ids")
    by_id = {record["image_id"]: record for record in records}
    for image_id, source in (images or {}).items():
        if str(image_id) not in by_id:
            raise PsgFormatError(f"image {image_id}: given in images but no graph has this image id")
        _write_image(source, out / by_id[str(image_id)]["file_name"], by_id[str(image_id)])
    meta = {
        "data": records,
        "thing_classes": list(psg.thing_classes()),
        "stuff_classes": list(psg.stuff_classes()),
        "predicate_classes": list(predicates or psg.predicates()),
        "test_image_ids": test_ids,
    }
    path = out / "psg.json"
    path.write_text(json.dumps(meta))
    return path


def _write_record(graph: SceneGraph, position: int, out: Path) -> dict[str, Any]:
    """Paint one graph's panoptic PNG under `out` and return its psg.json record."""
    image_id = graph.image_id if graph.image_id is not None else str(position)
    file_name = graph.file if graph.file is not None else f"images/{image_id}.jpg"
    if Path(file_name).is_absolute() or ".." in Path(file_name).parts:
        raise PsgFormatError(f"image {image_id}: file {file_name!r} must be a path relative to the dataset folder")
    category_ids = [_category_id(segment, image_id) for segment in graph.segments]
    png_ids = _paint(graph.masks())
    png_name = f"panoptic/{Path(file_name).stem}.png"
    (out / png_name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_encode_ids(png_ids)).save(out / png_name)
    segments_info, annotations = [], []
    for index, category in enumerate(category_ids):
        visible = png_ids == index + 1
        if not visible.any():
            raise PsgFormatError(
                f"image {image_id}: segment {graph.segments[index].id} has no visible pixel once masks are painted "
                "(larger first), so a panoptic PNG cannot hold it"
            )
        is_thing = int(category < len(psg.thing_classes()))
        area = int(visible.sum())
        segments_info.append(
            {"id": index + 1, "category_id": category, "iscrowd": 0, "isthing": is_thing, "area": area}
        )
        annotations.append({"bbox": _bbox(visible), "bbox_mode": 0, "category_id": category})
    index_of = {segment.id: index for index, segment in enumerate(graph.segments)}
    relations = [[index_of[r.subject], index_of[r.object], r.predicate_id] for r in graph.relations]
    return {
        "file_name": file_name,
        "height": graph.height,
        "width": graph.width,
        "image_id": image_id,
        "coco_image_id": image_id,
        "pan_seg_file_name": png_name,
        "segments_info": segments_info,
        "annotations": annotations,
        "relations": relations,
    }


def _category_id(segment: Segment, image_id: str) -> int:
    """PSG's category id of a segment: its `category_id`, else its label looked up by name."""
    categories = psg.categories()
    if segment.category_id is not None:
        if not 0 <= segment.category_id < len(categories):
            raise PsgFormatError(
                f"image {image_id}: segment {segment.id} has category_id {segment.category_id}, not 0..132"
            )
        return segment.category_id
    if segment.label not in categories:
        raise PsgFormatError(
            f"image {image_id}: segment {segment.id} is labelled {segment.label!r}, not one of PSG's 133 category names "
            "(e.g. 'person', 'sky-other-merged')"
        )
    return categories.index(segment.label)


def _paint(masks: np.ndarray) -> np.ndarray:
    """Panoptic ids [H, W] uint32 from masks [N, H, W]: segment k gets id k + 1, larger masks first."""
    png_ids = np.zeros(masks.shape[1:], dtype=np.uint32)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    for index in np.argsort(-areas, kind="stable"):
        png_ids[masks[index]] = index + 1
    return png_ids


def _encode_ids(png_ids: np.ndarray) -> np.ndarray:
    """RGB [H, W, 3] uint8 with R + 256·G + 256²·B = id."""
    return np.stack([png_ids % 256, png_ids // 256 % 256, png_ids // 65536 % 256], axis=-1).astype(np.uint8)


def _bbox(mask: np.ndarray) -> list[int]:
    """[x1, y1, x2, y2] pixel edges of a non-empty mask [H, W]."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _check_unique(records: list[dict[str, Any]]) -> None:
    for key, what in (("image_id", "image id"), ("pan_seg_file_name", "panoptic PNG name")):
        counts = Counter(r[key] for r in records)
        duplicates = sorted(k for k, n in counts.items() if n > 1)
        if duplicates:
            raise PsgFormatError(f"{what}s {duplicates} are used by more than one graph")


def _write_image(source: ImageSource, path: Path, record: Mapping[str, Any]) -> None:
    """Copy (a file) or save (an array or PIL image) one photo to `path`, once its size is checked."""
    is_file = isinstance(source, str | Path)
    if is_file:
        with Image.open(source) as opened:
            size = (opened.height, opened.width)
    else:
        image = Image.fromarray(source) if isinstance(source, np.ndarray) else source
        size = (image.height, image.width)
    if size != (record["height"], record["width"]):
        raise PsgFormatError(
            f"image {record['image_id']}: photo is {size[0]}x{size[1]} (height x width), "
            f"the graph is {record['height']}x{record['width']}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_file:
        shutil.copyfile(source, path)
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        image.convert("RGB").save(path, quality=90)
    else:
        image.save(path)
