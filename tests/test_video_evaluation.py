"""PVSG metrics: hand-computed cases, the quirks of OpenPVSG's protocol, corrupted oracles on
synthetic clips, and the `eval-video` command."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from relate_anything import psg, pvsg
from relate_anything.datasets.pvsg import PvsgDataset
from relate_anything.datasets.synthetic_video import make_synthetic_pvsg, relations_from_tracks
from relate_anything.evaluation.pairing import EvaluationError
from relate_anything.evaluation.video import VideoEvalSettings, evaluate_video, score_video
from relate_anything.evaluation.video_cli import evaluate_video_command
from relate_anything.scene_graph import encode_masks
from relate_anything.video_scene_graph import Track, TrackFrame, VideoInfo, VideoRelation, VideoSceneGraph

T, SIZE = 10, 20
ADULT, DOG, DOG2 = (0, 5, 0, 5), (10, 15, 0, 5), (10, 15, 10, 15)  # rows and columns, inclusive: 36 pixels


def _track(track_id, label, box, frames=range(T), *, category_id=None):
    r0, r1, c0, c1 = box
    mask = np.zeros((1, SIZE, SIZE), bool)
    mask[0, r0 : r1 + 1, c0 : c1 + 1] = True
    rle = encode_masks(mask)[0]
    items = tuple(
        TrackFrame(frame=t, mask=rle, bbox=(c0, r0, c1 + 1, r1 + 1), area=int(mask.sum()), score=1.0) for t in frames
    )
    return Track(id=track_id, frames=items, score=1.0, label=label, category_id=category_id)


def _relation(subject, predicate, object_, *intervals, predicates=pvsg.predicates()):
    return VideoRelation(subject, predicate, predicates.index(predicate), object_, 1.0, tuple(intervals))


def _graph(tracks, relations, predicates=pvsg.predicates(), file="clips/v.mp4"):
    video = VideoInfo(width=SIZE, height=SIZE, frame_index=tuple(range(T)), file=file)
    return VideoSceneGraph(video=video, tracks=list(tracks), relations=list(relations), predicates=predicates)


def _tracks(dog_frames=range(T)):
    return [_track(1, "adult", ADULT), _track(2, "dog", DOG, dog_frames), _track(3, "dog", DOG2)]


def _score(
    pred_relations, gt_relations, *, pred_tracks=None, gt_tracks=None, settings=None, predicates=pvsg.predicates()
):
    gt = _graph(gt_tracks or _tracks(), gt_relations)
    prediction = _graph(pred_tracks or _tracks(), pred_relations, predicates=predicates)
    return evaluate_video({"v": prediction}, {"v": gt}, settings=settings)


def test_a_prediction_longer_than_the_ground_truth_range_is_not_penalised():
    report = _score([_relation(1, "looking at", 2, (0, 9))], [_relation(1, "looking at", 2, (5, 9))])
    assert report["recall"] == {"R@20": 1.0, "R@50": 1.0, "R@100": 1.0, "mR@20": 1.0, "mR@50": 1.0, "mR@100": 1.0}
    assert report["soft_recall"]["R@20"] == 1.0


def test_half_the_frames_is_a_hit_and_less_is_a_weak_hit():
    gt = [_relation(1, "looking at", 2, (0, 9))]
    half = _score([_relation(1, "looking at", 2, (0, 4))], gt)  # 5 of 10 frames: vIoU 0.5
    assert half["recall"]["R@20"] == 1.0 and half["soft_recall"]["R@20"] == 0.5 and half["weak_recall"]["R@20"] == 1.0
    less = _score([_relation(1, "looking at", 2, (0, 3))], gt)  # 4 of 10: vIoU 0.4
    assert less["recall"]["R@20"] == 0.0 and less["soft_recall"]["R@20"] == 0.0
    assert less["weak_recall"]["R@20"] == 1.0 and less["soft_weak_recall"]["R@20"] == pytest.approx(0.4)
    none = _score([_relation(1, "looking at", 2, (0, 0))], gt)  # vIoU 0.1: still weak
    assert none["weak_recall"]["R@20"] == 1.0 and none["recall"]["R@20"] == 0.0


def test_one_prediction_matches_two_ground_truth_relations():
    gt = [_relation(1, "looking at", 2, (0, 3)), _relation(1, "looking at", 2, (6, 9))]
    report = _score([_relation(1, "looking at", 2, (0, 9))], gt)
    assert report["relations"] == 2 and report["recall"]["R@20"] == 1.0
    assert report["per_predicate"]["looking at"]["relations"] == 2


def test_frames_where_an_object_is_off_screen_do_not_count():
    off = [t for t in range(T) if t not in (3, 4, 5)]  # the dog is off-screen on frames 3-5
    gt = _graph(_tracks(off), [_relation(1, "looking at", 2, (0, 9))])
    prediction = _graph(_tracks(off), [_relation(1, "looking at", 2, (0, 9))])
    (result,) = score_video(prediction, gt).relations
    assert result.frames == 7 and result.labelled.rank == 0 and result.labelled.viou == 1.0
    for end, viou in ((2, 3 / 7), (5, 3 / 7), (6, 4 / 7)):  # predicting the hidden frames buys nothing
        (result,) = score_video(prediction.with_relations([_relation(1, "looking at", 2, (0, end))]), gt).relations
        assert result.agnostic.weak[0][1] == pytest.approx(viou)
        assert (result.labelled.rank == 0) == (viou >= 0.5)


def test_a_relation_whose_objects_are_never_both_visible_counts_but_cannot_be_hit():
    gt = _graph(_tracks(range(5)), [_relation(1, "looking at", 2, (6, 9)), _relation(1, "looking at", 3, (0, 9))])
    prediction = _graph(_tracks(), [_relation(1, "looking at", 2, (0, 9)), _relation(1, "looking at", 3, (0, 9))])
    report = evaluate_video({"v": prediction}, {"v": gt})
    assert report["recall"]["R@20"] == 0.5 and report["counts"]["relations_never_both_visible"] == 1
    assert any("no frame where both objects are visible" in w for w in report["warnings"])


def test_swapped_subject_and_object_never_match():
    report = _score([_relation(2, "looking at", 1, (0, 9))], [_relation(1, "looking at", 2, (0, 9))])
    assert report["recall"]["R@20"] == 0.0 and report["class_agnostic"]["R@20"] == 0.0  # classes differ, then masks
    gt, prediction = (
        _graph(_tracks(), [_relation(2, "chasing", 3, (0, 9))]),
        _graph(_tracks(), [_relation(3, "chasing", 2, (0, 9))]),
    )
    (result,) = score_video(prediction, gt).relations  # both dogs: the classes match, the masks do not
    assert result.labelled.rank is None and result.labelled.weak == ()


def test_missing_labels_only_count_class_agnostic():
    unlabelled = [replace(t, label=None) for t in _tracks()]
    report = _score(
        [_relation(1, "looking at", 2, (0, 9))], [_relation(1, "looking at", 2, (0, 9))], pred_tracks=unlabelled
    )
    assert report["recall"]["R@20"] == 0.0 and report["class_agnostic"]["R@20"] == 1.0
    assert report["counts"]["unlabelled_tracks"] == 3 and any(
        "3 predicted tracks have no class" in w for w in report["warnings"]
    )
    wrong_class = [replace(t, label="cat") if t.id == 2 else t for t in _tracks()]
    report = _score(
        [_relation(1, "looking at", 2, (0, 9))], [_relation(1, "looking at", 2, (0, 9))], pred_tracks=wrong_class
    )
    assert report["recall"]["R@20"] == 0.0 and report["class_agnostic"]["R@20"] == 1.0


def test_the_scan_stops_at_the_first_hit_but_not_at_weak_hits():
    gt = [_relation(1, "looking at", 2, (0, 9))]
    rows = [
        _relation(1, "looking at", 2, (0, 2)),  # rank 0: vIoU 0.3, weak
        _relation(1, "looking at", 2, (0, 9)),  # rank 1: the hit
        _relation(1, "looking at", 2, (0, 3)),  # rank 2: weak, but after the hit
    ]
    report = _score(rows, gt)
    assert report["recall"]["R@20"] == 1.0 and report["soft_recall"]["R@20"] == 1.0
    assert report["weak_recall"]["R@20"] == 2.0  # OpenPVSG's quirk: weak recall can exceed 1
    assert report["soft_weak_recall"]["R@20"] == pytest.approx(1.3)


def test_ranks_decide_k_and_rows_past_the_largest_k_are_ignored():
    gt = [_relation(1, "looking at", 2, (0, 9))]
    filler = [_relation(1, "holding", 3, (0, 9))] * 25
    report = _score([*filler, _relation(1, "looking at", 2, (0, 9))], gt)
    assert (report["recall"]["R@20"], report["recall"]["R@50"], report["recall"]["R@100"]) == (0.0, 1.0, 1.0)
    report = _score([_relation(1, "holding", 3, (0, 9))] * 100 + [_relation(1, "looking at", 2, (0, 9))], gt)
    assert report["recall"]["R@100"] == 0.0


def test_mask_iou_of_exactly_one_half_is_enough():
    half_dog = [_track(1, "adult", ADULT), _track(2, "dog", (10, 12, 0, 5)), _track(3, "dog", DOG2)]  # 18 of 36
    less = [_track(1, "adult", ADULT), _track(2, "dog", (10, 12, 0, 4)), _track(3, "dog", DOG2)]  # 15 of 36
    gt = [_relation(1, "looking at", 2, (0, 9))]
    assert _score([_relation(1, "looking at", 2, (0, 9))], gt, pred_tracks=half_dog)["recall"]["R@20"] == 1.0
    assert _score([_relation(1, "looking at", 2, (0, 9))], gt, pred_tracks=less)["recall"]["R@20"] == 0.0


def test_recall_pools_relations_and_mean_recall_averages_predicates():
    gt = [
        _relation(1, "looking at", 2, (0, 9)),
        _relation(1, "looking at", 3, (0, 9)),
        _relation(2, "beside", 3, (0, 9)),
    ]
    report = _score([_relation(1, "looking at", 2, (0, 9)), _relation(2, "beside", 3, (0, 9))], gt)
    assert report["recall"]["R@20"] == pytest.approx(2 / 3)
    assert report["recall"]["mR@20"] == pytest.approx((1 / 2 + 1) / 2)
    assert report["per_predicate"]["looking at"]["R@20"] == 0.5 and report["per_predicate"]["beside"]["R@20"] == 1.0
    assert set(report["per_predicate"]) == {"looking at", "beside"}


def test_psg_names_are_mapped_to_pvsg():
    psg_tracks = [
        _track(1, "a man", ADULT, category_id=psg.categories().index("person")),  # PSG's person -> adult
        _track(2, "dog", DOG),
        _track(3, "dog", DOG2),
    ]
    rows = [
        _relation(1, "drinking", 2, (0, 9), predicates=psg.predicates()),  # -> drinking from
        _relation(1, "parked on", 3, (0, 9), predicates=psg.predicates()),  # no PVSG counterpart
        _relation(2, "beside", 3, (0, 9), predicates=psg.predicates()),
    ]
    gt = [_relation(1, "drinking from", 2, (0, 9)), _relation(2, "next to", 3, (0, 9))]
    report = _score(rows, gt, pred_tracks=psg_tracks, predicates=psg.predicates())
    assert report["recall"]["R@20"] == 0.5  # beside is PVSG's beside, not next to
    counts = report["counts"]
    assert counts["mapped_predicates"] == {"drinking": "drinking from"}
    assert counts["unmapped_predicates"] == {"parked on": 1} and counts["unmapped_predicate_relations"] == 1
    assert any(
        "1 of 3 predicted relations have a predicate with no ground-truth counterpart" in w for w in report["warnings"]
    )
    beside = VideoEvalSettings(predicate_map={"beside": "next to"})
    report = _score(rows, gt, pred_tracks=psg_tracks, predicates=psg.predicates(), settings=beside)
    assert report["recall"]["R@20"] == 1.0
    report = _score(
        rows, gt, pred_tracks=psg_tracks, predicates=psg.predicates(), settings=VideoEvalSettings(map_psg_names=False)
    )
    assert report["recall"]["R@20"] == 0.0 and report["counts"]["unmapped_categories"] == {"person": 1}


def test_names_the_ground_truth_has_are_never_mapped_away():
    # a dataset of its own whose vocabulary has PSG's "person": the PSG -> PVSG table must not turn it into "adult"
    vocabulary = ["person", "adult", "dog"]
    tracks = [_track(1, "person", ADULT), _track(2, "dog", DOG), _track(3, "dog", DOG2)]
    gt = _graph(tracks, [_relation(1, "looking at", 2, (0, 9))])
    (result,) = score_video(gt, gt, categories=vocabulary).relations
    assert result.labelled.rank == 0


def test_pairing_missing_unmatched_and_mismatched_videos():
    gt = _graph(_tracks(), [_relation(1, "looking at", 2, (0, 9))])
    prediction = gt.with_relations([_relation(1, "looking at", 2, (0, 9))])
    report = evaluate_video({"other": prediction}, {"v": gt, "w": gt})  # found by its file stem, "v"
    assert report["recall"]["R@20"] == 0.5 and report["videos"] == 2
    assert report["counts"]["missing_predictions"] == ["w"] and report["counts"]["unmatched_predictions"] == []
    report = evaluate_video({"x": replace(prediction, video=replace(prediction.video, file=None))}, [("v", gt)])
    assert report["recall"]["R@20"] == 0.0 and report["counts"]["unmatched_predictions"] == ["x"]
    with pytest.raises(EvaluationError, match="two predictions"):
        evaluate_video({"v": prediction, "other": prediction}, {"v": gt})
    nine = VideoInfo(width=SIZE, height=SIZE, frame_index=tuple(range(9)), file="v.mp4")
    short = VideoSceneGraph(video=nine, tracks=[_track(1, "adult", ADULT, range(9))], predicates=pvsg.predicates())
    with pytest.raises(EvaluationError, match="9 sampled frames, the ground truth 10"):
        evaluate_video({"v": short}, {"v": gt})


def test_settings_are_checked():
    with pytest.raises(ValueError, match="ks"):
        VideoEvalSettings(ks=(0,))
    with pytest.raises(ValueError, match="thresholds"):
        VideoEvalSettings(weak_viou_threshold=0.6)
    assert VideoEvalSettings(ks=(100, 20, 20)).ks == (20, 100)


# -- the synthetic clips: an oracle scores 1, corruptions lower it by computed amounts -----------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pvsg_eval")
    make_synthetic_pvsg(root, videos=3, frames=16, seed=1, size=(160, 120), write_videos=False)
    return root


@pytest.fixture(scope="module")
def ground_truth(synthetic) -> dict[str, VideoSceneGraph]:
    dataset = PvsgDataset(synthetic)
    return dict(zip(dataset.video_ids, dataset))


def _oracle(ground_truth) -> dict[str, VideoSceneGraph]:
    """What an oracle pipeline predicts: the ground-truth tracks, relations from the generator's rule."""
    return {vid: gt.with_relations(relations_from_tracks(gt.with_relations([]))) for vid, gt in ground_truth.items()}


