"""Video files written with PyAV: lossless clips decode to the exact frames; odd sizes are padded."""

import av
import numpy as np
import pytest

from relate_anything.video.io import VideoError, write_video


def _frames(count: int, height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_lossless_clip_round_trips_exactly_at_odd_sizes(tmp_path, suffix):
    frames = _frames(4, 31, 45)
    path = write_video(tmp_path / f"clip{suffix}", iter(frames), fps=5, lossless=True)
    decoded = _decode(path)
    assert len(decoded) == 4 and all(np.array_equal(a, b) for a, b in zip(frames, decoded))
    assert [p.name for p in tmp_path.iterdir()] == [f"clip{suffix}"]


def test_viewing_clip_pads_odd_sizes_to_even(tmp_path):
    frames = [np.full((31, 45, 3), 128, dtype=np.uint8)] * 3
    decoded = _decode(write_video(tmp_path / "clip.mp4", frames, fps=29.97))
    assert len(decoded) == 3 and decoded[0].shape == (32, 46, 3)
    assert np.abs(decoded[0].astype(int) - 128).max() <= 2
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert abs(float(container.streams.video[0].average_rate) - 29.97) < 1e-3


def test_bad_frames_leave_no_file(tmp_path):
    with pytest.raises(VideoError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=5)
    with pytest.raises(VideoError, match="the first was 45x31"):
        write_video(tmp_path / "mixed.mp4", [*_frames(1, 31, 45), *_frames(1, 32, 45)], fps=5)
    with pytest.raises(VideoError, match="RGB uint8"):
        write_video(tmp_path / "gray.mp4", [np.zeros((8, 8), dtype=np.uint8)], fps=5)
    assert list(tmp_path.iterdir()) == []
