"""SAM 2 video tracking through transformers, on tiny random models (plumbing, ids, memory bounds).

With random weights SAM 2 does not track anything meaningful; the object-score bias of
`sam2_factory` makes it call every object present (or absent), so ids, chunk boundaries, pruning
and shapes can be checked exactly. The pruning test compares against transformers' own session
run without any pruning: the tracker must compute the same masks, scores and tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

import relate_anything.video.sam2 as sam2_module
from relate_anything import weights
from relate_anything.errors import CheckpointError, WeightsNotFoundError
from relate_anything.sam.sam2_ops import capture_pointer_tokens, preprocess_square, square_mask_inputs, upscale_logits
from relate_anything.video.sam2 import Sam2TrackerSettings, Sam2VideoTracker, TrackedMasks
from sam2_factory import random_sam2_image, random_sam2_video

HEIGHT, WIDTH = 48, 64


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models on 2 shared cores: intra-op threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def present_model():
    """Every tracked object present; short memory windows, so pruning starts early."""
    return random_sam2_video(object_score_bias=8.0, num_maskmem=3, max_object_pointers=4)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(40)]


def rectangle(top: int, left: int, bottom: int, right: int) -> torch.Tensor:
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


FIRST = rectangle(8, 16, 24, 40)
SECOND = rectangle(28, 4, 44, 60)


def run(tracker: Sam2VideoTracker, frames, prompts: dict[int, dict[int, torch.Tensor]]) -> list[TrackedMasks]:
    tracker.start(HEIGHT, WIDTH)
    return [tracker.step(frame, new_objects=prompts.get(index)) for index, frame in enumerate(frames)]


@pytest.fixture(scope="module")
def default_model():
    """Every tracked object present; SAM 2's memory windows (7 mask memories, 16 pointers)."""
    return random_sam2_video(object_score_bias=8.0, seed=1)


def test_ids_are_stable_across_chunks_and_new_objects_join(default_model, frames):
    tracker = Sam2VideoTracker(default_model, settings=Sam2TrackerSettings(chunk_size=8))
    tracker.start(HEIGHT, WIDTH)
    held = []
    results = []
    for index, frame in enumerate(frames):
        prompts = {7: FIRST} if index == 0 else {3: SECOND} if index == 13 else None
        results.append(tracker.step(frame, new_objects=prompts))
        held.append(tracker.session_stats().frames)
    assert [r.frame_index for r in results] == list(range(40))
    assert all(r.ids == (7,) for r in results[:13])
    assert all(r.ids == (7, 3) for r in results[13:])  # order of entry, kept across 4 boundaries
    assert tracker.frame_index == 40 and tracker.object_ids == (7, 3)
    for r in results:
        assert r.masks.shape == (len(r), HEIGHT, WIDTH) and r.masks.dtype == torch.bool
        assert r.masks.device == default_model.device and r.masks.flatten(1).any(1).all()
        assert r.scores.dtype == torch.float32 and bool((r.scores > 0.5).all())
        assert r.features.shape == (len(r), tracker.feature_dim) and r.features.dtype == torch.float32
    # Sessions hold frames 0..chunk_size (the seed frame included), and a boundary resets them.
    assert max(held) == 8 + 1
    assert held[7] == 8 and held[8] == 2  # frame 8 starts a session: seed frame + frame 8


def test_memory_stays_bounded_within_a_long_session(present_model, frames):
    """Without chunk boundaries, pruning alone bounds the state: constant once the windows fill."""
    tracker = Sam2VideoTracker(present_model, settings=Sam2TrackerSettings(chunk_size=1000))
    tracker.start(HEIGHT, WIDTH)
    stats = []
    for index, frame in enumerate(frames):
        prompts = {1: FIRST} if index == 0 else {2: SECOND} if index == 3 else None
        tracker.step(frame, new_objects=prompts)
        stats.append(tracker.session_stats())
    # 2 prompted frames + pointers of the last 3 tracked frames (max_object_pointers - 1).
    assert max(s.frames for s in stats) == 2 + 3
    assert len({s.tensor_bytes for s in stats[10:]}) == 1


def test_prompted_frame_echoes_its_mask(present_model, frames):
    tracker = Sam2VideoTracker(present_model)
    tracker.start(HEIGHT, WIDTH)
    disk_y, disk_x = np.ogrid[:HEIGHT, :WIDTH]
    disk = torch.from_numpy((disk_y - 20) ** 2 + (disk_x - 30) ** 2 <= 11**2)
    first = tracker.step(frames[0], new_objects={1: FIRST, 2: disk})
    assert first.ids == (1, 2)
    assert torch.equal(first.masks[0], FIRST)  # a rectangle survives SAM 2's 32² round trip exactly
    iou = (first.masks[1] & disk).sum() / (first.masks[1] | disk).sum()
    assert iou > 0.9  # a disk's edge is resampled
    # Prompted objects get SAM 2's "present" score for a non-empty mask (sigmoid(10)).
    assert torch.allclose(first.scores, torch.sigmoid(torch.tensor(10.0)).expand(2))