def _visible_frames(gt: VideoSceneGraph, relation: VideoRelation) -> set[int]:
    subject = {f.frame for f in gt.track(relation.subject).frames}
    object_ = {f.frame for f in gt.track(relation.object).frames}
    return set(relation.frames) & subject & object_


def _expected_recall(ground_truth, kept_frames) -> float:
    """Share of ground-truth relations whose kept visible frames are at least half of them."""
    hits = total = 0
    for vid, gt in ground_truth.items():
        for relation in gt.relations:
            frames = _visible_frames(gt, relation)
            total += 1
            hits += 2 * len(frames & kept_frames(vid, relation)) >= len(frames) > 0
    return hits / total


def test_the_oracle_scores_one(ground_truth):
    report = evaluate_video(_oracle(ground_truth), ground_truth)
    assert report["relations"] == sum(len(g.relations) for g in ground_truth.values()) > 10
    for table in ("recall", "soft_recall", "class_agnostic"):
        assert set(report[table].values()) == {1.0}, table


def test_swapping_subjects_and_objects_scores_zero(ground_truth):
    swapped = {
        vid: g.with_relations([replace(r, subject=r.object, object=r.subject) for r in g.relations])
        for vid, g in _oracle(ground_truth).items()
    }
    report = evaluate_video(swapped, ground_truth)
    assert report["recall"]["R@100"] == 0.0 and report["class_agnostic"]["R@100"] == 0.0


