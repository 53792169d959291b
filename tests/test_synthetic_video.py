"""Synthetic PVSG clips: relations that follow from the drawn geometry, written in PVSG format."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from relate_anything import psg, pvsg
from relate_anything.datasets.cli import app
from relate_anything.datasets.pvsg import PvsgDataset, check_pvsg
from relate_anything.datasets.synthetic_video import (
    MAX_RELATIONS,
    frame_relations,
    make_synthetic_pvsg,
    relation_intervals,
    relations_from_tracks,
    synthetic_video,
)

runner = CliRunner()
SEED, VIDEOS, FRAMES, SIZE = 1, 3, 16, (160, 120)


def _rect(r0, r1, c0, c1, size=40):
    mask = np.zeros((size, size), bool)
    mask[r0 : r1 + 1, c0 : c1 + 1] = True
    return mask


def test_frame_relations_on_a_drawn_scene():
    labels = ["sky", "grass", "dog", "bench", "bird", "bag", "adult"]
    shapes = [
        _rect(0, 19, 0, 39),  # sky
        _rect(20, 39, 0, 39),  # grass
        _rect(22, 29, 2, 9),  # dog, its right edge hidden by the adult
        _rect(24, 29, 20, 31),  # bench
        _rect(3, 5, 4, 7),  # bird, high above the dog
        _rect(21, 23, 24, 27),  # bag, on the bench
        _rect(18, 31, 8, 12),  # adult, nearest
    ]
    ids = np.full((40, 40), -1)
    for index, shape in enumerate(shapes):  # drawn in order: later is nearer
        ids[shape] = index
    masks = np.stack([ids == i for i in range(len(labels))])
    found = {(labels[s], p, labels[o]) for s, o, p in frame_relations(masks, labels, order=list(range(1, 8)))}
    assert found == {
        ("dog", "standing on", "grass"),  # grass below its lowest row
        ("bench", "on", "grass"),  # not a stander
        ("adult", "standing on", "grass"),
        ("bag", "on", "bench"),  # the bench is below and drawn before the bag
        ("bird", "in", "sky"),  # sky all around it
        ("bird", "over", "dog"),  # above it, columns overlap, not on the ground
        ("adult", "in front of", "dog"),  # drawn later and touching
        ("dog", "beside", "adult"),  # left of it in the same band, no gap
        ("dog", "beside", "bench"),  # gap 12 = the bench's width
        ("adult", "beside", "bench"),
    }


def test_a_nearer_thing_below_is_not_a_support():
    labels = ["grass", "cat", "horse"]
    ids = np.zeros((30, 30), int)
    ids[5:12, 10:16] = 1  # the cat, drawn first (far)
    ids[12:25, 8:20] = 2  # the horse, nearer, right below the cat's lowest row
    masks = np.stack([ids == i for i in range(3)])
    found = {(labels[s], p, labels[o]) for s, o, p in frame_relations(masks, labels, order=[1, 2, 3])}
    assert ("cat", "standing on", "horse") not in found and ("horse", "in front of", "cat") in found


def test_relation_intervals_bridge_gaps_where_an_object_is_hidden():
    holds = {(4, 1, "beside"): np.array([1, 1, 0, 0, 1, 1, 0, 1], bool)}
    hidden_2_3 = {4: np.array([1, 1, 0, 0, 1, 1, 1, 1], bool), 1: np.ones(8, bool)}
    assert relation_intervals(holds, hidden_2_3) == {(4, 1, "beside"): ((0, 5), (7, 7))}
    visible = {4: np.ones(8, bool), 1: np.ones(8, bool)}
    assert relation_intervals(holds, visible) == {(4, 1, "beside"): ((0, 1), (4, 5), (7, 7))}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_pvsg")
    make_synthetic_pvsg(root, videos=VIDEOS, frames=FRAMES, seed=SEED, size=SIZE)
    return root


def test_dataset_is_valid_pvsg_with_a_known_answer(synthetic):
    assert check_pvsg(synthetic) == []
    dataset = PvsgDataset(synthetic)
    assert dataset.video_ids == ["synth0000", "synth0001", "synth0002"]
    assert len(PvsgDataset(synthetic, split="val")) == 1
    for graph in dataset:
        assert 1 <= len(graph.relations) <= MAX_RELATIONS
        assert graph.num_frames == FRAMES and (graph.width, graph.height) == SIZE
        # the rule, run on the masks read back from the PNGs, gives the written relations exactly
        oracle = relations_from_tracks(graph.with_relations([]))
        assert [(r.subject, r.predicate, r.object, r.intervals) for r in oracle] == [
            (r.subject, r.predicate, r.object, r.intervals) for r in graph.relations
        ]


def test_things_move_enter_leave_and_names_exist_in_psg_too(synthetic):
    dataset = PvsgDataset(synthetic)
    graphs = list(dataset)
    things = set(pvsg.thing_classes())
    movers = [t for g in graphs for t in g.tracks if t.label in things]
    assert any(len(t.frames) < FRAMES for t in movers)  # off-screen or hidden on some frames
    assert any(t.frames[-1].frame - t.frames[0].frame + 1 > len(t.frames) for t in movers)  # gone, then back
    assert any(t.frames[0].bbox != t.frames[-1].bbox for t in movers)
    reachable = set(psg.categories()) | set(pvsg.PSG_TO_PVSG_CATEGORIES.values())
    assert {t.label for g in graphs for t in g.tracks} <= reachable
    assert {r.predicate for g in graphs for r in g.relations} <= set(psg.predicates())


def test_the_clip_is_lossless(synthetic):
    import av

    graph, frames = synthetic_video(
        np.random.default_rng([SEED, 2]), frames=FRAMES, size=SIZE, fps=5.0, video_id="synth0001"
    )
    with av.open(str(synthetic / "synthetic" / "videos" / "synth0001.mp4")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == frames.shape and np.array_equal(decoded, frames)
    assert len(graph.relations) == len(PvsgDataset(synthetic)[1].relations)


def test_same_seed_same_files(synthetic, tmp_path):
    make_synthetic_pvsg(tmp_path, videos=VIDEOS, frames=FRAMES, seed=SEED, size=SIZE, write_videos=False)
    assert (tmp_path / "pvsg.json").read_text() == (synthetic / "pvsg.json").read_text()
    png = "synthetic/masks/synth0002/0007.png"
    assert (tmp_path / png).read_bytes() == (synthetic / png).read_bytes()
    assert not (tmp_path / "synthetic" / "videos").exists()
    other = tmp_path / "other"
    make_synthetic_pvsg(other, videos=1, frames=FRAMES, seed=SEED + 1, size=SIZE, write_videos=False)
    first = json.loads((synthetic / "pvsg.json").read_text())["data"][0]
    assert json.loads((other / "pvsg.json").read_text())["data"][0] != first


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least"):
        make_synthetic_pvsg("unused", size=(32, 32))
    with pytest.raises(ValueError, match="at least 1 video of 2 frames"):
        make_synthetic_pvsg("unused", frames=1)


def test_cli_synth_video_then_check(tmp_path):
    out = tmp_path / "clips"
    args = ["synth-video", "--out", str(out), "--videos", "2", "--frames", "6", "--width", "96", "--height", "64"]
    result = runner.invoke(app, [*args, "--seed", "5", "--no-videos"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'pvsg.json'}: 2 videos of 6 frames (1 val)" in result.output
    result = runner.invoke(app, ["check", str(out)])
    assert result.exit_code == 0 and "2 videos" in result.output and "0 problems" in result.output