def test_pruned_tracker_equals_transformers_session_without_pruning(present_model, frames):
    """Exactness of pruning: the same outputs as an untouched transformers session.

    The reference streams the same frames through `Sam2VideoInferenceSession` and never drops
    anything; with num_maskmem 3 and 4 object pointers, pruning starts at the fourth frame.
    """
    clip = frames[:14]
    prompts = {0: {5: FIRST}, 6: {8: SECOND}}
    tracker = Sam2VideoTracker(present_model, settings=Sam2TrackerSettings(chunk_size=100))
    ours = run(tracker, clip, prompts)
    reference = reference_run(present_model, clip, prompts)
    for mine, (ids, masks, scores, tokens) in zip(ours, reference):
        assert mine.ids == ids
        assert torch.equal(mine.masks, masks)
        assert torch.equal(mine.scores, scores)
        assert torch.equal(mine.features, tokens)
    stats = tracker.session_stats()
    # Kept: the 2 prompted frames, pointers of the 3 last tracked frames (the last 2 with memories).
    assert stats.frames == 2 + 3 and stats.prompted_frames == 2 and stats.objects == 2


def test_over_pruning_would_change_the_results(present_model, frames, monkeypatch):
    """The pruning test can fail: dropping the memories SAM 2 still reads changes its output."""
    clip = frames[:6]
    prompts = {0: {5: FIRST}}
    reference = reference_run(present_model, clip, prompts)

    def prune_everything_tracked(session, frame_idx, model):
        for outputs in session.output_dict_per_obj.values():
            outputs["non_cond_frame_outputs"].clear()

    monkeypatch.setattr(sam2_module, "_prune", prune_everything_tracked)
    ours = run(Sam2VideoTracker(present_model), clip, prompts)
    assert not torch.equal(ours[-1].features, reference[-1][3])


def reference_run(model, frames, prompts):
    """transformers' streaming API used directly: one session, no pruning, no chunks."""
    size = model.config.image_size
    session = Sam2VideoInferenceSession(
        video_height=HEIGHT, video_width=WIDTH, inference_device="cpu", dtype=torch.float32
    )
    results = []
    for index, frame in enumerate(frames):
        new = prompts.get(index, {})
        for obj_id, mask in new.items():
            session.add_mask_inputs(session.obj_id_to_idx(obj_id), index, square_mask_inputs(mask[None], size))
        session.obj_with_new_inputs = list(new)
        pixels = preprocess_square(frame, image_size=size)
        with capture_pointer_tokens(model) as tokens:
            output = model(inference_session=session, frame=pixels[0], frame_idx=index)
        scores = torch.sigmoid(output.object_score_logits.reshape(-1))
        masks = upscale_logits(output.pred_masks[:, 0], (HEIGHT, WIDTH)) > 0
        keep = (scores > 0.5) & masks.flatten(1).any(1)
        ids = tuple(i for i, k in zip(output.object_ids, keep.tolist()) if k)
        results.append((ids, masks[keep], scores[keep], torch.cat(tokens)[keep]))
    return results


def test_chunk_boundary_reuses_the_last_frames_features(present_model, frames):
    """Re-seeding does not encode the boundary frame again: one encoder pass per frame."""
    calls = []
    handle = present_model.vision_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        tracker = Sam2VideoTracker(present_model, settings=Sam2TrackerSettings(chunk_size=4))
        results = run(tracker, frames[:13], {0: {1: FIRST}})
    finally:
        handle.remove()
    assert len(calls) == 13
    assert all(r.ids == (1,) for r in results)
    stats = tracker.session_stats()
    assert stats.prompted_frames == 1 and stats.objects == 1  # only the seed frame is a prompt


def test_absent_objects_are_left_out_and_not_carried(frames):
    model = random_sam2_video(object_score_bias=-8.0)
    tracker = Sam2VideoTracker(model, settings=Sam2TrackerSettings(chunk_size=4))
    results = run(tracker, frames[:9], {0: {4: FIRST}, 6: {5: SECOND}})
    assert results[0].ids == (4,)  # the prompt says present
    assert all(len(r) == 0 and r.masks.shape == (0, HEIGHT, WIDTH) for r in results[1:6])
    assert results[6].ids == (5,)
    assert len(results[7]) == 0 and len(results[8]) == 0
    # Object 4 was absent on frame 3, the last of its chunk: the session of frame 4 never had it.
    assert tracker.object_ids == (5,)


def test_presence_threshold_filters_by_probability(present_model, frames):
    # Tracked objects score sigmoid(~8) ≈ 0.99966, prompted ones sigmoid(10) ≈ 0.99995.
    strict = Sam2TrackerSettings(presence_threshold=0.9999)
    results = run(Sam2VideoTracker(present_model, settings=strict), frames[:3], {0: {1: FIRST}})
    assert [r.ids for r in results] == [(1,), (), ()]


def test_no_objects_no_model_calls(present_model, frames):
    calls = []
    handle = present_model.vision_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        results = run(Sam2VideoTracker(present_model), frames[:3], {})
    finally:
        handle.remove()
    assert calls == [] and all(len(r) == 0 for r in results)
    assert [r.frame_index for r in results] == [0, 1, 2]


