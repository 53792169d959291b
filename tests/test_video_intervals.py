"""Relation intervals: hand-made score series with hand-computed intervals; batch == streaming."""

import numpy as np
import pytest
import torch

from relate_anything import psg
from relate_anything.errors import UsageError
from relate_anything.video.intervals import (
    IntervalAccumulator,
    IntervalSettings,
    TripletIntervals,
    relation_intervals,
    series_intervals,
    to_video_relations,
)

# No smoothing, no merging, no minimum length: the thresholds alone.
PLAIN = IntervalSettings(window=1, high=0.5, low=0.35, min_interval=1, merge_gap=0)


def test_clean_run():
    intervals, score = series_intervals([0, 0, 0.8, 0.9, 0.7, 0, 0], settings=PLAIN)
    assert intervals == ((2, 4),) and score == pytest.approx(0.8)


def test_hysteresis_keeps_a_dip_above_low_and_cuts_one_below():
    assert series_intervals([0, 0.6, 0.4, 0.6, 0], settings=PLAIN)[0] == ((1, 3),)
    stricter = IntervalSettings(window=1, high=0.5, low=0.45, min_interval=1, merge_gap=0)
    assert series_intervals([0, 0.6, 0.4, 0.6, 0], settings=stricter)[0] == ((1, 1), (3, 3))
    # A run starts where the score reaches `high`, not earlier where it only passed `low`.
    assert series_intervals([0, 0.4, 0.45, 0.6, 0.4, 0.3, 0.4], settings=PLAIN)[0] == ((3, 4),)


def test_a_relation_that_never_reaches_high_has_no_interval():
    assert series_intervals([0.45] * 10, settings=PLAIN) == ((), None)
    assert series_intervals([None] * 5, settings=PLAIN) == ((), None)
    assert series_intervals([], settings=PLAIN) == ((), None)


def test_smoothing_and_min_interval_remove_noise_spikes():
    defaults = IntervalSettings()  # window 3, high 0.5, low 0.35, min_interval 3, merge_gap 2
    # One frame at 0.9 among zeros averages to 0.3: below high.
    assert series_intervals([0, 0, 0, 0.9, 0, 0, 0], settings=defaults) == ((), None)
    # Two frames: smoothed [0, .3, .6, .6, .3, 0] -> a run on frames 2-3, shorter than 3 frames.
    spike = [0, 0, 0.9, 0.9, 0, 0]
    assert series_intervals(spike, settings=defaults) == ((), None)
    assert series_intervals(spike, settings=IntervalSettings(min_interval=2))[0] == ((2, 3),)
    # A held relation survives: smoothed [.45, .6, .9, .9, .9, .6, .3, 0] -> frames 1-5.
    assert series_intervals([0, 0.9, 0.9, 0.9, 0.9, 0.9, 0, 0], settings=defaults)[0] == ((1, 5),)
    # At the clip's ends the window holds fewer frames: the last frame averages (.9 + 0) / 2.
    assert series_intervals([0, 0.9, 0.9, 0.9, 0.9, 0.9, 0], settings=defaults)[0] == ((1, 6),)


def test_smoothing_averages_visible_frames_only():
    # Frame 2 hidden: the average at frame 1 is (.2 + .9) / 2 = .55, not (.2 + .9 + 0) / 3 = .37.
    smoothing = IntervalSettings(window=3, min_interval=1, merge_gap=0)
    assert series_intervals([0.2, 0.9, None, 0.9, 0.2], settings=smoothing)[0] == ((0, 1), (3, 4))


def test_occlusion_gap_merged_or_not():
    occluded = [0.8, 0.8, None, None, 0.8, 0.8]
    merge = IntervalSettings(window=1, min_interval=1, merge_gap=2)
    assert series_intervals(occluded, settings=merge) == (((0, 5),), pytest.approx(0.8))
    apart = IntervalSettings(window=1, min_interval=1, merge_gap=1)
    assert series_intervals(occluded, settings=apart)[0] == ((0, 1), (4, 5))
    # A dip of low scores is a gap like a hidden track.
    assert series_intervals([0.8, 0.8, 0.1, 0.1, 0.8], settings=merge)[0] == ((0, 4),)


def test_merging_comes_before_the_length_filter():
    # Two 2-frame runs around a hidden frame: merged (0-4) they pass min_interval 3; filtered
    # first, both halves would have been dropped.
    settings = IntervalSettings(window=1, min_interval=3, merge_gap=1)
    assert series_intervals([0.8, 0.8, None, 0.8, 0.8], settings=settings)[0] == ((0, 4),)
    assert series_intervals([0.8, 0.8, None, None, 0.8, 0.8], settings=settings) == ((), None)


