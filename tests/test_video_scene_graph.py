"""`VideoSceneGraph`: construction checks, per-frame graphs, JSON and networkx round trips."""

import json

import numpy as np
import pytest

from relate_anything import psg
from relate_anything.scene_graph import SceneGraphFormatError, encode_masks
from relate_anything.video_scene_graph import SCHEMA, Track, TrackFrame, VideoInfo, VideoRelation, VideoSceneGraph

H, W = 6, 8


def _frame(t: int, x0: int, x1: int, score: float = 0.9) -> TrackFrame:
    mask = np.zeros((H, W), dtype=bool)
    mask[1:4, x0:x1] = True
    return TrackFrame(frame=t, mask=encode_masks(mask[None])[0], bbox=(x0, 1, x1, 4), area=int(mask.sum()), score=score)


def _graph() -> VideoSceneGraph:
    predicates = psg.predicates()
    on = predicates.index("on")
    return VideoSceneGraph(
        video=VideoInfo(width=W, height=H, frame_index=(0, 6, 12, 18), fps=30.0, sampled_fps=5.0, file="clip.mp4"),
        tracks=[
            Track(id=3, frames=(_frame(2, 0, 2), _frame(0, 0, 2), _frame(1, 0, 3)), score=0.9, label="dog"),
            Track(id=7, frames=(_frame(1, 4, 6), _frame(2, 4, 7)), score=0.8, label="grass", category_id=125),
        ],
        relations=[VideoRelation(subject=3, predicate="on", predicate_id=on, object=7, score=0.7, intervals=((1, 2),))],
    )


def test_frames_are_sorted_and_per_frame_graphs_hold_the_visible_tracks():
    graph = _graph()
    assert [f.frame for f in graph.track(3).frames] == [0, 1, 2]
    assert (graph.track(3).first_frame, graph.track(3).last_frame) == (0, 2)
    first = graph.frame(0)
    assert [s.id for s in first.segments] == [3] and first.relations == []  # track 7 not visible yet
    second = graph.frame(1)
    assert [s.id for s in second.segments] == [3, 7]
    assert second.segment(3).decode()[1:4, 0:3].all() and second.segment(3).area == 9
    assert [(r.subject, r.predicate, r.object) for r in second.relations] == [(3, "on", 7)]
    assert second.segment(7).category == psg.categories()[125] == "grass-merged"  # PSG's name for the class
    assert graph.frame(3).segments == []
    with pytest.raises(IndexError):
        graph.frame(4)
    assert graph.describe(graph.relations[0]) == "dog #3 on grass #7 (0.70) frames 1-2"


def test_json_round_trip_and_schema_fields():
    graph = _graph()
    data = json.loads(graph.to_json())
    assert data["schema"] == SCHEMA
    assert data["video"] == {
        "file": "clip.mp4",
        "width": W,
        "height": H,
        "fps": 30.0,
        "sampled_fps": 5.0,
        "frame_index": [0, 6, 12, 18],
    }
    track = data["tracks"][0]
    assert (track["first_frame"], track["last_frame"], len(track["frames"])) == (0, 2, 3)
    assert data["relations"][0]["intervals"] == [[1, 2]]
    again = VideoSceneGraph.from_json(graph.to_json())
    assert again.to_dict() == graph.to_dict()


def test_save_and_load(tmp_path):
    graph = _graph()
    graph.save(tmp_path / "clip.json")
    assert VideoSceneGraph.load(tmp_path / "clip.json").to_dict() == graph.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["clip.json"]  # no temporary file left


def test_networkx_nodes_and_edges():
    nx_graph = _graph().to_networkx()
    assert set(nx_graph.nodes) == {3, 7}
    assert nx_graph.nodes[3]["frames"] == 3 and nx_graph.nodes[7]["first_frame"] == 1
    (edge,) = nx_graph.edges(keys=True, data=True)
    assert edge[:3] == (3, 7, "on") and edge[3]["intervals"] == [[1, 2]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda g: {"tracks": [g.tracks[0], g.tracks[0]]}, "unique"),
        (lambda g: {"relations": [VideoRelation(3, "on", 0, 7, 0.5, ((0, 1),))]}, "predicate id 0"),
        (
            lambda g: {"relations": [VideoRelation(3, "on", psg.predicates().index("on"), 9, 0.5, ((0, 1),))]},
            "does not exist",
        ),
        (
            lambda g: {"relations": [VideoRelation(3, "on", psg.predicates().index("on"), 7, 0.5, ((2, 4),))]},
            "leave the 4",
        ),
        (lambda g: {"tracks": [Track(id=1, frames=(_frame(4, 0, 2),), score=1.0)], "relations": []}, "outside the 4"),
    ],
)
def test_invalid_graphs_are_refused(change, message):
    graph = _graph()
    fields = {"video": graph.video, "tracks": graph.tracks, "relations": graph.relations} | change(graph)
    with pytest.raises(SceneGraphFormatError, match=message):
        VideoSceneGraph(**fields)


def test_invalid_parts_are_refused():
    with pytest.raises(SceneGraphFormatError, match="sorted and disjoint"):
        VideoRelation(0, "on", 0, 1, 0.5, ((0, 3), (3, 5)))
    with pytest.raises(SceneGraphFormatError, match="ends before"):
        VideoRelation(0, "on", 0, 1, 0.5, ((4, 3),))
    with pytest.raises(SceneGraphFormatError, match="same frame"):
        Track(id=0, frames=(_frame(1, 0, 2), _frame(1, 0, 3)), score=1.0)
    with pytest.raises(SceneGraphFormatError, match="strictly increasing"):
        VideoInfo(width=4, height=4, frame_index=(0, 5, 5))
    with pytest.raises(SceneGraphFormatError, match="schema"):
        VideoSceneGraph.from_dict({"schema": "relate-anything/scene-graph/v1"})
    with pytest.raises(SceneGraphFormatError, match="malformed"):
        VideoSceneGraph.from_dict({"schema": SCHEMA, "video": {"width": 4}})