def test_objects_can_start_mid_clip_and_be_reanchored(present_model, frames):
    tracker = Sam2VideoTracker(present_model, settings=Sam2TrackerSettings(chunk_size=100))
    results = run(tracker, frames[:6], {2: {11: FIRST}, 4: {11: SECOND}})
    assert [r.ids for r in results] == [(), (), (11,), (11,), (11,), (11,)]
    # The new prompt replaces the tracked mask (up to SECOND's 4 corner pixels, rounded by SAM 2).
    assert (results[4].masks[0] ^ SECOND).sum() <= 4 < (results[3].masks[0] ^ SECOND).sum()
    assert tracker.session_stats().prompted_frames == 2


def test_bfloat16_session(frames):
    model = random_sam2_video().to(torch.bfloat16)
    results = run(Sam2VideoTracker(model), frames[:2], {0: {1: FIRST}})
    assert [r.ids for r in results] == [(1,), (1,)]
    assert results[1].scores.dtype == torch.float32 and results[1].features.dtype == torch.float32
    assert torch.equal(results[0].masks[0], FIRST)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({1: FIRST.numpy().astype(np.uint8)}, "bool"),
        ({1: FIRST[:10]}, r"\[48, 64\] bool"),
        ({1: torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)}, "empty"),
        ({"a": FIRST}, "integers"),
    ],
)
def test_bad_prompts_are_clear_errors(present_model, frames, bad, message):
    tracker = Sam2VideoTracker(present_model)
    tracker.start(HEIGHT, WIDTH)
    with pytest.raises(ValueError, match=message):
        tracker.step(frames[0], new_objects=bad)


def test_bad_frames_and_order(present_model, frames):
    tracker = Sam2VideoTracker(present_model)
    with pytest.raises(RuntimeError, match="start"):
        tracker.step(frames[0])
    tracker.start(HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="frame"):
        tracker.step(frames[0][:, :10])
    with pytest.raises(ValueError, match="uint8"):
        tracker.step(frames[0].astype(np.float32), new_objects={1: FIRST})
    with pytest.raises(ValueError, match="chunk_size"):
        Sam2TrackerSettings(chunk_size=0)


def test_from_pretrained_loads_a_saved_folder(present_model, frames, tmp_path):
    present_model.save_pretrained(tmp_path / "sam2")
    loaded = Sam2VideoTracker.from_pretrained(tmp_path / "sam2")
    first = run(Sam2VideoTracker(present_model), frames[:3], {0: {1: FIRST}})
    again = run(loaded, frames[:3], {0: {1: FIRST}})
    for a, b in zip(first, again):
        # Loaded weights are bit-equal, yet tokens may differ in the last bit (memory layout).
        assert a.ids == b.ids and torch.equal(a.masks, b.masks)
        torch.testing.assert_close(a.features, b.features, rtol=0, atol=1e-5)


def test_from_pretrained_rejects_an_image_only_sam2_folder(tmp_path):
    random_sam2_image().save_pretrained(tmp_path / "image")
    with pytest.raises(CheckpointError, match="sam2"):
        Sam2VideoTracker.from_pretrained(tmp_path / "image")


def test_missing_weights_offline_name_flag_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv(weights.SAM2_WEIGHTS.env_var, raising=False)
    with pytest.raises(WeightsNotFoundError) as info:
        Sam2VideoTracker.from_pretrained()
    message = str(info.value)
    assert "facebook/sam2.1-hiera-tiny" in message and "HF_HUB_OFFLINE" in message
    assert "--sam2" in message and "RELATE_ANYTHING_SAM2" in message
    monkeypatch.setenv(weights.SAM2_WEIGHTS.env_var, str(tmp_path / "nowhere" / "sam2"))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        Sam2VideoTracker.from_pretrained()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_tracker_matches_cpu(default_model, frames, dtype):
    """On CUDA: masks stay on the GPU; ids equal the CPU run's, masks and tokens close to them
    (float32 with TF32 off: tokens within 1e-3, < 1% of mask pixels differ; bfloat16: the same
    ids, tokens within 5% relative L2 error, < 5% of mask pixels differ)."""
    prompts = {0: {1: FIRST}, 3: {2: SECOND}}
    cpu = run(Sam2VideoTracker(default_model, settings=Sam2TrackerSettings(chunk_size=4)), frames[:10], prompts)
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cuda_model = random_sam2_video(object_score_bias=8.0, seed=1).to("cuda", dtype)
        tracker = Sam2VideoTracker(cuda_model, settings=Sam2TrackerSettings(chunk_size=4))
        gpu = run(tracker, frames[:10], {i: {k: m.cuda() for k, m in p.items()} for i, p in prompts.items()})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
    for a, b in zip(cpu, gpu):
        assert a.ids == b.ids and b.masks.device.type == "cuda" and b.features.dtype == torch.float32
        differ = (a.masks != b.masks.cpu()).float().mean().item()
        error = ((a.features - b.features.cpu()).norm() / a.features.norm()).item()
        if dtype == torch.float32:
            assert differ < 0.01 and torch.allclose(a.features, b.features.cpu(), atol=1e-3)
        else:
            assert differ < 0.05 and error < 0.05
