"""PSG-format data in and out: a hand-built dataset read back, every malformed case, write -> read."""

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from relate_anything import psg
from relate_anything.datasets import PsgDataset, PsgFormatError, check_psg, write_psg
from relate_anything.datasets.cli import app
from relate_anything.scene_graph import Relation, SceneGraph

runner = CliRunner()

# A 4-category, 2-predicate dataset: labels and predicate names must come from the file's lists.
THINGS, STUFF, PREDICATES = ["person", "dog"], ["sky", "grass"], ["over", "standing on"]
H, W = 6, 8

# Image 101: sky (rows 0-2), grass (rows 3-5), a person (rows 1-4, columns 2-3) and a dog (row 5,
# columns 5-7). Segment ids exercise all three PNG channels: 5 = R, 300 = R + 256 G, 70000 = ... + 256² B.
MASK_PERSON = np.zeros((H, W), bool)
MASK_PERSON[1:5, 2:4] = True
MASK_DOG = np.zeros((H, W), bool)
MASK_DOG[5, 5:8] = True
MASK_SKY = np.zeros((H, W), bool)
MASK_SKY[:3] = True
MASK_SKY &= ~MASK_PERSON
MASK_GRASS = ~(MASK_SKY | MASK_PERSON | MASK_DOG)
RGB_OF_ID = {5: (5, 0, 0), 300: (44, 1, 0), 70000: (112, 17, 1), 9: (9, 0, 0)}


