"""Trackers on a synthetic scene with an oracle segmenter: exact identities, entries, exits,
occlusion and re-appearance."""

import numpy as np
import pytest

from relate_anything.errors import UsageError
from relate_anything.masks import mask_ious
from relate_anything.video.tracking import IouTracker, TrackerSettings
from video_oracle import OracleSegmenter, moving_boxes


def _run(tracker, oracle, scene, keyframe_every):
    """Track the whole scene; per frame {track id: object id} by best mask IoU with the truth."""
    identities = []
    for t in range(len(scene.frames)):
        oracle.set_frame(t)
        tracked = tracker.update(
            t, np.zeros((scene.height, scene.width, 3), np.uint8), keyframe=t % keyframe_every == 0
        )
        truth_ids = list(scene.frames[t])
        truth = np.stack([scene.frames[t][i] for i in truth_ids])
        import torch

        iou = mask_ious(tracked.segments.masks, torch.from_numpy(truth)).numpy()
        frame = {}
        for k, track_id in enumerate(tracked.track_ids):
            best = int(iou[k].argmax())
            assert iou[k, best] > 0.8, (t, track_id, iou[k])
            frame[track_id] = truth_ids[best]
        identities.append(frame)
    return identities


@pytest.mark.parametrize("keyframe_every", [1, 3, 5])
def test_iou_tracker_keeps_one_id_per_object_with_no_switches(keyframe_every):
    scene = moving_boxes()
    oracle = OracleSegmenter(scene)
    tracker = IouTracker(oracle, settings=TrackerSettings(keyframe_every=keyframe_every, max_gap=3))
    identities = _run(tracker, oracle, scene, keyframe_every)
    # Every track follows one object, and every object has one track (no switches, no splits).
    objects_of_track, tracks_of_object = {}, {}
    for frame in identities:
        for track_id, object_id in frame.items():
            objects_of_track.setdefault(track_id, set()).add(object_id)
            tracks_of_object.setdefault(object_id, set()).add(track_id)
    assert all(len(objects) == 1 for objects in objects_of_track.values()), objects_of_track
    assert all(len(tracks) == 1 for tracks in tracks_of_object.values()), tracks_of_object
    # Each object is visible (as a track) on every frame it is in the scene, except that a thing
    # entering between keyframes waits for the next keyframe.
    for t, frame in enumerate(identities):
        present = set(scene.frames[t])
        entered_late = {2} if 6 <= t < 6 + (-6 % keyframe_every) else set()
        assert set(frame.values()) == present - entered_late, (t, frame, present)
    # Object 3 was away for 2 frames (within max_gap) and kept its id.
    assert len(tracks_of_object[3]) == 1


def test_a_long_absence_starts_a_new_track():
    scene = moving_boxes()
    oracle = OracleSegmenter(scene)
    tracker = IouTracker(oracle, settings=TrackerSettings(keyframe_every=1, max_gap=1))
    identities = _run(tracker, oracle, scene, 1)
    tracks_of_3 = {track_id for frame in identities for track_id, object_id in frame.items() if object_id == 3}
    assert len(tracks_of_3) == 2  # away 2 frames > max_gap 1: back under a new id


def test_a_seed_joins_the_track_it_overlaps_or_starts_one():
    scene = moving_boxes()
    oracle = OracleSegmenter(scene)
    tracker = IouTracker(oracle, settings=TrackerSettings(keyframe_every=5))
    oracle.set_frame(0)
    pixels = np.zeros((scene.height, scene.width, 3), np.uint8)
    first = tracker.update(0, pixels, keyframe=True)
    oracle.set_frame(1)
    seed = oracle.segment_prompts(boxes=[[7, 10, 22, 25]])  # object 0 on frame 1
    second = tracker.update(1, pixels, keyframe=False, seed=seed)
    row = second.track_ids.index(second.seed_id)
    assert second.seed_id in first.track_ids
    assert (second.segments.masks[row] == seed.masks[0]).all()


def test_bad_settings_are_refused():
    with pytest.raises(UsageError, match="keyframe_every"):
        TrackerSettings(keyframe_every=0)
    with pytest.raises(UsageError, match="match_iou"):
        TrackerSettings(match_iou=1.5)
