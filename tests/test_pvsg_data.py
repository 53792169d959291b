"""PVSG-format data: the vocabulary, reading, checking and writing pvsg.json with mask PNGs."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from relate_anything import psg, pvsg
from relate_anything.datasets.cli import app
from relate_anything.datasets.pvsg import (
    PvsgDataset,
    PvsgFormatError,
    check_pvsg,
    read_pvsg_json,
    source_of,
    write_pvsg,
)
from relate_anything.scene_graph import encode_masks
from relate_anything.video_scene_graph import Track, TrackFrame, VideoInfo, VideoRelation, VideoSceneGraph

runner = CliRunner()

# -- the vocabulary ------------------------------------------------------------------------------


def test_vocabulary_sizes_and_order():
    assert len(pvsg.thing_classes()) == 115 and len(pvsg.stuff_classes()) == 11
    assert len(pvsg.categories()) == 126 and len(set(pvsg.categories())) == 126
    assert pvsg.categories()[:3] == ("adult", "baby", "bag") and pvsg.categories()[115] == "ceiling"
    assert pvsg.stuff_classes() == (
        "ceiling",
        "floor",
        "grass",
        "ground",
        "rock",
        "sand",
        "sky",
        "snow",
        "tree",
        "wall",
        "water",
    )
    assert len(pvsg.predicates()) == 57 and list(pvsg.predicates()) == sorted(pvsg.predicates())


def test_psg_and_pvsg_share_39_predicates_and_the_maps_point_across():
    shared = set(psg.predicates()) & set(pvsg.predicates())
    assert len(shared) == 39 and {"beside", "in front of", "on", "over", "standing on"} <= shared
    for table, source, target in (
        (pvsg.PSG_TO_PVSG_PREDICATES, psg.predicates(), pvsg.predicates()),
        (pvsg.PSG_TO_PVSG_CATEGORIES, psg.categories(), pvsg.categories()),
    ):
        for name, mapped in table.items():
            assert name in source and name not in target and mapped in target, (name, mapped)
    assert pvsg.PSG_TO_PVSG_PREDICATES == {"drinking": "drinking from", "slicing": "cutting"}


def test_source_of_follows_the_split_then_openpvsg_id_rule():
    split = {"mine": {"train": ["a"], "val": ["b"]}}
    assert source_of("b", split) == "mine"
    assert source_of("P01_01_0", None) == "epic_kitchen"
    assert source_of("0001_4164158586", None) == "vidor"
    assert source_of("ff3c9d2c-1b3a", None) == "ego4d"


# -- a tiny hand-made dataset --------------------------------------------------------------------

H, W, T = 12, 16, 6


def _label_maps() -> np.ndarray:
    """Frames [T, H, W]: 1 = grass (bottom half), 2 = sky (top half), 3 = a dog moving right,
    4 = a cat only on frames 2-4."""
    maps = np.zeros((T, H, W), dtype=np.uint8)
    maps[:, :6] = 2
    maps[:, 6:] = 1
    for t in range(T):
        maps[t, 4:8, t : t + 3] = 3
        if 2 <= t <= 4:
            maps[t, 5:8, 10:13] = 4
    return maps


def _meta(**video_changes) -> dict:
    video = {
        "video_id": "0001_clip",
        "meta": {"height": H, "width": W, "fps": 5, "num_frames": T},
        "objects": [
            {"object_id": 1, "category": "grass", "is_thing": False},
            {"object_id": 2, "category": "sky", "is_thing": False},
            {"object_id": 3, "category": "dog", "is_thing": True},
            {"object_id": 4, "category": "cat", "is_thing": True},
        ],
        "relations": [
            [3, 1, "standing on", [[0, 5]]],
            [4, 3, "beside", [[3, 4], [2, 3]]],
            [3, 4, "looking at", [[0, 5]]],
        ],
    } | video_changes
    return {
        "objects": {"thing": list(pvsg.thing_classes()), "stuff": list(pvsg.stuff_classes())},
        "relations": list(pvsg.predicates()),
        "split": {"vidor": {"train": [], "val": ["0001_clip"]}},
        "data": [video],
    }


def _write(root: Path, meta: dict | None = None, maps: np.ndarray | None = None) -> Path:
    meta = meta or _meta()
    (root / "pvsg.json").write_text(json.dumps(meta))
    folder = root / "vidor" / "masks" / "0001_clip"
    folder.mkdir(parents=True, exist_ok=True)
    for t, labels in enumerate(_label_maps() if maps is None else maps):
        Image.fromarray(labels).save(folder / f"{t:04d}.png")
    return root


@pytest.fixture
def tiny(tmp_path) -> Path:
    return _write(tmp_path)


def test_reads_tracks_and_relations(tiny):
    dataset = PvsgDataset(tiny, split="val")
    assert len(dataset) == 1 and dataset.video_ids == ["0001_clip"] and dataset.source(0) == "vidor"
    graph = dataset[0]
    assert graph.video.file == "vidor/videos/0001_clip.mp4" and graph.num_frames == T
    assert (graph.width, graph.height, graph.video.fps) == (W, H, 5.0)
    assert [(t.id, t.label) for t in graph.tracks] == [(1, "grass"), (2, "sky"), (3, "dog"), (4, "cat")]
    cat = graph.track(4)
    assert [f.frame for f in cat.frames] == [2, 3, 4]  # off-screen frames have no region
    maps = _label_maps()
    for track in graph.tracks:
        for item in track.frames:
            assert np.array_equal(item.decode(), maps[item.frame] == track.id)
            assert item.area == int((maps[item.frame] == track.id).sum())
    dog = graph.track(3).at(1)
    assert dog.bbox == (1.0, 4.0, 4.0, 8.0)
    assert [(r.subject, r.predicate, r.object, r.intervals) for r in graph.relations] == [
        (3, "standing on", 1, ((0, 5),)),
        (4, "beside", 3, ((2, 4),)),  # overlapping ranges merged
        (3, "looking at", 4, ((0, 5),)),  # annotated while the cat is off-screen
    ]
    assert graph.predicates == pvsg.predicates()
    assert len(PvsgDataset(tiny, split="train")) == 0 and len(PvsgDataset(tiny)) == 1


def test_check_reports_nothing_on_a_good_dataset(tiny):
    assert check_pvsg(tiny) == []


def _problems(root: Path) -> list[str]:
    return [str(p) for p in check_pvsg(root)]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda m: m["data"][0]["objects"][3].update(category="unicorn"),
            "video 0001_clip: objects[3]: unknown class 'unicorn'",
        ),
        (lambda m: m["data"][0]["objects"][3].update(is_thing=False), "is_thing is False but 'cat' is a thing class"),
        (
            lambda m: m["data"][0]["relations"][0].__setitem__(2, "levitating"),
            "relation 0: unknown predicate 'levitating'",
        ),
        (
            lambda m: m["data"][0]["relations"][0].__setitem__(1, 9),
            "relation 0: object id 9 is not an object of the video",
        ),
        (
            lambda m: m["data"][0]["relations"][0].__setitem__(3, [[4, 2]]),
            "relation 0: range [4, 2] must have 0 <= start <= end",
        ),
        (
            lambda m: m["data"][0]["relations"][0].__setitem__(3, [[0, 6]]),
            "relation 0: range [0, 6] runs past the last frame 5",
        ),
        (
            lambda m: m["data"][0]["objects"].append({"object_id": 3, "category": "dog", "is_thing": True}),
            "object_id 3 appears 2 times",
        ),
        (lambda m: m["data"][0]["meta"].update(num_frames=0), "meta.num_frames is 0, not a positive integer"),
        (lambda m: m["data"][0].pop("meta"), "video 0001_clip: missing key 'meta'"),
        (
            lambda m: m["split"]["vidor"]["val"].append("nope"),
            "pvsg.json: split vidor/val lists videos not in data: nope",
        ),
        (lambda m: m["data"].append(json.loads(json.dumps(m["data"][0]))), "video id '0001_clip' appears 2 times"),
    ],
)
def test_json_problems_name_the_video(tiny, change, expected):
    meta = _meta()
    change(meta)
    (tiny / "pvsg.json").write_text(json.dumps(meta))
    problems = _problems(tiny)
    assert any(expected in p for p in problems), problems


def test_file_problems_name_the_video_and_frame(tiny):
    folder = tiny / "vidor" / "masks" / "0001_clip"
    (folder / "0003.png").unlink()
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(folder / "0001.png")  # id 7 is no object; dog, sky gone
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(folder / "0002.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / "0004.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(folder / "0009.png")
    problems = _problems(tiny)
    assert f"video 0001_clip, frame 3: mask PNG {folder / '0003.png'} not found" in problems
    assert "video 0001_clip, frame 1: mask ids [7] are not object_ids of the video" in problems
    assert "video 0001_clip, frame 2: mask PNG is 13x16 (height x width), meta says 12x16" in problems
    assert any(
        p.startswith("video 0001_clip, frame 4: mask PNG") and "is RGB, not single-channel" in p for p in problems
    )
    assert "video 0001_clip: object_ids [4] appear in no mask PNG" in problems  # the cat's frames 2-4 are all broken
    assert "video 0001_clip: 1 mask PNGs past num_frames = 6 (first: frame 9)" in problems
    assert any("relation 1 (4 beside 3): the two objects are never both in the masks" in p for p in problems)


def test_reader_fails_with_the_video_and_frame(tiny):
    (tiny / "vidor" / "masks" / "0001_clip" / "0003.png").unlink()
    with pytest.raises(PvsgFormatError, match=r"video 0001_clip, frame 3: mask PNG .* not found"):
        PvsgDataset(tiny)[0]
    meta = _meta()
    meta["data"][0]["relations"][0][2] = "levitating"
    (tiny / "pvsg.json").write_text(json.dumps(meta))
    with pytest.raises(PvsgFormatError, match="unknown predicate 'levitating'"):
        PvsgDataset(tiny)


def test_reader_clips_ranges_past_the_end(tiny):
    meta = _meta()
    meta["data"][0]["relations"][0][3] = [[3, 40]]
    (tiny / "pvsg.json").write_text(json.dumps(meta))
    assert PvsgDataset(tiny)[0].relations[0].intervals == ((3, 5),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "cannot read it as JSON"),
        ("[]", "the top level is not a JSON object"),
        ('{"objects": {}, "relations": [], "data": []}', "objects must be"),
        ('{"relations": [], "data": []}', "missing top-level key 'objects'"),
    ],
)
def test_malformed_pvsg_json(tmp_path, text, message):
    (tmp_path / "pvsg.json").write_text(text)
    with pytest.raises(PvsgFormatError, match=message):
        read_pvsg_json(tmp_path)
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_cli_check(tiny):
    result = runner.invoke(app, ["check", str(tiny)])
    assert result.exit_code == 0, result.output
    assert "1 videos, 3 relations, 0 problems" in result.output
    (tiny / "vidor" / "masks" / "0001_clip" / "0000.png").unlink()
    result = runner.invoke(app, ["check", str(tiny / "pvsg.json")])
    assert result.exit_code == 1
    assert "video 0001_clip, frame 0: mask PNG" in result.output and "1 problems" in result.output
    (tiny / "pvsg.json").rename(tiny / "videos.json")  # another name: recognised by its keys
    result = runner.invoke(app, ["check", str(tiny / "videos.json")])
    assert result.exit_code == 1 and "video 0001_clip, frame 0: mask PNG" in result.output


# -- writing -------------------------------------------------------------------------------------


def _graph() -> VideoSceneGraph:
    """Two overlapping squares (a dog and a cat, ids 10 and 20) over 3 frames of 8 x 8, the cat
    in front (smaller, painted last) and gone on frame 2."""
    dog = np.zeros((3, 8, 8), bool)
    dog[:, 1:6, 1:6] = True
    cat = np.zeros((3, 8, 8), bool)
    cat[:2, 3:5, 3:5] = True

    def frames(masks):
        return tuple(
            TrackFrame(frame=t, mask=rle, bbox=(0, 0, 1, 1), area=int(m.sum()), score=0.9)
            for t, (m, rle) in enumerate(zip(masks, encode_masks(masks)))
            if m.any()
        )

    tracks = [
        Track(id=10, frames=frames(dog), score=0.9, label="dog"),
        Track(id=20, frames=frames(cat), score=0.8, label="cat"),
    ]
    relation = VideoRelation(
        subject=20,
        predicate="on",
        predicate_id=pvsg.predicates().index("on"),
        object=10,
        score=0.7,
        intervals=((0, 1),),
    )
    video = VideoInfo(width=8, height=8, frame_index=(0, 1, 2), sampled_fps=5.0)
    return VideoSceneGraph(video=video, tracks=tracks, relations=[relation], predicates=pvsg.predicates())


def test_write_then_read(tmp_path):
    path = write_pvsg({"v1": _graph()}, tmp_path, source="mine", val_ids=["v1"])
    assert path == tmp_path / "pvsg.json" and check_pvsg(tmp_path) == []
    meta = read_pvsg_json(path)
    assert meta["split"] == {"mine": {"train": [], "val": ["v1"]}}
    record = meta["data"][0]
    assert record["meta"] == {"height": 8, "width": 8, "fps": 5.0, "num_frames": 3, "duration": 0.6}
    assert record["objects"] == [
        {"object_id": 1, "category": "dog", "is_thing": True},
        {"object_id": 2, "category": "cat", "is_thing": True},
    ]
    assert record["relations"] == [[2, 1, "on", [[0, 1]]]]
    graph = PvsgDataset(tmp_path, split="val")[0]
    dog = graph.track(1)
    assert [f.area for f in dog.frames] == [25 - 4, 25 - 4, 25]  # the cat is painted over the dog
    assert [f.frame for f in graph.track(2).frames] == [0, 1]
    assert [(r.subject, r.predicate, r.object, r.intervals) for r in graph.relations] == [(2, "on", 1, ((0, 1),))]


def test_write_errors(tmp_path):
    graph = _graph()
    graph.tracks[0] = Track(id=10, frames=graph.tracks[0].frames, score=1.0, label="unicorn")
    with pytest.raises(PvsgFormatError, match="track 10 is labelled 'unicorn'"):
        write_pvsg({"v1": graph}, tmp_path)
    with pytest.raises(PvsgFormatError, match="val_ids"):
        write_pvsg({"v1": _graph()}, tmp_path, val_ids=["v2"])
    with pytest.raises(PvsgFormatError, match="video id"):
        write_pvsg({"a/b": _graph()}, tmp_path)
    hidden = _graph()
    cat = hidden.tracks[1]
    big = encode_masks(np.ones((1, 8, 8), bool))[0]
    hidden.tracks[1] = Track(
        id=20, frames=tuple(TrackFrame(f.frame, big, (0, 0, 8, 8), 64, 1.0) for f in cat.frames), score=1, label="cat"
    )
    # the dog has the cat's mask, on the cat's frames only: equal areas paint the later track on top
    hidden.tracks[0] = Track(id=10, frames=hidden.tracks[1].frames, score=1, label="dog")
    with pytest.raises(PvsgFormatError, match=r"tracks \[10\] have no visible pixel"):
        write_pvsg({"v1": hidden}, tmp_path)