def test_shortened_and_shifted_intervals(ground_truth):
    oracle = _oracle(ground_truth)
    vid = "synth0000"
    longest = max(ground_truth[vid].relations, key=lambda r: len(_visible_frames(ground_truth[vid], r)))
    frames = sorted(_visible_frames(ground_truth[vid], longest))
    n = len(frames)
    for kept, hit in ((n // 2 - (n % 2 == 0), False), ((n + 1) // 2, True)):  # just under half, just half
        cut = frames[:kept]
        short = [
            replace(r, intervals=tuple((t, t) for t in cut))
            if (r.subject, r.predicate, r.object) == (longest.subject, longest.predicate, longest.object)
            else r
            for r in oracle[vid].relations
        ]
        report = evaluate_video(oracle | {vid: oracle[vid].with_relations(short)}, ground_truth)
        total = report["relations"]
        assert report["recall"]["R@20"] == pytest.approx(1.0 if hit else (total - 1) / total)

    shift = 3
    shifted = [
        replace(r, intervals=tuple((min(a + shift, 15), min(b + shift, 15)) for a, b in r.intervals))
        for r in oracle[vid].relations
    ]
    shifted = [
        replace(r, intervals=tuple(sorted(set(r.intervals)))) for r in shifted
    ]  # clipping may repeat an interval
    spans = {(r.subject, r.predicate, r.object): set(r.frames) for r in shifted}

    def kept(video, relation):
        if video != vid:
            return set(relation.frames)
        return spans[(relation.subject, relation.predicate, relation.object)]

    expected = _expected_recall(ground_truth, kept)
    assert expected < 1.0
    report = evaluate_video(oracle | {vid: oracle[vid].with_relations(shifted)}, ground_truth)
    assert report["recall"]["R@20"] == pytest.approx(expected)


def test_an_identity_switch_between_two_tracks(ground_truth):
    vid, gt = "synth0000", ground_truth["synth0000"]
    things = [t for t in gt.tracks if t.label in pvsg.thing_classes()]
    a, b = next((x, y) for x in things for y in things if x.label != y.label)
    switch = 8  # from this frame on, the tracker gives a's id to b's region and b's to a's

    def switched(track, other):
        return replace(
            track,
            frames=tuple(f for f in track.frames if f.frame < switch)
            + tuple(f for f in other.frames if f.frame >= switch),
        )

    oracle = _oracle(ground_truth)
    tracks = [switched(a, b) if t.id == a.id else switched(b, a) if t.id == b.id else t for t in oracle[vid].tracks]
    corrupted = replace(oracle[vid], tracks=tracks)

    def kept(video, relation):
        frames = set(relation.frames)
        if video == vid and {relation.subject, relation.object} & {a.id, b.id}:
            frames = {t for t in frames if t < switch}
        return frames

    expected = _expected_recall(ground_truth, kept)
    assert expected < 1.0
    report = evaluate_video(oracle | {vid: corrupted}, ground_truth)
    assert report["recall"]["R@20"] == pytest.approx(expected)


# -- the command ------------------------------------------------------------------------------

runner = CliRunner()
cli = typer.Typer(pretty_exceptions_enable=False)
cli.command()(evaluate_video_command)


def _save(graphs, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for vid, graph in graphs.items():
        graph.save(folder / f"{vid}.json")
    return folder


def test_cli_prints_the_tables_and_writes_json(synthetic, ground_truth, tmp_path):
    pred = _save(_oracle(ground_truth), tmp_path / "pred")
    result = runner.invoke(cli, [str(pred), str(synthetic), "--split", "all", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "PVSG relation recall (%), 3 videos" in result.output and "100.00" in result.output
    assert "Per-predicate recall" in result.output and "standing on" in result.output
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["recall"]["R@20"] == 1.0 and report["videos"] == 3
    result = runner.invoke(cli, [str(pred), str(synthetic)])  # the val split: 1 video, 2 predictions unmatched
    assert (
        result.exit_code == 0
        and "1 videos" in result.output
        and "2 predictions match no ground-truth video" in result.output
    )


def test_cli_bad_input_is_one_message(synthetic, ground_truth, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [([str(empty), str(synthetic)], "no *.json video scene graphs in this folder")]
    not_video = tmp_path / "notvideo"
    not_video.mkdir()
    (not_video / "a.json").write_text('{"schema": "relate-anything/scene-graph/v1"}')
    cases.append(([str(not_video), str(synthetic)], "not a relate-anything video scene graph"))
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "b.json").write_bytes(b"\xff\xfe\x00")
    cases.append(([str(binary), str(synthetic)], "b.json"))
    pred = _save(_oracle(ground_truth), tmp_path / "pred")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pvsg.json").write_text("{")
    cases.append(([str(pred), str(broken)], "cannot read it as JSON"))
    cases.append(([str(pred), str(tmp_path / "nowhere")], "no such file"))
    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    result = runner.invoke(cli, [str(pred), str(synthetic), "--map-predicate", "beside"])
    assert result.exit_code == 2 and "predicted=ground truth" in result.output


def test_cli_missing_mask_png(tmp_path, ground_truth, synthetic):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    (copy / "synthetic" / "masks" / "synth0001" / "0003.png").unlink()
    pred = _save(_oracle(ground_truth), tmp_path / "pred")
    result = runner.invoke(cli, [str(pred), str(copy), "--split", "all"])
    assert (
        result.exit_code == 2 and "video synth0001, frame 3: mask PNG" in result.output and "not found" in result.output
    )


def test_eval_video_is_a_relate_anything_command():
    from relate_anything.cli import app

    result = runner.invoke(app, ["eval-video", "--help"])
    assert result.exit_code == 0 and "PVSG" in result.output
