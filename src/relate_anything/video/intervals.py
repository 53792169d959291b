"""Relations over time: per-frame relation scores of tracks -> ranked triplets with frame intervals.

The relation head scores every (subject track, predicate, object track) on every sampled frame
where both tracks are visible. A triplet's series of scores becomes intervals in four steps
(`IntervalSettings`):

1. smooth: centred moving average over `window` frames, over the visible frames in the window
   only (a frame where a track is hidden is no evidence either way);
2. hysteresis: a run starts on a frame whose smoothed score reaches `high` and continues while
   it stays >= `low` (forward only, like a Schmitt trigger); a frame where either track is
   hidden ends a run;
3. merge: runs of one triplet separated by at most `merge_gap` frames (low scores or hidden
   tracks alike) become one interval, the gap included;
4. drop intervals shorter than `min_interval` frames (gaps inside merged intervals count).

Merging comes before the length filter on purpose: two 2-frame runs with a 1-frame dip between
them are one relation that flickered (an occlusion, a hesitant head), and filtering first would
drop both halves and lose it; an interval built by merging has reached `high` at least twice.

A triplet's score is its mean raw (unsmoothed) score over the visible frames inside its
intervals; triplets are ranked by it. Only triplets whose raw score reaches `high` on some
frame can hold anywhere (an average never exceeds its maximum), so the rest are pruned before
any per-triplet work.

Two forms give identical results: `relation_intervals` for a whole clip held as a tensor
[T, P, N, N], and `IntervalAccumulator`, which takes one frame at a time and keeps memory
bounded for long clips.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from relate_anything.errors import UsageError
from relate_anything.video_scene_graph import VideoRelation

__all__ = [
    "IntervalAccumulator",
    "IntervalSettings",
    "TripletIntervals",
    "relation_intervals",
    "series_intervals",
    "to_video_relations",
]


@dataclass(frozen=True)
class IntervalSettings:
    """How score series become intervals (frames are sampled frames).

    The defaults suit RAM's sigmoid scores on clips sampled at about 5 fps (PVSG's rate):

    Attributes:
        window: frames in the centred moving average, odd (1: no smoothing). 3 removes
            one-frame flicker while moving an interval's ends by at most one frame.
        high: smoothed score that starts an interval. 0.5 is logit 0, the decision boundary RAM's
            multi-label loss trains for (a predicate holds where its logit is above 0).
        low: smoothed score an interval needs to continue (<= high). 0.35 lets a relation dip
            through a blurred or half-occluded frame without being cut.
        min_interval: shortest interval kept, in frames. 3 (0.6 s at 5 fps): a relation that
            shorter is most often noise, and PVSG's annotated relations last seconds.
        merge_gap: longest gap (frames with low scores, or where a track is hidden) bridged
            between two runs of one triplet. 2 (0.4 s at 5 fps) covers a passing occlusion.
        max_candidates: most triplets followed at once (memory bound of the streaming form).
            Triplets are admitted in the order they first reach `high` (on one frame: higher
            score first); later ones are ignored once it is full. 10 000 is 100 times a typical
            top_k.
    """

    window: int = 3
    high: float = 0.5
    low: float = 0.35
    min_interval: int = 3
    merge_gap: int = 2
    max_candidates: int = 10_000

    def __post_init__(self) -> None:
        if not (isinstance(self.window, int) and self.window >= 1 and self.window % 2 == 1):
            raise UsageError(f"window must be an odd number of frames >= 1 (centred), got {self.window}")
        if not 0.0 < self.high <= 1.0:
            raise UsageError(f"high must be a score in (0, 1], got {self.high}")
        if not 0.0 <= self.low <= self.high:
            raise UsageError(f"low must be a score in [0, high = {self.high}], got {self.low}")
        if not (isinstance(self.min_interval, int) and self.min_interval >= 1):
            raise UsageError(f"min_interval must be a number of frames >= 1, got {self.min_interval}")
        if not (isinstance(self.merge_gap, int) and self.merge_gap >= 0):
            raise UsageError(f"merge_gap must be a number of frames >= 0, got {self.merge_gap}")
        if not (isinstance(self.max_candidates, int) and self.max_candidates >= 1):
            raise UsageError(f"max_candidates must be >= 1, got {self.max_candidates}")


@dataclass(frozen=True)
class TripletIntervals:
    """A triplet between two tracks and where it holds.

    Attributes:
        subject, object: track ids.
        predicate_id: index into the predicate list (PSG's 56 for RAM).
        score: mean raw score over the visible frames inside `intervals`, in [0, 1].
        intervals: ((start, end), ...) inclusive sampled-frame ranges, sorted and disjoint.
    """

    subject: int
    predicate_id: int
    object: int
    score: float
    intervals: tuple[tuple[int, int], ...]

    def to_video_relation(self, predicates: Sequence[str]) -> VideoRelation:
        """This triplet as a `VideoRelation`, its predicate named from `predicates`."""
        return VideoRelation(
            subject=self.subject,
            predicate=predicates[self.predicate_id],
            predicate_id=self.predicate_id,
            object=self.object,
            score=self.score,
            intervals=self.intervals,
        )


def to_video_relations(triplets: Sequence[TripletIntervals], predicates: Sequence[str]) -> list[VideoRelation]:
    """`TripletIntervals` (ranked) as `VideoRelation`s for a `VideoSceneGraph`, same order."""
    return [triplet.to_video_relation(predicates) for triplet in triplets]


def series_intervals(
    scores: Sequence[float | None] | np.ndarray, *, settings: IntervalSettings = IntervalSettings()
) -> tuple[tuple[tuple[int, int], ...], float | None]:
    """The intervals and score of one triplet's series.

    Args:
        scores: [T] the triplet's score on each sampled frame; None or NaN where either track
            is hidden.

    Returns:
        (intervals, score): inclusive (start, end) frame ranges, and the mean raw score over
        the visible frames inside them (None when there is no interval).
    """
    values = np.array([np.nan if v is None else v for v in scores], dtype=np.float32)[None]
    found = _intervals(values, ~np.isnan(values), settings)
    if not found:
        return (), None
    _, intervals, score = found[0]
    return intervals, score


def relation_intervals(
    scores: Any,
    visible: Any,
    *,
    track_ids: Sequence[int] | None = None,
    settings: IntervalSettings = IntervalSettings(),
    top_k: int | None = 100,
) -> list[TripletIntervals]:
    """Ranked triplets with intervals for a whole clip held in memory.

    Args:
        scores: [T, P, N, N] float scores in [0, 1] (numpy or torch); `[t, r, i, j]` scores
            "track i <predicate r> track j" on sampled frame t. Entries where track i or j is
            hidden, and self-pairs (i, i), are ignored.
        visible: [T, N] bool, track n is visible on frame t.
        track_ids: the id of each of the N tracks (default 0..N-1).
        settings: see `IntervalSettings`.
        top_k: how many triplets to return, best first (None: all).

    Returns:
        `TripletIntervals`, by score descending (ties: by subject, predicate, object).

    Memory: the input, plus [T, P, N, N] bool for the pruning test, plus 9 bytes per candidate
    and frame; for long clips use `IntervalAccumulator`.
    """
    scores = _numpy(scores, np.float32)
    visible = _numpy(visible, bool)
    if scores.ndim != 4 or scores.shape[2] != scores.shape[3]:
        raise ValueError(f"scores must be [T, P, N, N], got {list(scores.shape)}")
    frames, _, count, _ = scores.shape
    if visible.shape != (frames, count):
        raise ValueError(f"visible must be [T, N] = [{frames}, {count}], got {list(visible.shape)}")
    ids = np.arange(count) if track_ids is None else np.asarray(track_ids, dtype=np.int64)
    if ids.shape != (count,) or len(set(ids.tolist())) != count:
        raise ValueError(f"track_ids must be {count} distinct ids, got {list(ids)}")
    pairs = visible[:, :, None] & visible[:, None, :] & ~np.eye(count, dtype=bool)  # [T, N, N]
    reaches = (scores >= settings.high) & pairs[:, None]  # [T, P, N, N]
    predicate, subject, object_ = np.nonzero(reaches.any(axis=0))
    if len(predicate) > settings.max_candidates:
        # The streaming form's admission order: first frame reaching `high`, then score, then ids.
        first = reaches[:, predicate, subject, object_].argmax(axis=0)
        at_first = scores[first, predicate, subject, object_]
        order = np.lexsort((ids[object_], predicate, ids[subject], -at_first, first))
        keep = np.sort(order[: settings.max_candidates])
        predicate, subject, object_ = predicate[keep], subject[keep], object_[keep]
    series = scores[:, predicate, subject, object_].T  # [C, T]
    seen = pairs[:, subject, object_].T
    found = _intervals(series, seen, settings)
    triplets = [
        TripletIntervals(int(ids[subject[row]]), int(predicate[row]), int(ids[object_[row]]), score, intervals)
        for row, intervals, score in found
    ]
    return _ranked(triplets, top_k)


class IntervalAccumulator:
    """Streaming `relation_intervals`: feed the relation scores one sampled frame at a time.

    Example:
        >>> accumulator = IntervalAccumulator(settings=IntervalSettings())
        >>> for t, (track_ids, scores) in enumerate(per_frame):   # scores [P, n, n] in [0, 1]
        ...     accumulator.add(t, track_ids, scores)
        >>> relations = to_video_relations(accumulator.result(top_k=100), psg.predicates())

    Only triplets whose raw score has reached `high` ("candidates") are followed: from that
    frame on, their score on every frame is kept (float32, NaN where hidden), and the
    `window - 1` frames before it come from a short buffer of whole frames, which is all the
    smoothing and hysteresis can look back. The result equals `relation_intervals` on the same
    scores.

    Memory bound: 4 bytes x candidates x frames (candidates <= `settings.max_candidates`),
    over-allocated up to 2x on each axis as the arrays grow by doubling (never beyond the cap;
    the frame axis exactly when `num_frames` is given and right), plus `window - 1` frames of
    scores (4 bytes x P x n x n each). A 10-minute clip at 5 fps (3000 frames) with
    50 tracks: 1.1 MB of buffered frames and 12 KB per candidate -- 44 MB held for 1959
    candidates in `bench/video_io.py` (a dense [T, P, N, N] tensor: 1.6 GB), 120 MB at the
    default cap of 10 000 candidates (which only an untrained head reaches). There, `add` took 3.3 ms a
    frame and `result` 1.8 s on 2 CPU cores.
    `result` computes the intervals of about a million candidate-frames at a time, so its
    temporaries add ~70 MiB, not ~70 bytes per candidate and frame (bench/video.py measured a
    2.2 GiB transient at the cap over 3000 frames before).
    """

    def __init__(self, *, settings: IntervalSettings = IntervalSettings(), num_frames: int | None = None) -> None:
        """
        Args:
            settings: see `IntervalSettings`.
            num_frames: the expected number of sampled frames (e.g. `VideoReader.expected_frames`),
                to allocate the frame axis once; it grows if more frames come.
        """
        self.settings = settings
        self._frame_capacity = max(0, num_frames or 0)
        self._track_index: dict[int, int] = {}  # track id -> internal index (order of first sight)
        self._track_ids: list[int] = []
        self._keys = np.empty(0, dtype=np.int64)  # sorted keys of the candidates, for membership
        self._subjects = np.empty(0, dtype=np.int64)  # internal track indices, per candidate row
        self._predicates = np.empty(0, dtype=np.int64)
        self._objects = np.empty(0, dtype=np.int64)
        self._series = np.full((0, 0), np.nan, dtype=np.float32)  # [C capacity, T capacity]
        self._count = 0
        self._frames = 0
        self._num_predicates: int | None = None
        self._recent: deque[tuple[int, np.ndarray, np.ndarray]] = deque()  # (frame, internal ids, scores)

    @property
    def num_candidates(self) -> int:
        """Triplets followed so far."""
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held (the candidates' series and the buffered frames)."""
        return self._series.nbytes + sum(scores.nbytes for _, _, scores in self._recent)

    def add(self, frame: int, track_ids: Sequence[int], scores: Any) -> None:
        """Take the scores of sampled frame `frame`.

        Args:
            frame: the sampled-frame index; increasing from call to call (frames not given have
                no visible tracks).
            track_ids: ids of the n tracks visible on this frame.
            scores: [P, n, n] float in [0, 1] (numpy or torch); `[r, i, j]` scores
                "track_ids[i] <predicate r> track_ids[j]". Self-pairs are ignored.
        """
        scores = _numpy(scores, np.float32)
        local = np.array([self._internal(int(i)) for i in track_ids], dtype=np.int64)
        count = len(local)
        if scores.ndim != 3 or scores.shape[1:] != (count, count):
            raise ValueError(f"scores must be [P, {count}, {count}] for {count} tracks, got {list(scores.shape)}")
        if len(set(local.tolist())) != count:
            raise ValueError(f"frame {frame}: track ids repeat: {list(track_ids)}")
        if self._num_predicates is None:
            self._num_predicates = scores.shape[0]
        elif scores.shape[0] != self._num_predicates:
            raise ValueError(f"frame {frame}: {scores.shape[0]} predicates, earlier frames had {self._num_predicates}")
        if frame < self._frames:
            raise ValueError(f"frames must come in increasing order: {frame} after {self._frames - 1}")
        self._grow(frames=frame + 1)
        self._frames = frame + 1
        if count:
            self._record(frame, local, scores)
            self._admit(frame, local, scores)
        # Keep the frames a new candidate's smoothing and run start can look back to.
        reach = self.settings.window - 1
        self._recent.append((frame, local, scores))
        while self._recent and self._recent[0][0] < frame + 1 - reach:
            self._recent.popleft()

    def result(self, *, top_k: int | None = 100, num_frames: int | None = None) -> list[TripletIntervals]:
        """Ranked triplets with intervals over the frames added so far.

        Args:
            top_k: how many triplets, best first (None: all).
            num_frames: the clip's sampled-frame count, if frames at its end had no tracks
                (only checked: intervals never reach frames without scores).
        """
        if num_frames is not None and num_frames < self._frames:
            raise ValueError(f"num_frames {num_frames} is less than the {self._frames} frames added")
        series = self._series[: self._count, : self._frames]
        found = _intervals(series, ~np.isnan(series), self.settings)
        ids = self._track_ids
        triplets = [
            TripletIntervals(
                ids[self._subjects[row]], int(self._predicates[row]), ids[self._objects[row]], score, intervals
            )
            for row, intervals, score in found
        ]
        return _ranked(triplets, top_k)

    # -- internals ------------------------------------------------------------------------

    def _internal(self, track_id: int) -> int:
        index = self._track_index.get(track_id)
        if index is None:
            index = self._track_index[track_id] = len(self._track_ids)
            self._track_ids.append(track_id)
        return index

    def _key(self, subject: np.ndarray, predicate: np.ndarray, object_: np.ndarray) -> np.ndarray:
        # Internal track indices and predicates packed in one int64 (2^26 tracks, 2^11 predicates).
        return (subject << 37) | (predicate << 26) | object_

    def _record(self, frame: int, local: np.ndarray, scores: np.ndarray) -> None:
        """Write this frame's scores of the current candidates whose tracks are both visible."""
        if not self._count:
            return
        position = np.full(len(self._track_ids), -1, dtype=np.int64)
        position[local] = np.arange(len(local))
        rows = np.arange(self._count)
        subject, object_ = position[self._subjects[rows]], position[self._objects[rows]]
        seen = (subject >= 0) & (object_ >= 0)
        rows = rows[seen]
        self._series[rows, frame] = scores[self._predicates[rows], subject[seen], object_[seen]]

    def _admit(self, frame: int, local: np.ndarray, scores: np.ndarray) -> None:
        """Follow the triplets first reaching `high` on this frame (within the cap)."""
        reaches = scores >= self.settings.high
        reaches[:, np.arange(len(local)), np.arange(len(local))] = False
        predicate, i, j = np.nonzero(reaches)
        if not len(predicate):
            return
        keys = self._key(local[i], predicate, local[j])
        new = ~np.isin(keys, self._keys, assume_unique=False)
        predicate, i, j, keys = predicate[new], i[new], j[new], keys[new]
        room = self.settings.max_candidates - self._count
        if not len(predicate) or room <= 0:
            return
        ids = np.asarray(self._track_ids, dtype=np.int64)
        values = scores[predicate, i, j]
        order = np.lexsort((ids[local[j]], predicate, ids[local[i]], -values))[:room]
        predicate, i, j, keys = predicate[order], i[order], j[order], keys[order]
        start = self._count
        self._grow(candidates=start + len(order))
        self._subjects[start : start + len(order)] = local[i]
        self._predicates[start : start + len(order)] = predicate
        self._objects[start : start + len(order)] = local[j]
        self._count += len(order)
        self._keys = np.sort(np.concatenate([self._keys, keys]))
        rows = np.arange(start, self._count)
        self._series[rows, frame] = scores[predicate, i, j]
        # Back-fill from the buffered frames: the smoothing around the first frames of a run
        # reads up to window - 1 frames back.
        for earlier, earlier_local, earlier_scores in self._recent:
            position = np.full(len(self._track_ids), -1, dtype=np.int64)
            position[earlier_local] = np.arange(len(earlier_local))
            subject, object_ = position[local[i]], position[local[j]]
            seen = (subject >= 0) & (object_ >= 0)
            self._series[rows[seen], earlier] = earlier_scores[predicate[seen], subject[seen], object_[seen]]

    def _grow(self, *, frames: int = 0, candidates: int = 0) -> None:
        rows, columns = self._series.shape
        if frames <= columns and candidates <= rows:
            return
        # Rows never exceed the cap; the frame axis starts at the expected length when known.
        new_rows = rows if candidates <= rows else min(max(candidates, 2 * rows, 16), self.settings.max_candidates)
        new_columns = columns if frames <= columns else max(frames, 2 * columns, 64, self._frame_capacity)
        series = np.full((new_rows, new_columns), np.nan, dtype=np.float32)
        series[:rows, :columns] = self._series
        self._series = series
        for name in ("_subjects", "_predicates", "_objects"):
            values = np.zeros(new_rows, dtype=np.int64)
            values[:rows] = getattr(self, name)
            setattr(self, name, values)


# -- the vectorised core ----------------------------------------------------------------------


def _intervals(
    series: np.ndarray, visible: np.ndarray, settings: IntervalSettings
) -> list[tuple[int, tuple[tuple[int, int], ...], float]]:
    """Intervals of C series at once.

    Args:
        series: [C, T] float32 raw scores (any value where not visible).
        visible: [C, T] bool, both tracks visible.

    Returns:
        [(row, intervals, score)] for the rows with at least one interval, by row.

    Rows are independent, so they are taken `_BLOCK_CELLS // T` at a time: the temporaries
    (float64 and int64 copies, ~70 bytes a row and frame) stay near 70 MiB however long the
    clip (10 000 candidates over 3000 frames would otherwise need ~2.5 GiB at once).
    """
    count, frames = series.shape
    if count == 0 or frames == 0:
        return []
    rows = max(1, _BLOCK_CELLS // frames)
    if count <= rows:
        return _block_intervals(series, visible, settings)
    return [
        (begin + row, intervals, score)
        for begin in range(0, count, rows)
        for row, intervals, score in _block_intervals(
            series[begin : begin + rows], visible[begin : begin + rows], settings
        )
    ]


# Candidate-frames whose intervals `_intervals` computes together (bounds its temporaries).
_BLOCK_CELLS = 2**20


def _block_intervals(
    series: np.ndarray, visible: np.ndarray, settings: IntervalSettings
) -> list[tuple[int, tuple[tuple[int, int], ...], float]]:
    """`_intervals` of rows computed together (all of them at once)."""
    frames = series.shape[1]
    raw = np.where(visible, series, 0).astype(np.float64)
    seen = visible.astype(np.float64)
    # Centred moving average over visible frames: sums of shifted copies (a handful of frames),
    # not a running cumulative sum, so a value never depends on frames outside its window.
    half = settings.window // 2
    total, number = raw.copy(), seen.copy()
    for shift in range(1, half + 1):
        total[:, shift:] += raw[:, :-shift]
        total[:, :-shift] += raw[:, shift:]
        number[:, shift:] += seen[:, :-shift]
        number[:, :-shift] += seen[:, shift:]
    smooth = np.divide(total, number, out=np.zeros_like(total), where=number > 0)
    # Hysteresis without a loop: frame t is inside a run when the last frame at or before t that
    # reached `high` is later than the last one that fell below `low` (or was hidden).
    index = np.arange(frames)
    starts_high = visible & (smooth >= settings.high)
    breaks = ~visible | (smooth < settings.low)
    last_high = np.maximum.accumulate(np.where(starts_high, index, -1), axis=1)
    last_break = np.maximum.accumulate(np.where(breaks, index, -1), axis=1)
    on = last_high > last_break
    # Runs as [start, stop) per row, in row-major order.
    edges = np.diff(np.pad(on.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    row, start = np.nonzero(edges == 1)
    _, stop = np.nonzero(edges == -1)
    if not len(row):
        return []
    # Merge runs of one row separated by at most merge_gap frames, then drop short intervals.
    first = np.ones(len(row), dtype=bool)
    first[1:] = (row[1:] != row[:-1]) | (start[1:] - stop[:-1] > settings.merge_gap)
    group_start = np.flatnonzero(first)
    group_end = np.append(group_start[1:], len(row)) - 1
    row, start, stop = row[group_start], start[group_start], stop[group_end]
    long_enough = stop - start >= settings.min_interval
    row, start, stop = row[long_enough], start[long_enough], stop[long_enough]
    if not len(row):
        return []
    # Mean raw score over visible frames inside each row's intervals; np.add.reduceat sums each
    # interval's own frames, so the result does not depend on frames outside it.
    flat = row * frames
    bounds = np.stack([flat + start, flat + stop], axis=1).ravel()
    padded_raw = np.append(raw.ravel(), 0.0)
    padded_seen = np.append(seen.ravel(), 0.0)
    sums = np.add.reduceat(padded_raw, bounds)[::2]
    counts = np.add.reduceat(padded_seen, bounds)[::2]
    rows, at = np.unique(row, return_index=True)
    row_sums = np.add.reduceat(sums, at)
    row_counts = np.add.reduceat(counts, at)
    ends = np.append(at[1:], len(row))
    return [
        (
            int(r),
            tuple((int(a), int(b) - 1) for a, b in zip(start[lo:hi], stop[lo:hi])),
            float(s / c),
        )
        for r, lo, hi, s, c in zip(rows, at, ends, row_sums, row_counts)
    ]


def _ranked(triplets: list[TripletIntervals], top_k: int | None) -> list[TripletIntervals]:
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 or None, got {top_k}")
    ranked = sorted(triplets, key=lambda t: (-t.score, t.subject, t.predicate_id, t.object))
    return ranked if top_k is None else ranked[:top_k]


def _numpy(values: Any, dtype: Any) -> np.ndarray:
    """A numpy array from a numpy array or a torch tensor (any device)."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy() if dtype is np.float32 else values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)