def test_score_is_the_mean_raw_score_inside_the_intervals_over_visible_frames():
    merge = IntervalSettings(window=1, min_interval=1, merge_gap=1)
    # The merged dip counts (.9 .9 .1 .9 .9), the hidden frame does not, frames outside do not.
    assert series_intervals([0.9, 0.9, 0.1, 0.9, 0.9, 0.0], settings=merge)[1] == pytest.approx(0.74)
    assert series_intervals([0.2, 0.9, None, 0.7, 0.0, 0.0, 0.0, 0.6], settings=merge) == (
        ((1, 3), (7, 7)),
        pytest.approx((0.9 + 0.7 + 0.6) / 3),
    )
    # Raw, not smoothed: smoothed [.3, .5, .7, .5, .2] holds on frames 1-3, raw mean (.6+.9+.6)/3.
    smoothing = IntervalSettings(window=3, min_interval=1, merge_gap=0)
    assert series_intervals([0, 0.6, 0.9, 0.6, 0], settings=smoothing) == (((1, 3),), pytest.approx(0.7))


def _clip(frames=8, predicates=3, tracks=3):
    return np.zeros((frames, predicates, tracks, tracks), np.float32), np.ones((frames, tracks), bool)


def test_relation_intervals_ranks_by_score_and_keeps_top_k():
    scores, visible = _clip()
    scores[0:4, 1, 0, 1] = 0.9  # track 10 <1> track 20, frames 0-3, 0.9
    scores[2:8, 2, 1, 2] = 0.7  # track 20 <2> track 30, frames 2-7, 0.7
    scores[:, 0, 2, 0] = 0.8  # track 30 <0> track 10, all frames, 0.8
    scores[:, 0, 1, 1] = 1.0  # a self-pair: never a relation
    ids = [10, 20, 30]
    found = relation_intervals(scores, visible, track_ids=ids, settings=PLAIN)
    assert found == [
        TripletIntervals(10, 1, 20, pytest.approx(0.9), ((0, 3),)),
        TripletIntervals(30, 0, 10, pytest.approx(0.8), ((0, 7),)),
        TripletIntervals(20, 2, 30, pytest.approx(0.7), ((2, 7),)),
    ]
    assert relation_intervals(scores, visible, track_ids=ids, settings=PLAIN, top_k=2) == found[:2]
    assert relation_intervals(scores, visible, track_ids=ids, settings=PLAIN, top_k=0) == []
    # Hidden tracks neither start nor continue relations: hide track 30 on frames 3-4.
    visible[3:5, 2] = False
    found = relation_intervals(scores, visible, track_ids=ids, settings=PLAIN)
    assert [t.intervals for t in found] == [((0, 3),), ((0, 2), (5, 7)), ((2, 2), (5, 7))]
    relations = to_video_relations(found, psg.predicates())
    assert [(r.subject, r.predicate, r.object) for r in relations][0] == (10, psg.predicates()[1], 20)


def test_equal_scores_rank_by_subject_predicate_object():
    scores, visible = _clip()
    scores[:, 2, 0, 1] = scores[:, 1, 2, 0] = scores[:, 1, 0, 2] = 0.6
    found = relation_intervals(scores, visible, settings=PLAIN)
    assert [(t.subject, t.predicate_id, t.object) for t in found] == [(0, 1, 2), (0, 2, 1), (2, 1, 0)]


def _random_clip(rng, frames=80, predicates=6, tracks=7):
    # Smooth random walks through the thresholds (so there are runs, dips and gaps to merge),
    # tracks entering, leaving and briefly hidden.
    steps = rng.normal(0, 0.25, (frames, predicates, tracks, tracks))
    scores = 1 / (1 + np.exp(-(np.cumsum(steps, axis=0) - 1.0)))
    visible = rng.random((frames, tracks)) > 0.12
    for track in range(tracks):
        first, last = sorted(rng.integers(0, frames, 2))
        visible[:first, track] = visible[last + 1 :, track] = False
    return scores.astype(np.float32), visible


def _stream(scores, visible, settings, ids=None, skip_empty=True):
    accumulator = IntervalAccumulator(settings=settings)
    ids = np.arange(scores.shape[2]) if ids is None else np.asarray(ids)
    for t in range(len(scores)):
        local = np.flatnonzero(visible[t])
        if skip_empty and not len(local):
            continue
        accumulator.add(t, ids[local].tolist(), scores[t][:, local][:, :, local])
    return accumulator


@pytest.mark.parametrize("seed", [0, 1, 3])
@pytest.mark.parametrize(
    "settings",
    [IntervalSettings(), IntervalSettings(window=5, high=0.6, low=0.3, min_interval=2, merge_gap=3), PLAIN],
)
def test_streaming_equals_batch(seed, settings):
    scores, visible = _random_clip(np.random.default_rng(seed))
    ids = [5, 3, 99, 1, 42, 7, 8]
    batch = relation_intervals(scores, visible, track_ids=ids, settings=settings, top_k=None)
    assert len(batch) > 20 and any(len(t.intervals) > 1 for t in batch)
    streamed = _stream(scores, visible, settings, ids).result(top_k=None)
    assert streamed == batch  # exactly: intervals and float scores
    assert (
        relation_intervals(torch.from_numpy(scores), torch.from_numpy(visible), track_ids=ids, settings=settings)
        == (batch[:100])
    )


