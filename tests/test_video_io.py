"""Video files written with PyAV: lossless clips decode to the exact frames; odd sizes are padded."""

import av
import numpy as np
import pytest

from relate_anything.video.io import SamplingError, VideoError, write_video


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


# -- reading ----------------------------------------------------------------------------------

from fractions import Fraction  # noqa: E402
from math import ceil  # noqa: E402

from PIL import Image  # noqa: E402

from relate_anything.video.io import SamplingSettings, VideoDecodeError, open_video  # noqa: E402


def _write_clip(path, frames, *, pts=None, time_base=Fraction(1, 1000), rate=10, rotation=None, options=None):
    """A lossless clip (libx264rgb crf 0) with explicit presentation timestamps (in `time_base`
    ticks) and optional display rotation (counter-clockwise degrees, flips), as a phone writes."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264rgb", rate=rate)
        stream.pix_fmt, stream.width, stream.height = "rgb24", width, height
        stream.options = {"crf": "0", "preset": "ultrafast"}
        stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(*rotation)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = round(index / rate / time_base) if pts is None else pts[index]
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _read(source, **settings):
    return list(open_video(source, settings=SamplingSettings(**settings)))


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".avi"])
def test_reader_round_trips_a_lossless_clip_exactly(tmp_path, suffix):
    frames = _frames(6, 31, 45)  # odd sizes
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=10, lossless=True)
    reader = open_video(path, settings=SamplingSettings(fps=None))
    assert (reader.width, reader.height, reader.fps, reader.rotation) == (45, 31, 10.0, 0)
    assert reader.duration == pytest.approx(0.6) and reader.frame_count == 6
    read = list(reader)
    assert [f.index for f in read] == [f.source_index for f in read] == list(range(6))
    assert [f.time for f in read] == pytest.approx([i / 10 for i in range(6)])
    assert all(f.pixels.dtype == np.uint8 and np.array_equal(f.pixels, g) for f, g in zip(read, frames))
    info = reader.video_info()
    assert (info.width, info.height, info.frame_index, info.fps, info.sampled_fps) == (
        45,
        31,
        tuple(range(6)),
        10.0,
        None,
    )
    assert info.file == str(path)


def test_webm_clip_reads(tmp_path):
    path = tmp_path / "clip.webm"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=10)
        stream.width, stream.height, stream.pix_fmt = 46, 32, "yuv420p"
        for level in (0, 100, 200):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((32, 46, 3), level, np.uint8), "rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    read = _read(path, fps=None)
    assert [f.pixels.shape for f in read] == [(32, 46, 3)] * 3
    assert [round(float(f.pixels.mean()), -1) for f in read] == [0, 100, 200]


def test_fps_sampling_takes_the_first_frame_at_or_after_each_target_time(tmp_path):
    frames = _frames(50, 8, 10)
    path = _write_clip(tmp_path / "clip.mp4", frames, rate=25, time_base=Fraction(1, 12800))
    # 25 fps sampled at 5 fps: every 5th frame.
    read = _read(path, fps=5)
    assert [f.source_index for f in read] == list(range(0, 50, 5))
    assert [f.index for f in read] == list(range(10))
    assert all(np.array_equal(f.pixels, frames[f.source_index]) for f in read)
    # At 7 fps the targets k/7 s fall between frames: frame ceil(25 k / 7) is the first after each.
    expected = [ceil(Fraction(25 * k, 7)) for k in range(15) if ceil(Fraction(25 * k, 7)) < 50]
    assert (
        [f.source_index for f in _read(path, fps=7)]
        == expected
        == [0, 4, 8, 11, 15, 18, 22, 25, 29, 33, 36, 40, 43, 47]
    )
    # A rate at or above the source's takes every frame once (no repeats), and says so.
    reader = open_video(path, settings=SamplingSettings(fps=60))
    assert [f.source_index for f in reader] == list(range(50))
    assert reader.video_info().sampled_fps is None
    reader = open_video(path, settings=SamplingSettings(fps=5))
    assert reader.expected_frames == 10 and len(list(reader)) == 10 and reader.video_info().sampled_fps == 5.0


def test_millisecond_timestamps_do_not_shift_sampling(tmp_path):
    # Matroska rounds 30 fps timestamps to whole milliseconds (frame 1 at 0.033 s, not 1/30 s):
    # sampling at 30 or 10 fps must still take every frame or every third.
    path = _write_clip(tmp_path / "clip.mkv", _frames(30, 8, 10), rate=30, time_base=Fraction(1, 30))
    with av.open(str(path)) as container:
        assert container.streams.video[0].time_base == Fraction(1, 1000)
    assert [f.source_index for f in _read(path, fps=30)] == list(range(30))
    assert [f.source_index for f in _read(path, fps=10)] == list(range(0, 30, 3))


def test_variable_frame_rate_clip_is_sampled_by_timestamps_not_counts(tmp_path):
    # Ten frames a second, then a one-second freeze (a phone dropping frames), then ten again.
    pts = [0, 100, 200, 300, 1300, 1400, 1500, 1600, 1700, 1800]
    frames = _frames(len(pts), 8, 10)
    for suffix in (".mkv", ".mp4"):
        path = _write_clip(tmp_path / f"vfr{suffix}", frames, pts=pts)
        read = _read(path, fps=5)
        # Targets 0, .2, .4, ..., 1.8 s: .4 to 1.2 s all land on the frame at 1.3 s (taken once).
        assert [f.source_index for f in read] == [0, 2, 4, 5, 7, 9]
        assert [f.time for f in read] == pytest.approx([0.0, 0.2, 1.3, 1.4, 1.6, 1.8])
        assert all(np.array_equal(f.pixels, frames[f.source_index]) for f in read)
        # Counting frames (every 2nd, 10 fps -> 5 fps) would have picked others.
        assert [f.source_index for f in read] != list(range(0, len(pts), 2))


def test_start_end_and_max_frames(tmp_path):
    path = write_video(tmp_path / "clip.mp4", _frames(40, 8, 10), fps=10, lossless=True)
    read = _read(path, fps=5, start=1.0, end=2.0)
    assert [f.source_index for f in read] == [10, 12, 14, 16, 18]  # end is exclusive
    assert [f.index for f in read] == [0, 1, 2, 3, 4]
    assert [f.time for f in read] == pytest.approx([1.0, 1.2, 1.4, 1.6, 1.8])
    assert [f.source_index for f in _read(path, fps=5, start=1.0, max_frames=3)] == [10, 12, 14]
    assert [f.source_index for f in _read(path, fps=None, start=3.75)] == [38, 39]
    reader = open_video(path, settings=SamplingSettings(fps=5, start=1.0, end=2.0))
    assert reader.expected_frames == 5
    list(reader)
    assert reader.video_info().frame_index == (10, 12, 14, 16, 18)
    with pytest.raises(VideoError, match=r"start 4.5 s is at or beyond the end of the video \(4.000 s\)"):
        open_video(path, settings=SamplingSettings(start=4.5))


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(start=2.0, end=1.0), r"start \(2.0 s\) must be before end \(1.0 s\)"),
        (dict(start=1.0, end=1.0), "must be before end"),
        (dict(fps=0), "fps must be a positive"),
        (dict(fps=float("nan")), "fps must be a positive"),
        (dict(max_frames=0), "max_frames must be at least 1"),
        (dict(start=-1.0), "start must be a time"),
        (dict(source_fps=-5), "source_fps must be a positive"),
    ],
)
def test_bad_sampling_settings(settings, message):
    with pytest.raises(SamplingError, match=message):
        SamplingSettings(**settings)


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_rotation_metadata_turns_frames_upright(tmp_path, degrees, hflip):
    # PyAV's set_display_rotation: `degrees` counter-clockwise, then the mirror; a player shows
    # exactly that picture, and so must the reader.
    frames = _frames(2, 6, 10)
    path = _write_clip(tmp_path / "phone.mp4", frames, rotation=(degrees, hflip))
    expected = [np.rot90(f, degrees // 90) for f in frames]
    if hflip:
        expected = [f[:, ::-1] for f in expected]
    reader = open_video(path, settings=SamplingSettings(fps=None))
    assert (reader.height, reader.width) == expected[0].shape[:2]
    read = list(reader)
    assert all(np.array_equal(f.pixels, e) for f, e in zip(read, expected))
    assert all(f.pixels.flags.c_contiguous for f in read)
    if not hflip:
        assert reader.rotation == (-degrees) % 360  # reported clockwise
    assert reader.video_info().width == expected[0].shape[1]


def test_vertical_flip_metadata(tmp_path):
    frames = _frames(1, 6, 10)
    path = _write_clip(tmp_path / "flipped.mkv", frames, rotation=(90, False, True))
    assert np.array_equal(_read(path, fps=None)[0].pixels, np.rot90(frames[0], 1)[::-1])


def test_legacy_rotate_tag_is_honoured_without_a_display_matrix():
    # FFmpeg before 6 exported a clockwise `rotate` tag on the stream instead of frame side data.
    from types import SimpleNamespace

    from relate_anything.video.io import _orientation

    pixels = np.arange(2 * 3).reshape(2, 3)
    for tag, expected in [("90", np.rot90(pixels, -1)), ("180", np.rot90(pixels, 2)), ("270", np.rot90(pixels, 1))]:
        orientation = _orientation(SimpleNamespace(side_data=[]), SimpleNamespace(metadata={"rotate": tag}))
        assert orientation.clockwise == int(tag) and np.array_equal(orientation.apply(pixels), expected)
    assert _orientation(SimpleNamespace(side_data=[]), SimpleNamespace(metadata={})).steps == ()


@pytest.mark.parametrize("suffix, options", [(".mkv", None), (".avi", None), (".mp4", {"movflags": "+faststart"})])
def test_truncated_file_yields_the_frames_before_the_damage_then_says_where_it_stopped(tmp_path, suffix, options):
    frames = _frames(40, 31, 45)
    if suffix == ".avi":
        path = write_video(tmp_path / "clip.avi", frames, fps=10, lossless=True)
    else:
        path = _write_clip(tmp_path / f"clip{suffix}", frames, options=options)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    reader = open_video(cut, settings=SamplingSettings(fps=5))
    # The header still promises the whole clip (AVI: its frame count; FFmpeg shortens its duration).
    assert reader.frame_count == 40 if suffix == ".avi" else reader.duration == pytest.approx(4.0)
    read = []
    with pytest.raises(VideoDecodeError, match="truncated or damaged") as caught:
        for frame in reader:
            read.append(frame)
    error = caught.value
    assert 5 <= len(read) <= 12  # about half of the 20 sampled frames
    assert error.sampled_frames == len(read) and reader.frame_index == tuple(f.source_index for f in read)
    assert [f.source_index for f in read] == list(range(0, 2 * len(read), 2))
    assert all(np.array_equal(f.pixels, frames[f.source_index]) for f in read)
    assert read[-1].source_index < error.source_frames <= 40 // 2 + 1
    assert error.time == pytest.approx((error.source_frames - 1) / 10, abs=0.11)
    assert f"source frame {error.source_frames - 1}" in str(error) and f"The {len(read)} frames sampled" in str(error)


def test_mp4_cut_before_its_index_is_refused_at_open(tmp_path):
    path = write_video(tmp_path / "clip.mp4", _frames(10, 8, 10), fps=10, lossless=True)
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="cannot be read as a video.*truncated"):
        open_video(tmp_path / "cut.mp4")


def test_what_is_not_a_video_is_refused_at_open(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n" * 20)
    with pytest.raises(VideoError, match="notes.txt: cannot be read as a video"):
        open_video(tmp_path / "notes.txt")
    Image.fromarray(_frames(1, 8, 10)[0]).save(tmp_path / "photo.png")
    with pytest.raises(VideoError, match="is an image, not a video.*folder or glob of frames"):
        open_video(tmp_path / "photo.png")
    (tmp_path / "photo_named.mp4").write_bytes((tmp_path / "photo.png").read_bytes())
    with pytest.raises(VideoError, match=r"photo_named.mp4 is an image \(png\)"):
        open_video(tmp_path / "photo_named.mp4")
    with pytest.raises(VideoError, match="no such file or folder"):
        open_video(tmp_path / "missing.mp4")


def _audio_only(path, *, empty_video_stream: bool):
    with av.open(str(path), "w") as container:
        if empty_video_stream:
            video = container.add_stream("libx264rgb", rate=5)
            video.pix_fmt, video.width, video.height = "rgb24", 8, 8
            video.codec_context.open()
        audio = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*audio.encode(frame), *audio.encode()]:
            container.mux(packet)
    return path


def test_no_video_stream_and_no_frames_are_refused_at_open(tmp_path):
    with pytest.raises(VideoError, match=r"has no video stream \(streams: audio\)"):
        open_video(_audio_only(tmp_path / "sound.m4a", empty_video_stream=False))
    with pytest.raises(VideoError, match="the video stream has no frames"):
        open_video(_audio_only(tmp_path / "empty.mkv", empty_video_stream=True))


def test_4k_clip_streams_at_full_size(tmp_path):
    frames = [np.full((2160, 3840, 3), level, np.uint8) for level in (30, 200)]
    reader = open_video(write_video(tmp_path / "uhd.mp4", frames, fps=30), settings=SamplingSettings(fps=None))
    assert (reader.width, reader.height) == (3840, 2160)
    read = list(reader)
    assert [f.pixels.shape for f in read] == [(2160, 3840, 3)] * 2
    assert [round(float(f.pixels.mean())) for f in read] == [30, 200]


def _frame_folder(folder, count, *, size=(10, 8), names="frame_{}.png"):
    folder.mkdir()
    frames = _frames(count, size[1], size[0])
    for index, pixels in enumerate(frames):
        Image.fromarray(pixels).save(folder / names.format(index + 1))
    return frames


def test_folder_of_frames_in_natural_order(tmp_path):
    frames = _frame_folder(tmp_path / "frames", 12)  # frame_1 ... frame_12: frame_10 sorts after frame_9
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")
    reader = open_video(tmp_path / "frames", settings=SamplingSettings())  # fps 5 means nothing without a rate
    assert (reader.width, reader.height, reader.fps, reader.frame_count, reader.duration) == (10, 8, None, 12, None)
    read = list(reader)
    assert [f.source_index for f in read] == list(range(12)) and [f.time for f in read] == [None] * 12
    assert all(np.array_equal(f.pixels, g) for f, g in zip(read, frames))
    info = reader.video_info()
    assert info.frame_index == tuple(range(12)) and info.fps is None and info.sampled_fps is None
    assert [f.index for f in _read(tmp_path / "frames", max_frames=4)] == [0, 1, 2, 3]


def test_folder_with_a_source_rate_is_sampled_by_time(tmp_path):
    _frame_folder(tmp_path / "frames", 30)
    reader = open_video(tmp_path / "frames", settings=SamplingSettings(fps=5, source_fps=30))
    assert reader.duration == pytest.approx(1.0) and reader.expected_frames == 5
    read = list(reader)
    assert [f.source_index for f in read] == [0, 6, 12, 18, 24]
    assert [f.time for f in read] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert reader.video_info().sampled_fps == 5.0 and reader.video_info().fps == 30
    assert [f.source_index for f in _read(tmp_path / "frames", fps=5, source_fps=30, start=0.5)] == [15, 21, 27]
    with pytest.raises(VideoError, match="start and end need a frame rate.*source_fps"):
        open_video(tmp_path / "frames", settings=SamplingSettings(start=0.5))


def test_glob_of_frames(tmp_path):
    frames = _frame_folder(tmp_path / "frames", 5, names="{}.png")
    Image.fromarray(frames[0]).save(tmp_path / "frames" / "other.jpg")
    read = _read(str(tmp_path / "frames" / "*.png"), fps=None)
    assert len(read) == 5 and all(np.array_equal(f.pixels, g) for f, g in zip(read, frames))
    with pytest.raises(VideoError, match="the pattern matches no file"):
        open_video(str(tmp_path / "frames" / "*.webp"))
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")
    with pytest.raises(VideoError, match="notes.txt: cannot read this frame as an image"):
        open_video(str(tmp_path / "frames" / "*"))  # a glob takes what it matches: refused before any work
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no image files in this folder"):
        open_video(tmp_path / "empty")


def test_frames_of_mixed_sizes_are_refused_naming_the_first_offender(tmp_path):
    _frame_folder(tmp_path / "frames", 4)
    Image.fromarray(np.zeros((9, 10, 3), np.uint8)).save(tmp_path / "frames" / "frame_3.png")
    Image.fromarray(np.zeros((7, 10, 3), np.uint8)).save(tmp_path / "frames" / "frame_4.png")
    with pytest.raises(VideoError, match=r"frame_3.png is 10x9, but the first frame \(.*frame_1.png\) is 10x8"):
        open_video(tmp_path / "frames")


def test_exif_rotated_frames_count_by_their_upright_size(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(folder / "1.jpg")
    turned = Image.fromarray(np.zeros((10, 8, 3), np.uint8))  # stored portrait, shown landscape
    exif = turned.getexif()
    exif[0x0112] = 6
    turned.save(folder / "2.jpg", exif=exif)
    reader = open_video(folder)
    assert (reader.width, reader.height) == (10, 8)
    assert [f.pixels.shape for f in reader] == [(8, 10, 3), (8, 10, 3)]


def test_a_reader_can_be_iterated_again(tmp_path):
    path = write_video(tmp_path / "clip.mkv", _frames(10, 8, 10), fps=10, lossless=True)
    reader = open_video(path, settings=SamplingSettings(fps=5))
    first = [f.source_index for f in reader]
    for frame in reader:
        break
    assert reader.frame_index == (0,)
    assert [f.source_index for f in reader] == first == [0, 2, 4, 6, 8]