def _png(masks_and_ids: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """RGB [H, W, 3] uint8 panoptic PNG, written with the channel values spelled out by hand."""
    rgb = np.zeros((H, W, 3), np.uint8)
    for mask, segment_id in masks_and_ids:
        rgb[mask] = RGB_OF_ID[segment_id]
    return rgb


def _record(image_id: str, segments: list[tuple[int, int]], relations: list[list[int]]) -> dict:
    return {
        "file_name": f"images/{image_id}.jpg",
        "height": H,
        "width": W,
        "image_id": image_id,
        "coco_image_id": image_id,
        "pan_seg_file_name": f"panoptic/{image_id}.png",
        "segments_info": [
            {"id": i, "category_id": c, "iscrowd": 0, "isthing": int(c < 2), "area": 1} for i, c in segments
        ],
        "annotations": [{"bbox": [0, 0, 1, 1], "bbox_mode": 0, "category_id": c} for _, c in segments],
        "relations": relations,
    }


def _write_tiny(root: Path, meta: dict | None = None) -> dict:
    """Three images: 101 (train, 3 relations, one pair multi-label), 102 (test), 103 (no relations)."""
    pngs = {
        "101": _png([(MASK_SKY, 5), (MASK_PERSON, 300), (MASK_GRASS, 70000), (MASK_DOG, 9)]),
        "102": _png([(MASK_SKY, 5), (~MASK_SKY, 70000)]),
        "103": _png([(np.ones((H, W), bool), 5)]),
    }
    if meta is None:
        meta = {
            "data": [
                # segments_info order is not id order: segment indices, not ids, name segments
                _record("101", [(300, 0), (5, 2), (70000, 3), (9, 1)], [[0, 2, 1], [0, 2, 0], [3, 2, 1]]),
                _record("102", [(5, 2), (70000, 3)], [[0, 1, 0]]),
                _record("103", [(5, 2)], []),
            ],
            "thing_classes": THINGS,
            "stuff_classes": STUFF,
            "predicate_classes": PREDICATES,
            "test_image_ids": ["102"],
        }
    for folder in ("images", "panoptic"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image_id, rgb in pngs.items():
        Image.fromarray(rgb).save(root / "panoptic" / f"{image_id}.png")
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(root / "images" / f"{image_id}.jpg")
    (root / "psg.json").write_text(json.dumps(meta))
    return meta


@pytest.fixture
def tiny(tmp_path) -> Path:
    _write_tiny(tmp_path)
    return tmp_path


def _rewrite(root: Path, change) -> None:
    meta = json.loads((root / "psg.json").read_text())
    change(meta)
    (root / "psg.json").write_text(json.dumps(meta))


# -- reading --------------------------------------------------------------------------------------


def test_reads_masks_labels_and_relations(tiny):
    dataset = PsgDataset(tiny)
    assert len(dataset) == 2 and dataset.image_ids == ["101", "102"]  # 103 has no relation
    graph = dataset[0]
    assert isinstance(graph, SceneGraph)
    assert (graph.image_id, graph.file, graph.width, graph.height) == ("101", "images/101.jpg", W, H)
    assert [s.id for s in graph.segments] == [0, 1, 2, 3]
    assert [s.label for s in graph.segments] == ["person", "sky", "grass", "dog"]
    assert all(s.score == 1.0 and s.label_score is None for s in graph.segments)
    masks = graph.masks()
    for got, expected in zip(masks, [MASK_PERSON, MASK_SKY, MASK_GRASS, MASK_DOG]):
        np.testing.assert_array_equal(got, expected)
    assert graph.segments[0].bbox == (2, 1, 4, 5) and graph.segments[0].area == 8
    assert graph.predicates == tuple(PREDICATES)
    assert graph.relations == [
        Relation(subject=0, object=2, predicate="standing on", predicate_id=1, score=1.0),
        Relation(subject=0, object=2, predicate="over", predicate_id=0, score=1.0),
        Relation(subject=3, object=2, predicate="standing on", predicate_id=1, score=1.0),
    ]


def test_split_paths_and_records(tiny):
    assert PsgDataset(tiny, split="train").image_ids == ["101"]
    test = PsgDataset(tiny / "psg.json", split="test")
    assert test.image_ids == ["102"] and test.records[0]["image_id"] == "102"
    assert test.image_path(0) == tiny / "images/102.jpg" and test.panoptic_path(0) == tiny / "panoptic/102.png"
    everything = PsgDataset(tiny, keep_without_relations=True)
    assert everything.image_ids == ["101", "102", "103"] and everything[2].relations == []
    assert [g.image_id for g in everything] == ["101", "102", "103"]
    elsewhere = PsgDataset(tiny / "psg.json", images_root="/photos", panoptic_root=tiny)
    assert elsewhere.image_path(0) == Path("/photos/images/101.jpg") and elsewhere[0].image_id == "101"
    with pytest.raises(ValueError, match="split"):
        PsgDataset(tiny, split="val")


def test_check_reports_nothing_on_a_good_dataset(tiny):
    assert check_psg(tiny) == []


# -- malformed data: every problem names the image ---------------------------------------------------


def _del_key(key):
    return lambda meta: meta["data"][0].pop(key)


def _set_segment(field, value, index=0):
    return lambda meta: meta["data"][0]["segments_info"][index].__setitem__(field, value)


def _set_relation(row):
    return lambda meta: meta["data"][0]["relations"].__setitem__(0, row)


# (mutation of psg.json or of the files, the image named, the message, when PsgDataset fails:
#  "open" = on construction, "read" = on dataset[i], None = it does not need that file)
MALFORMED = {
    "missing image key": (_del_key("pan_seg_file_name"), "101", "missing key 'pan_seg_file_name'", "open"),
    "missing segment key": (
        lambda m: m["data"][0]["segments_info"][1].pop("category_id"),
        "101",
        "segments_info[1]: missing key 'category_id'",
        "open",
    ),
    "height not an integer": (
        lambda m: m["data"][0].__setitem__("height", "6"),
        "101",
        "height is '6', not a positive integer",
        "open",
    ),
    "category out of range": (_set_segment("category_id", 4), "101", "category_id 4 out of range 0..3", "open"),
    "negative category": (_set_segment("category_id", -1), "101", "category_id -1 out of range", "open"),
    "isthing disagrees": (_set_segment("isthing", 0), "101", "isthing is 0 but category_id 0 is a thing class", "open"),
    "subject out of range": (_set_relation([4, 2, 1]), "101", "relation 0: subject index 4 out of range", "open"),
    "object out of range": (_set_relation([0, 7, 1]), "101", "relation 0: object index 7 out of range", "open"),
    "predicate out of range": (
        _set_relation([0, 2, 2]),
        "101",
        "relation 0: predicate index 2 out of range 0..1",
        "open",
    ),
    "relation not a triple": (_set_relation([0, 2]), "101", "relation 0 is [0, 2], not [subject_index", "open"),
    "duplicate image id": (
        lambda m: m["data"][1].__setitem__("image_id", "101"),
        "101",
        "image id appears 2 times",
        "open",
    ),
    "duplicate segment id": (_set_segment("id", 5), "101", "segment id 5 appears 2 times", "open"),
    "annotations not parallel": (
        lambda m: m["data"][0]["annotations"].pop(),
        "101",
        "annotations has 3 entries, segments_info has 4",
        "open",
    ),
    "annotation category differs": (
        lambda m: m["data"][0]["annotations"][3].__setitem__("category_id", 0),
        "101",
        "annotations[3].category_id 0 differs",
        "open",
    ),
    "segment id not in PNG": (
        _set_segment("id", 301),
        "101",
        "segment ids [301] of segments_info are not in the panoptic PNG",
        "read",
    ),
    "PNG size": (
        lambda m: m["data"][1].__setitem__("height", 7),
        "102",
        "panoptic PNG is 6x8 (height x width), the record says 7x8",
        "read",
    ),
}
FILE_DAMAGE = {
    "missing panoptic PNG": (lambda root: (root / "panoptic/101.png").unlink(), "101", "panoptic PNG", "read"),
    "unreadable panoptic PNG": (
        lambda root: (root / "panoptic/101.png").write_bytes(b"not a png"),
        "101",
        "cannot read panoptic PNG",
        "read",
    ),
    "missing image": (lambda root: (root / "images/102.jpg").unlink(), "102", "images/102.jpg not found", None),
    "image size": (
        lambda root: Image.new("RGB", (9, 6)).save(root / "images/101.jpg"),
        "101",
        "is 6x9 (height x width), the record says 6x8",
        None,
    ),
    "extra id in PNG": (  # the reader ignores pixels of no segment; the check does not
        lambda root: Image.fromarray(_png([(MASK_SKY, 5), (~MASK_SKY, 9)])).save(root / "panoptic/103.png"),
        "103",
        "panoptic PNG has ids [9] that are not in segments_info",
        None,
    ),
}


def _expect(problems, image_id, message):
    assert any(p.image_id == image_id and message in p.message for p in problems), problems
    assert any(str(p).startswith(f"image {image_id}: ") for p in problems)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_json_is_reported_with_the_image_id(tiny, case):
    change, image_id, message, when = MALFORMED[case]
    _rewrite(tiny, change)
    _expect(check_psg(tiny), image_id, message)
    if when == "open":
        with pytest.raises(PsgFormatError, match=f"image {image_id}: .*{re.escape(message)}"):
            PsgDataset(tiny, keep_without_relations=True)
    else:
        dataset = PsgDataset(tiny, keep_without_relations=True)
        with pytest.raises(PsgFormatError, match=f"image {image_id}: .*{re.escape(message)}"):
            dataset[dataset.image_ids.index(image_id)]


@pytest.mark.parametrize("case", sorted(FILE_DAMAGE))
def test_damaged_files_are_reported_with_the_image_id(tiny, case):
    damage, image_id, message, when = FILE_DAMAGE[case]
    damage(tiny)
    _expect(check_psg(tiny), image_id, message)
    dataset = PsgDataset(tiny, keep_without_relations=True)
    if when == "read":
        with pytest.raises(PsgFormatError, match=f"image {image_id}: .*{re.escape(message)}"):
            dataset[dataset.image_ids.index(image_id)]
    else:
        dataset[dataset.image_ids.index(image_id)]  # the graph does not need the photo


def test_check_lists_every_problem_not_just_the_first(tiny):
    def change(meta):
        meta["data"][0]["relations"].append([0, 9, 0])
        meta["data"][1]["segments_info"][0]["category_id"] = 99
        meta["data"][2]["annotations"] = []

    _rewrite(tiny, change)
    (tiny / "images/103.jpg").unlink()  # not reported: files of a record with a JSON problem are not checked
    problems = check_psg(tiny)
    assert [p.image_id for p in problems] == ["101", "102", "102", "103"]  # 102: category and its annotation
    with pytest.raises(PsgFormatError, match=r"image 101: .*and 3 more problems"):
        PsgDataset(tiny)


@pytest.mark.parametrize("key", ["data", "thing_classes", "stuff_classes", "predicate_classes", "test_image_ids"])
def test_missing_top_level_key(tiny, key):
    _rewrite(tiny, lambda meta: meta.pop(key))
    for read in (check_psg, PsgDataset):
        with pytest.raises(PsgFormatError, match=f"missing top-level key '{key}'"):
            read(tiny)


def test_missing_or_broken_json(tmp_path):
    with pytest.raises(PsgFormatError, match="no such file"):
        PsgDataset(tmp_path)
    (tmp_path / "psg.json").write_text("{")
    with pytest.raises(PsgFormatError, match="cannot read it as JSON"):
        check_psg(tmp_path)


def test_record_without_image_id_is_named_by_position(tiny):
    _rewrite(tiny, lambda meta: meta["data"][2].pop("image_id"))
    _expect(check_psg(tiny), "data[2]", "missing key 'image_id'")


# -- writing ---------------------------------------------------------------------------------------


def _ids(labels: list[str]) -> list[int]:
    """PSG's category ids of these names: the reader sets them when the file uses PSG's classes."""
    return [psg.categories().index(label) for label in labels]


def _graphs() -> list[SceneGraph]:
    """Two graphs with PSG labels and disjoint masks, ids 0..N-1, scores 1: what the reader gives."""
    predicates = psg.predicates()

    def rel(s, o, name):
        return Relation(subject=s, object=o, predicate=name, predicate_id=predicates.index(name), score=1.0)

    first = np.stack([MASK_PERSON, MASK_SKY, MASK_GRASS, MASK_DOG])
    labels = ["person", "sky-other-merged", "grass-merged", "dog"]
    a = SceneGraph.from_masks(first, np.ones(4), labels=labels, category_ids=_ids(labels), file="train/a.jpg")
    a = a.with_relations([rel(0, 2, "standing on"), rel(0, 2, "on"), rel(3, 0, "beside")])
    b = SceneGraph.from_masks(
        np.stack([MASK_SKY, ~MASK_SKY]),
        np.ones(2),
        labels=["sky-other-merged", "sea"],
        category_ids=_ids(["sky-other-merged", "sea"]),
        file="b.png",
    )
    b = b.with_relations([rel(0, 1, "over")])
    return [replace(a, image_id="7"), replace(b, image_id="8")]


def test_write_then_read_gives_the_graphs_back(tmp_path):
    graphs = _graphs()
    path = write_psg(graphs, tmp_path, test_image_ids=["8"])
    assert path == tmp_path / "psg.json"
    assert PsgDataset(tmp_path).image_ids == ["7", "8"]
    assert list(PsgDataset(tmp_path)) == graphs
    assert PsgDataset(tmp_path, split="test").image_ids == ["8"]
    meta = json.loads(path.read_text())
    record = meta["data"][0]
    assert record["pan_seg_file_name"] == "panoptic/a.png" and record["file_name"] == "train/a.jpg"
    assert [s["id"] for s in record["segments_info"]] == [1, 2, 3, 4]
    assert record["segments_info"][0] == {"id": 1, "category_id": 0, "iscrowd": 0, "isthing": 1, "area": 8}
    assert record["segments_info"][1]["isthing"] == 0 and record["segments_info"][1]["category_id"] == 119
    assert record["annotations"][0] == {"bbox": [2, 1, 4, 5], "bbox_mode": 0, "category_id": 0}
    assert record["relations"] == [[0, 2, 14], [0, 2, 3], [3, 0, 2]]
    assert meta["predicate_classes"] == list(psg.predicates()) and len(meta["thing_classes"]) == 80
    # photos missing: the check says so, and nothing else
    assert [p.message.split(" ")[:2] for p in check_psg(tmp_path)] == [["image", "file"]] * 2


def test_write_renumbers_segment_ids_to_indices(tmp_path):
    graph = _graphs()[1]
    renamed = replace(
        graph,
        segments=[replace(s, id=s.id + 10) for s in graph.segments],
        relations=[replace(r, subject=r.subject + 10, object=r.object + 10) for r in graph.relations],
    )
    write_psg([renamed], tmp_path)
    assert PsgDataset(tmp_path)[0] == graph


def test_overlapping_masks_paint_larger_first(tmp_path):
    big = np.zeros((H, W), bool)
    big[:, :6] = True
    small = np.zeros((H, W), bool)
    small[2:4, 2:4] = True
    graph = SceneGraph.from_masks(np.stack([small, big]), np.ones(2), labels=["dog", "grass-merged"], file="x.jpg")
    write_psg([graph], tmp_path)
    back = PsgDataset(tmp_path, keep_without_relations=True)[0].masks()
    np.testing.assert_array_equal(back[0], small)  # the small dog stays whole
    np.testing.assert_array_equal(back[1], big & ~small)
    assert check_psg(tmp_path)[0].message.startswith("image file")  # only the missing photo


def test_write_errors(tmp_path):
    graph = _graphs()[1]
    unnamed = replace(graph, segments=[replace(graph.segments[0], label="cloud", category_id=None), graph.segments[1]])
    with pytest.raises(PsgFormatError, match="image 8: segment 0 is labelled 'cloud', not one of PSG's 133"):
        write_psg([unnamed], tmp_path)
    hidden = SceneGraph.from_masks(np.stack([MASK_SKY, MASK_SKY]), np.ones(2), labels=["sea", "sky-other-merged"])
    with pytest.raises(PsgFormatError, match="image 0: segment 0 has no visible pixel"):  # equal areas: later on top
        write_psg([hidden], tmp_path)
    with pytest.raises(PsgFormatError, match="image ids \\['8'\\] are used by more than one graph"):
        write_psg([graph, graph], tmp_path)
    with pytest.raises(PsgFormatError, match="test_image_ids \\['9'\\]"):
        write_psg([graph], tmp_path, test_image_ids=["9"])
    with pytest.raises(PsgFormatError, match="must be a path relative"):
        write_psg([replace(graph, file="/abs/b.png")], tmp_path)
    with pytest.raises(PsgFormatError, match="photo is 3x3 \\(height x width\\), the graph is 6x8"):
        write_psg([graph], tmp_path, images={"8": np.zeros((3, 3, 3), np.uint8)})


def test_write_images_from_arrays_and_files(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((H, W, 3), 200, np.uint8)).save(photo)
    pixels = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    out = tmp_path / "out"
    write_psg(_graphs(), out, images={"7": photo, "8": pixels})
    assert (out / "train/a.jpg").read_bytes() == photo.read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "b.png")), pixels)  # PNG: lossless
    assert check_psg(out) == []


def test_no_graph_writes_an_empty_dataset(tmp_path):
    write_psg([], tmp_path)
    assert len(PsgDataset(tmp_path)) == 0 and check_psg(tmp_path) == []


# -- the `data check` command ------------------------------------------------------------------------


def test_cli_check_good_dataset(tiny):
    result = runner.invoke(app, ["check", str(tiny)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "3 images, 4 relations, 0 problems"


def test_cli_check_lists_problems(tiny):
    _rewrite(tiny, _set_relation([0, 2, 5]))
    (tiny / "panoptic/102.png").unlink()
    result = runner.invoke(app, ["check", str(tiny)])
    assert result.exit_code == 4  # the one table: some inputs (records) failed the check
    lines = result.output.strip().splitlines()
    assert lines[0] == "image 101: relation 0: predicate index 5 out of range 0..1"
    assert lines[1].startswith("image 102: panoptic PNG ") and lines[1].endswith("not found")
    assert lines[-1] == "3 images, 4 relations, 2 problems"


def test_cli_check_unreadable_dataset_is_one_message(tmp_path):
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 2  # usage: the dataset cannot be read
    assert "error:" in result.output and "no such file" in result.output and "Traceback" not in result.output