def test_streaming_equals_batch_when_the_candidate_cap_binds():
    scores, visible = _random_clip(np.random.default_rng(3))
    settings = IntervalSettings(max_candidates=40)
    uncapped = relation_intervals(scores, visible, settings=IntervalSettings(), top_k=None)
    batch = relation_intervals(scores, visible, settings=settings, top_k=None)
    accumulator = _stream(scores, visible, settings)
    assert accumulator.num_candidates == 40 and accumulator._series.shape[0] == 40  # never allocated beyond the cap
    assert accumulator.result(top_k=None) == batch and 0 < len(batch) < len(uncapped)


def test_streaming_memory_holds_candidates_not_frames():
    rng = np.random.default_rng(0)
    frames, predicates, tracks = 400, 56, 30
    accumulator = IntervalAccumulator(settings=IntervalSettings())
    ids = list(range(tracks))
    for t in range(frames):
        scores = rng.uniform(0, 0.05, (predicates, tracks, tracks)).astype(np.float32)
        if 100 <= t < 200:
            scores[7, 3, 4] = 0.9  # one relation, 100 frames long
        if t % 50 == 0:
            scores[1, 5, 6] = 0.95  # spikes: followed, but too short to hold
        accumulator.add(t, ids, scores)
    assert accumulator.num_candidates == 2
    dense = frames * predicates * tracks * tracks * 4  # what a [T, P, N, N] float32 tensor takes
    # Two buffered frames (0.4 MB) and two candidates' series, against 80 MB for the tensor.
    assert accumulator.nbytes < 0.01 * dense
    found = accumulator.result()
    assert [(t.subject, t.predicate_id, t.object, t.intervals) for t in found] == [(3, 7, 4, ((100, 199),))]
    assert found[0].score == pytest.approx(0.9)


def test_expected_frame_count_allocates_the_frame_axis_once():
    scores, visible = _random_clip(np.random.default_rng(0), frames=80)
    accumulator = IntervalAccumulator(num_frames=80)
    for t in range(80):
        accumulator.add(t, list(range(7)), scores[t])
    assert accumulator._series.shape[1] == 80
    assert accumulator.result(top_k=None) == relation_intervals(scores, np.ones((80, 7), bool), top_k=None)


def test_accumulator_checks_its_input():
    accumulator = IntervalAccumulator()
    accumulator.add(0, [1, 2], np.zeros((56, 2, 2)))
    with pytest.raises(ValueError, match="increasing order"):
        accumulator.add(0, [1, 2], np.zeros((56, 2, 2)))
    with pytest.raises(ValueError, match=r"scores must be \[P, 3, 3\]"):
        accumulator.add(1, [1, 2, 3], np.zeros((56, 2, 2)))
    with pytest.raises(ValueError, match="3 predicates, earlier frames had 56"):
        accumulator.add(1, [1, 2], np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="track ids repeat"):
        accumulator.add(1, [1, 1], np.zeros((56, 2, 2)))
    accumulator.add(5, [], np.zeros((56, 0, 0)))  # a frame without tracks
    assert accumulator.result() == [] and accumulator.num_candidates == 0


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(window=2), "window must be an odd"),
        (dict(window=0), "window must be an odd"),
        (dict(high=0.0), "high must be a score"),
        (dict(high=1.5), "high must be a score"),
        (dict(high=0.5, low=0.6), r"low must be a score in \[0, high = 0.5\]"),
        (dict(min_interval=0), "min_interval"),
        (dict(merge_gap=-1), "merge_gap"),
        (dict(max_candidates=0), "max_candidates"),
    ],
)
def test_bad_settings(values, message):
    with pytest.raises(UsageError, match=message):
        IntervalSettings(**values)


def test_bad_shapes():
    scores, visible = _clip()
    with pytest.raises(ValueError, match=r"visible must be \[T, N\]"):
        relation_intervals(scores, visible[:, :2])
    with pytest.raises(ValueError, match="distinct ids"):
        relation_intervals(scores, visible, track_ids=[1, 1, 2])
    with pytest.raises(ValueError, match=r"scores must be \[T, P, N, N\]"):
        relation_intervals(scores[0], visible)


def test_intervals_in_blocks_of_rows_equal_all_rows_at_once(monkeypatch):
    # `result` bounds its temporaries by computing a few rows (triplets) at a time: the same
    # triplets, intervals and float scores as one block of every row.
    import relate_anything.video.intervals as intervals

    scores, visible = _random_clip(np.random.default_rng(1))
    settings = IntervalSettings(window=3, merge_gap=2, min_interval=2)
    accumulator = _stream(scores, visible, settings)
    whole = accumulator.result(top_k=None)
    monkeypatch.setattr(intervals, "_BLOCK_CELLS", 3 * len(scores))  # blocks of 3 rows
    assert accumulator.num_candidates > 20 and len(whole) > 10
    assert accumulator.result(top_k=None) == whole
    assert relation_intervals(scores, visible, settings=settings, top_k=None) == whole
