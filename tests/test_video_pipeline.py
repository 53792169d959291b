"""The video pipeline: tiny random models on a real (synthetic, lossless) clip, and an oracle
segmenter end to end through PVSG's metric."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import RANDOM_WEIGHT_SETTINGS
from relate_anything import RelateAnything, VideoSceneGraph
from relate_anything.datasets.synthetic_video import relations_from_tracks, synthetic_video
from relate_anything.errors import UsageError
from relate_anything.evaluation.video import evaluate_video
from relate_anything.masks import rle_ious
from relate_anything.ram import RelationHead, RelationHeadConfig
from relate_anything.video.intervals import IntervalSettings
from relate_anything.video.io import SamplingSettings, write_video
from relate_anything.video.pipeline import VideoRequest, video_run
from relate_anything.video.tracking import TrackerSettings
from video_oracle import FEATURE_DIM, OracleSegmenter, scene_of

FRAMES = 12
# Random weights: propagated masks need not overlap the previous ones, and scores hover near 0.5,
# so tracks are kept whatever SAM returns and intervals need no smoothing or length.
RANDOM = {
    "sampling": SamplingSettings(fps=None),
    "tracking": TrackerSettings(continuity_iou=0.0, min_track=1),
    "intervals": IntervalSettings(window=1, high=0.3, low=0.2, min_interval=1, merge_gap=0),
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A synthetic clip (ground truth, frames) and its lossless MP4."""
    graph, frames = synthetic_video(np.random.default_rng(3), frames=FRAMES, size=(96, 64))
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, frames, fps=5, lossless=True)
    return graph, frames, path


@pytest.fixture(scope="module")
def pipeline(small_sam, tiny_ram_pth):
    return RelateAnything.from_pretrained(small_sam, tiny_ram_pth, settings=RANDOM_WEIGHT_SETTINGS)


def test_a_clip_becomes_a_video_scene_graph(pipeline, clip):
    _, _, path = clip
    request = VideoRequest(top_k=10, **RANDOM)
    run = pipeline.video_run(path, request)
    frame_graphs = list(run)
    graph = run.result()
    assert len(frame_graphs) == FRAMES == graph.num_frames
    assert graph.video.frame_index == tuple(range(FRAMES)) and (graph.width, graph.height) == (96, 64)
    assert graph.tracks and graph.relations and len(graph.relations) <= 10
    for frame_graph, t in zip(frame_graphs, range(FRAMES)):
        # Each frame's segments are the tracks visible there (min_track=1 keeps every track), with the same masks.
        assert {s.id for s in frame_graph.segments} == {tr.id for tr in graph.tracks if tr.at(t) is not None}
        for segment in frame_graph.segments:
            assert graph.track(segment.id).at(t).mask == segment.mask
    for relation in graph.relations:
        start, end = relation.intervals[0]
        assert 0 <= start <= end < FRAMES and relation.subject != relation.object
    scores = [relation.score for relation in graph.relations]
    assert scores == sorted(scores, reverse=True)
    assert VideoSceneGraph.from_json(graph.to_json()).to_dict() == graph.to_dict()


@pytest.mark.slow
def test_frames_as_arrays_give_the_same_graph(pipeline, clip):
    _, frames, path = clip
    request = VideoRequest(top_k=5, **RANDOM)
    from_file = pipeline.video(path, request)
    from_arrays = pipeline.video(list(frames), request)
    assert [t.to_dict() for t in from_arrays.tracks] == [t.to_dict() for t in from_file.tracks]
    assert from_arrays.relations == from_file.relations


def test_a_point_makes_its_track_the_subject_of_every_relation(pipeline, clip):
    graph, _, path = clip
    track = graph.tracks[0]
    item = track.frames[0]
    ys, xs = np.nonzero(item.decode())
    point = (float(xs[len(xs) // 2]), float(ys[len(ys) // 2]))
    request = VideoRequest(point=point, frame=item.frame, top_k=5, **RANDOM)
    run = pipeline.video_run(path, request)
    result = run.result()
    subject = run.tracker is not None and result.relations[0].subject
    assert result.relations and {relation.subject for relation in result.relations} == {subject}
    # The subject's track holds the mask SAM gives for the point on that frame.
    assert result.track(subject).at(item.frame) is not None
    with pytest.raises(UsageError, match="outside"):
        pipeline.video(path, replace(request, point=(500.0, 1.0)))


def test_bad_requests_are_refused_before_any_frame(pipeline, clip):
    *_, path = clip
    with pytest.raises(UsageError, match="tracker must be one of"):
        VideoRequest(tracker="magic")
    with pytest.raises(UsageError, match="needs a labeler"):
        pipeline.video_run(path, VideoRequest(find="the dog"))
    with pytest.raises(UsageError, match="needs SAM 2"):
        pipeline.video_run(path, VideoRequest(tracker="sam2"))
    with pytest.raises(UsageError, match="needs SegGPT"):
        pipeline.video_run(path, VideoRequest(tracker="seggpt"))


class _OraclePipeline:
    """What `video_run` reads of a pipeline, around the oracle segmenter."""

    def __init__(self, segmenter):
        self.segmenter = segmenter
        self.settings = segmenter.settings
        config = RelationHeadConfig(feature_dim=FEATURE_DIM, hidden_size=32, num_heads=2, intermediate_size=32)
        self.relation_head = RelationHead(config).eval()
        self.labeler = self.example_segmenter = self.video_tracker = self.vocabulary = None

    relation_logits = RelateAnything.relation_logits  # the pipeline's own scoring and ranking
    ranked_relations = RelateAnything.ranked_relations


def _as_ground_truth_ids(predicted: VideoSceneGraph, truth: VideoSceneGraph) -> VideoSceneGraph:
    """Each predicted track renamed to the ground-truth object its masks overlap most (the
    oracle's naming); asserts that a track follows one object only (no identity switch)."""
    renamed = []
    for track in predicted.tracks:
        votes = {}
        for item in track.frames:
            candidates = [(gt.id, gt.at(item.frame)) for gt in truth.tracks if gt.at(item.frame) is not None]
            iou = rle_ious([item.mask], [c[1].mask for c in candidates])[0]
            best = int(iou.argmax())
            assert iou[best] > 0.5
            votes.setdefault(candidates[best][0], 0)
            votes[candidates[best][0]] += 1
        assert len(votes) == 1, f"track {track.id} switched objects: {votes}"
        object_id = next(iter(votes))
        renamed.append(replace(track, id=object_id, label=truth.track(object_id).label))
    assert len({t.id for t in renamed}) == len(renamed), "an object was split into several tracks"
    return replace(predicted, tracks=renamed, relations=[], predicates=truth.predicates)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_tracks_and_the_synthetic_rule_score_r20_of_one(seed):
    """Synthetic clip -> the video pipeline with an oracle segmenter (true masks plus noise) ->
    the generator's relation rule on the tracks -> PVSG's metric: R@20 = 1."""
    truth, _ = synthetic_video(np.random.default_rng([seed, 7]), frames=16, size=(160, 120))
    # Exact masks (noisy features): the rule's contact predicates ("on") depend on single pixels;
    # the tracking tests use noisy masks.
    oracle = OracleSegmenter(scene_of(truth), noise=0.0, seed=seed)
    # Things that leave and come back keep their id for the whole (short) clip.
    request = VideoRequest(top_k=0, tracking=TrackerSettings(keyframe_every=1, max_gap=16, min_track=1))
    frames = [np.zeros((truth.height, truth.width, 3), np.uint8)] * truth.num_frames
    predicted = video_run(_OraclePipeline(oracle), frames, request).result()
    predicted = _as_ground_truth_ids(predicted, truth)
    predicted = predicted.with_relations(relations_from_tracks(predicted))
    report = evaluate_video({"clip": predicted}, {"clip": truth})
    assert report["recall"]["R@20"] == 1.0, report["recall"]


def test_video_command_writes_json_mp4_and_timeline(tmp_path, clip, small_sam, tiny_ram_pth):
    import av
    from PIL import Image
    from typer.testing import CliRunner

    from conftest import RANDOM_WEIGHT_FLAGS
    from relate_anything.cli import app

    *_, path = clip
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    args = ["video", str(path), str(notes), "--out", str(tmp_path / "out"), "--fps", "0", "--sam", str(small_sam)]
    args += ["--ram", str(tiny_ram_pth), "--min-track", "1", "--top-k", "5", *RANDOM_WEIGHT_FLAGS]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 4, result.output  # notes.mp4 is no video; clip.mp4 is done
    assert "notes.mp4" in result.output and "Traceback" not in result.output
    graph = VideoSceneGraph.load(tmp_path / "out" / "clip.json")
    assert graph.num_frames == FRAMES and graph.tracks
    with av.open(str(tmp_path / "out" / "clip.mp4")) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == FRAMES and decoded[0].shape == (64, 96, 3)
    assert Image.open(tmp_path / "out" / "clip.timeline.png").width > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.json", "clip.mp4", "clip.timeline.png"]


def test_video_command_refuses_bad_input_before_loading_models(tmp_path):
    from typer.testing import CliRunner

    from relate_anything.cli import app

    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    result = CliRunner().invoke(app, ["video", str(notes), "--sam", str(tmp_path / "no-sam")])
    assert result.exit_code == 4 and "not" in result.output and "SAM weights" not in result.output
    result = CliRunner().invoke(app, ["video", str(notes), "--tracker", "magic"])
    assert result.exit_code == 2 and "tracker must be one of" in result.output
    result = CliRunner().invoke(app, ["video", str(notes), "--start", "3", "--end", "1"])
    assert result.exit_code == 2 and "before end" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("tracker", ["sam2", "seggpt"])
def test_sam2_and_seggpt_trackers_run_end_to_end(pipeline, clip, tracker, tiny_seggpt_folder):
    """Tiny random SAM 2 and SegGPT carry the tracks: plumbing, ids and shapes (random weights
    track nothing in particular)."""
    from relate_anything.seggpt import ExampleSegmenter
    from relate_anything.video.sam2 import Sam2TrackerSettings, Sam2VideoTracker
    from sam2_factory import random_sam2_video

    stages = {}
    if tracker == "sam2":
        # Chunks of 4 frames: the ids must survive the chunk boundaries.
        stages["video_tracker"] = Sam2VideoTracker(random_sam2_video(), settings=Sam2TrackerSettings(chunk_size=4))
    else:
        stages["example_segmenter"] = ExampleSegmenter.from_pretrained(tiny_seggpt_folder)
    staged = RelateAnything(pipeline.segmenter, pipeline.relation_head, settings=pipeline.settings, **stages)
    _, frames, _ = clip
    request = VideoRequest(
        tracker=tracker,
        top_k=5,
        **(RANDOM | {"tracking": TrackerSettings(continuity_iou=0.0, min_track=1, keyframe_every=4)}),
    )
    run = staged.video_run(list(frames[:8]), request)
    graphs = list(run)
    graph = run.result()
    assert len(graphs) == 8 and graph.num_frames == 8
    assert run.tracker.name == tracker and graph.tracks
    # A track's frames are in order and each of its masks is the one the frame graph shows.
    for track in graph.tracks:
        for item in track.frames:
            assert graphs[item.frame].segment(track.id).mask == item.mask
    keyframe_ids = {s.id for s in graphs[0].segments}
    later_ids = {s.id for g in graphs[1:4] for s in g.segments}
    assert later_ids <= keyframe_ids  # between keyframes no track is born: ids are carried


@pytest.mark.slow
def test_synth_video_then_video_then_eval_video(tmp_path, small_sam, tiny_ram_pth, tiny_clip_folder):
    """data synth-video -> relate-anything video (tiny random models, tracks named with PSG's
    classes) -> eval-video: the commands chain on PVSG-format data (random weights score what
    they score; the oracle test above shows a perfect pipeline scores 1)."""
    import json

    from typer.testing import CliRunner

    from conftest import RANDOM_WEIGHT_FLAGS
    from relate_anything.cli import app

    runner = CliRunner()
    data = tmp_path / "synth"
    result = runner.invoke(
        app, ["data", "synth-video", "--out", str(data), "--videos", "1", "--frames", "6", "--seed", "0"]
    )
    assert result.exit_code == 0, result.output
    (clip,) = sorted((data / "synthetic" / "videos").glob("*.mp4"))
    result = runner.invoke(
        app,
        ["video", str(clip), "--out", str(tmp_path / "pred"), "--fps", "0", "--no-video", "--sam", str(small_sam),
         "--ram", str(tiny_ram_pth), "--labeler", str(tiny_clip_folder), "--vocab", "psg", "--label-threshold", "0",
         "--min-track", "1", "--min-interval", "1", *RANDOM_WEIGHT_FLAGS],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    predicted = VideoSceneGraph.load(tmp_path / "pred" / f"{clip.stem}.json")
    assert predicted.tracks and all(track.label for track in predicted.tracks)
    scores = tmp_path / "scores.json"
    result = runner.invoke(
        app, ["eval-video", str(tmp_path / "pred"), str(data), "--split", "all", "--json", str(scores)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(scores.read_text())
    # What the command reports is the library's score of that prediction against that ground truth.
    from relate_anything.datasets.pvsg import PvsgDataset
    from relate_anything.evaluation.video import evaluate_video

    truth = PvsgDataset(data)
    expected = evaluate_video(
        {clip.stem: predicted},
        {record["video_id"]: graph for record, graph in zip(truth.records, truth)},
        categories=truth.categories,
    )
    assert report["videos"] == 1 and report["recall"] == expected["recall"]


def test_a_truncated_clip_gives_the_graph_of_the_frames_before_the_damage(tmp_path, clip, small_sam, tiny_ram_pth):
    from typer.testing import CliRunner

    from conftest import RANDOM_WEIGHT_FLAGS
    from relate_anything.cli import app

    _, frames, _ = clip
    whole = write_video(tmp_path / "clip.mkv", list(frames) * 3, fps=5, lossless=True)  # 36 frames
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    args = ["video", str(cut), "--out", str(tmp_path / "out"), "--fps", "0", "--no-video", "--min-track", "1"]
    result = CliRunner().invoke(app, [*args, "--sam", str(small_sam), "--ram", str(tiny_ram_pth), *RANDOM_WEIGHT_FLAGS])
    assert result.exit_code == 4, result.output
    assert "cut.mkv" in result.output and "Traceback" not in result.output
    graph = VideoSceneGraph.load(tmp_path / "out" / "cut.json")
    assert 0 < graph.num_frames < 36  # the frames decoded before the damage, related and written


def test_tracks_are_named_once_and_found_by_a_phrase(pipeline, clip, tiny_clip_folder):
    from relate_anything.naming import Labeler, Vocabulary, phrase_scores

    labeler = Labeler.from_pretrained(tiny_clip_folder, threshold=0.0)
    named = RelateAnything(pipeline.segmenter, pipeline.relation_head, settings=pipeline.settings, labeler=labeler)
    vocabulary = Vocabulary.from_names(["dog", "stick", "sand"])
    _, frames, _ = clip
    request = VideoRequest(top_k=10, vocabulary=vocabulary, find="the dog", **RANDOM)
    run = named.video_run(list(frames), request)
    graph = run.result()
    assert graph.tracks and all(track.label in {"dog", "stick", "sand"} for track in graph.tracks)
    # The subject is the track whose averaged region embedding matches the phrase best.
    records = {
        track_id: record for track_id, record in run._records.items() if track_id in {t.id for t in graph.tracks}
    }
    ids = [track_id for track_id, record in records.items() if record.embedding is not None]
    means = torch.stack([records[i].embedding / records[i].embedded for i in ids])
    best = ids[int(phrase_scores(labeler, means, "the dog").argmax())]
    assert graph.relations and {relation.subject for relation in graph.relations} == {best}
    # One name per track, from the average of its embeddings: the same as naming that average.
    names = labeler.names(means, vocabulary)
    assert {i: label for i, label in zip(ids, names.labels)} == {t.id: t.label for t in graph.tracks if t.id in ids}
