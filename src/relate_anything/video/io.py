"""Reading and writing video with PyAV (its wheels ship FFmpeg: a pip install is enough).

- `open_video`: a video file (MP4, MOV, WebM, AVI, MKV, ... anything FFmpeg decodes), a folder
  of frames or a glob of frames, sampled by time (`SamplingSettings`) and streamed as upright
  RGB `Frame`s; metadata (size, rate, duration) is known before the first frame is decoded.
- `write_video`: RGB frames to an H.264 file, lossless (libx264rgb at crf 0: decoded frames equal
  the written ones, for test clips whose masks must stay exact) or for viewing (libx264, yuv420p,
  odd sizes padded to even, since yuv420p cannot hold them).

Sampling is decided by presentation timestamps (pts x time_base), not by counting frames, so
variable-frame-rate clips (phones, screen recordings) are sampled evenly in time: for targets
start + k / fps (k = 0, 1, ...), the first frame at or after each target is taken, once.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from relate_anything.atomic import write_atomically
from relate_anything.errors import RelateAnythingError, UsageError, VideoError
from relate_anything.video_scene_graph import VideoInfo

__all__ = [
    "SamplingError",
    "Frame",
    "SamplingSettings",
    "VideoDecodeError",
    "VideoError",
    "VideoReader",
    "open_video",
    "write_video",
]


class SamplingError(UsageError):
    """Sampling settings that cannot be used."""


class VideoDecodeError(VideoError):
    """Decoding stopped before the end of the video: the file is truncated or damaged.

    Raised by a `VideoReader`'s iteration *after* it has yielded every frame decoded before the
    damage, so a caller can process those and then report::

        try:
            for frame in reader:
                process(frame)
        except VideoDecodeError as error:
            warn(error)            # process(...) has seen error.sampled_frames frames

    Attributes:
        sampled_frames: how many frames the iteration yielded before it stopped.
        source_frames: how many source frames were decoded (the last good one is
            `source_frames - 1`).
        time: the time in seconds of the last good source frame (None without timestamps or
            when no frame decoded).
    """

    def __init__(self, message: str, *, sampled_frames: int, source_frames: int, time: float | None) -> None:
        super().__init__(message)
        self.sampled_frames = sampled_frames
        self.source_frames = source_frames
        self.time = time


@dataclass(frozen=True)
class SamplingSettings:
    """Which frames of a clip to read.

    Attributes:
        fps: sample at this rate (frames per second of video time): for targets
            start + k / fps, the first frame at or after each target. None: every frame. A rate
            at or above the source's takes every frame (frames are never repeated).
        max_frames: stop after this many sampled frames (None: no limit).
        start: seconds of video time to begin at (None: the first frame). Video time is 0 at
            the stream's start, as players show it.
        end: seconds to stop before (exclusive; None: the end of the clip).
        source_fps: the frame rate of a folder or glob of frames, which carries no timestamps.
            When given, frame i of the folder is at time i / source_fps and `fps`, `start` and
            `end` apply as for a video (source_fps 30 with fps 5 takes every 6th frame). When
            None, every frame of the folder is taken (a folder has no time to sample by, and
            guessing a rate would silently drop frames), and `start`/`end` are refused. Ignored
            for video files, which carry their own timestamps.
    """

    fps: float | None = 5.0
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None
    source_fps: float | None = None

    def __post_init__(self) -> None:
        for name in ("fps", "source_fps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise SamplingError(f"{name} must be a positive number of frames per second, got {value}")
        if self.max_frames is not None and self.max_frames < 1:
            raise SamplingError(f"max_frames must be at least 1, got {self.max_frames}")
        if self.start is not None and not (math.isfinite(self.start) and self.start >= 0):
            raise SamplingError(f"start must be a time in seconds >= 0, got {self.start}")
        if self.end is not None and not (math.isfinite(self.end) and self.end > 0):
            raise SamplingError(f"end must be a time in seconds > 0, got {self.end}")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise SamplingError(f"start ({self.start} s) must be before end ({self.end} s)")


@dataclass(frozen=True, eq=False)  # eq would compare pixel arrays
class Frame:
    """One sampled frame.

    Attributes:
        index: the sampled-frame index (0, 1, 2, ...): the frame number of a `VideoSceneGraph`.
        source_index: the frame's position in the source (0-based, in presentation order; for
            a folder, the file's position in natural order).
        time: seconds of video time (None for a folder of frames without `source_fps`).
        pixels: RGB uint8 [H, W, 3], upright (rotation metadata applied).
    """

    index: int
    source_index: int
    time: float | None
    pixels: np.ndarray = field(repr=False)


class VideoReader:
    """A clip opened by `open_video`: metadata now, frames as a stream.

    Iterating decodes from the start each time and yields `Frame`s one by one; only the frame
    being converted is held (plus the decoder's own few reference frames), so a 10-minute 1080p
    clip streams in bounded memory. After (or during) an iteration, `frame_index` and
    `video_info()` describe the frames it yielded.

    Attributes:
        file: the source as given (a path, folder or glob).
        width, height: frame size in pixels, upright (after rotation metadata).
        fps: the source's frame rate (the average for a variable-rate clip; `source_fps` or
            None for a folder of frames).
        duration: seconds of video (None when unknown).
        frame_count: source frames, exact for a folder, estimated for a video (None when unknown).
        rotation: clockwise degrees (0, 90, 180, 270) applied to make frames upright.
        settings: the `SamplingSettings`.
    """

    file: str
    width: int
    height: int
    fps: float | None
    duration: float | None
    frame_count: int | None
    rotation: int = 0
    settings: SamplingSettings

    def __init__(self) -> None:
        self._frame_index: list[int] = []

    def __iter__(self) -> Iterator[Frame]:
        self._frame_index = []
        for frame in self._frames():
            self._frame_index.append(frame.source_index)
            yield frame

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    @property
    def frame_index(self) -> tuple[int, ...]:
        """Source frame numbers of the frames the latest iteration yielded, in order."""
        return tuple(self._frame_index)

    @property
    def sampled_fps(self) -> float | None:
        """The rate frames are sampled at, None when every frame is taken (no `fps`, a rate at
        or above the source's, or a folder without `source_fps`)."""
        fps = self.settings.fps
        if fps is None or self.fps is None or fps >= self.fps:
            return None
        return float(fps)

    @property
    def expected_frames(self) -> int | None:
        """An estimate of how many frames an iteration yields (for progress bars; None when
        unknown). Exact for folders and constant-rate clips with known length."""
        settings = self.settings
        if self.fps is None or self.duration is None:
            count = self.frame_count
        else:
            start = settings.start or 0.0
            stop = self.duration if settings.end is None else min(settings.end, self.duration)
            rate = self.fps if self.sampled_fps is None else self.sampled_fps
            count = max(0, math.ceil((stop - start) * rate - 1e-6))
        if count is not None and settings.max_frames is not None:
            count = min(count, settings.max_frames)
        return count

    def video_info(self, frame_index: Sequence[int] | None = None) -> VideoInfo:
        """The `VideoInfo` of a graph built from this reader's frames.

        Args:
            frame_index: source frame numbers of the sampled frames; default: those the latest
                iteration yielded (`frame_index`).
        """
        return VideoInfo(
            width=self.width,
            height=self.height,
            frame_index=tuple(self._frame_index if frame_index is None else frame_index),
            fps=self.fps,
            sampled_fps=self.sampled_fps,
            file=self.file,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.file!r}, {self.width}x{self.height}, fps={self.fps}, "
            f"duration={self.duration}, frame_count={self.frame_count})"
        )


def open_video(source: str | Path, *, settings: SamplingSettings = SamplingSettings()) -> VideoReader:
    """Open a clip for reading, checking it before any heavy work.

    Args:
        source: a video file; a folder of frames (its image files, natural order: 2.png before
            10.png); or a glob of frames (`frames/*.jpg`, same order).
        settings: which frames to read.

    Returns:
        A `VideoReader` with the clip's metadata; iterate it for the frames.

    Raises:
        VideoError: no such file, not a video (a text file, an image), no video stream, no
            frames, a folder with no images or images of different sizes, a glob matching
            nothing, `start` at or beyond the end of the clip.
    """
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = _natural_sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _image_suffixes())
        if not files:
            raise VideoError(
                f"{text}: no image files in this folder (looked for {', '.join(sorted(_image_suffixes()))})"
            )
        return _FrameFilesReader(text, files, settings)
    if any(char in text for char in "*?[") and not path.exists():
        files = _natural_sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise VideoError(f"{text}: the pattern matches no file")
        return _FrameFilesReader(text, files, settings)
    if not path.is_file():
        raise VideoError(f"{text}: no such file or folder")
    if path.suffix.lower() in _image_suffixes() - {".gif"}:
        raise VideoError(
            f"{text} is an image, not a video: give a folder or glob of frames (`frames/*.jpg`), or use "
            "`relate-anything run` for a single image"
        )
    return _VideoFileReader(text, settings)


# -- video files ------------------------------------------------------------------------------


class _VideoFileReader(VideoReader):
    def __init__(self, file: str, settings: SamplingSettings) -> None:
        import av

        super().__init__()
        self.file = file
        self.settings = settings
        try:
            container = av.open(file)
        except av.error.FFmpegError as error:
            raise VideoError(
                f"{file}: cannot be read as a video ({_reason(error)}): not a video file, or truncated (an MP4 "
                "whose index is at the end cannot be read at all once cut)"
            ) from error
        with container:
            if container.format.name.endswith("_pipe") or container.format.name in ("image2", "image2pipe"):
                raise VideoError(
                    f"{file} is an image ({container.format.name.removesuffix('_pipe')}), not a video: give a folder "
                    "or glob of frames, or use `relate-anything run` for a single image"
                )
            if not container.streams.video:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
                raise VideoError(f"{file} has no video stream (streams: {kinds})")
            stream = container.streams.video[0]
            try:
                first = next(iter(container.decode(stream)), None)
            except av.error.FFmpegError as error:
                raise VideoError(
                    f"{file}: cannot decode the first frame ({_reason(error)}): the file is damaged"
                ) from error
            if first is None:
                raise VideoError(f"{file}: the video stream has no frames")
            self._time_base = stream.time_base or Fraction(1, 1_000_000)
            # Video time 0 is the first frame, as players show it (a stream's start_time may sit
            # before it: AVI files muxed by FFmpeg put the first frame at pts 1).
            if first.pts is not None:
                self._origin = first.pts * self._time_base
            elif stream.start_time is not None:
                self._origin = stream.start_time * self._time_base
            else:
                self._origin = Fraction(0)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else None
            self._declared_duration = _stream_duration(stream)
            self.duration = self._declared_duration
            if self.duration is None and container.duration:
                self.duration = container.duration / 1_000_000
            self._declared_frames = int(stream.frames) or None
            self.frame_count = self._declared_frames
            if self.frame_count is None and self.duration is not None and self.fps:
                self.frame_count = round(self.duration * self.fps)
            self._coded_size = (first.width, first.height)
            self._orientation = _orientation(first, stream)
            self.rotation = self._orientation.clockwise
            upright = self._orientation.apply(np.empty((first.height, first.width, 0), dtype=np.uint8))
            self.height, self.width = upright.shape[:2]
        if settings.start is not None and self.duration is not None and settings.start >= self.duration:
            raise VideoError(
                f"{file}: start {settings.start} s is at or beyond the end of the video ({self.duration:.3f} s)"
            )

    def _frames(self) -> Iterator[Frame]:
        import av

        # Timestamps are rounded to the time base (Matroska: 1 ms): a frame within one tick of its
        # target is that target's frame. Capped at 1 ms for coarse bases (AVI ticks are whole frames).
        sampler = _Sampler(self.settings, tolerance=min(Fraction(self._time_base), Fraction(1, 1000)))
        decoded = 0
        last_time: Fraction | None = None
        rate = Fraction(self.fps).limit_denominator(1001) if self.fps else None
        with av.open(self.file) as container:
            stream = container.streams.video[0]
            # Frame threading: FFmpeg decodes a few frames in parallel; it holds about one frame
            # per thread, a bounded amount however long the clip.
            stream.thread_type = "AUTO"
            reached_end = True
            try:
                for av_frame in container.decode(stream):
                    if av_frame.pts is not None:
                        time = av_frame.pts * self._time_base - self._origin
                    elif rate is not None:
                        time = decoded / rate
                    else:
                        time = None
                    decoded += 1
                    last_time = time
                    decision = sampler.offer(time)
                    if decision is _STOP:
                        reached_end = False
                        break
                    if decision is _TAKE:
                        yield Frame(
                            index=sampler.taken - 1,
                            source_index=decoded - 1,
                            time=None if time is None else float(time),
                            pixels=self._pixels(av_frame),
                        )
                        if sampler.full:
                            reached_end = False
                            break
            except av.error.FFmpegError as error:
                raise self._damaged(f"decoding failed ({_reason(error)})", sampler.taken, decoded, last_time) from error
        if reached_end:
            self._check_complete(sampler.taken, decoded, last_time, rate)
        if sampler.taken == 0:
            raise VideoError(f"{self.file}: no frames {_span(self.settings)}")

    def _pixels(self, av_frame) -> np.ndarray:
        if (av_frame.width, av_frame.height) != self._coded_size:
            # A mid-stream size change: keep the clip's size, which graphs and masks rely on.
            width, height = self._coded_size
            pixels = av_frame.to_ndarray(format="rgb24", width=width, height=height)
        else:
            pixels = av_frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(self._orientation.apply(pixels))

    def _check_complete(self, taken: int, decoded: int, last_time: Fraction | None, rate: Fraction | None) -> None:
        # FFmpeg reads a cut Matroska/AVI file to its last whole packet without an error; compare
        # with what the video stream's header promised. The margins keep edit lists and rounding
        # from counting as damage; a file cut in its last second goes unnoticed.
        frame_time = 1 / rate if rate else Fraction(0)
        if self._declared_frames and decoded < self._declared_frames - max(3, self._declared_frames // 100):
            raise self._damaged(
                f"the video stops after {decoded} of the {self._declared_frames} frames its header declares",
                taken,
                decoded,
                last_time,
            )
        if self._declared_duration is not None and last_time is not None:
            covered = float(last_time + frame_time)
            if covered < self._declared_duration - max(1.0, 3 * float(frame_time)):
                raise self._damaged(
                    f"the video stops at {covered:.2f} s of the {self._declared_duration:.2f} s its header declares",
                    taken,
                    decoded,
                    last_time,
                )

    def _damaged(self, what: str, taken: int, decoded: int, last_time: Fraction | None) -> VideoDecodeError:
        if decoded:
            at = f"source frame {decoded - 1}" + ("" if last_time is None else f", {float(last_time):.2f} s")
            read = f"The {taken} frames sampled up to that point ({at}) were read"
        else:
            read = "No frame could be read"
        return VideoDecodeError(
            f"{self.file}: {what}: the file is truncated or damaged. {read}; re-download or repair the file to "
            "read the rest",
            sampled_frames=taken,
            source_frames=decoded,
            time=None if last_time is None or not decoded else float(last_time),
        )


def _stream_duration(stream) -> float | None:
    """The video stream's own duration in seconds (not the container's, which audio may extend)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska writes it per track
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag or "")
    if match:
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _span(settings: SamplingSettings) -> str:
    """The time range of `settings` in words, for messages."""
    start = f"{settings.start} s" if settings.start is not None else "the start"
    return f"between {start} and " + (f"{settings.end} s" if settings.end is not None else "the end")


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


# -- rotation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Orientation:
    """How to turn decoded pixels upright: `transpose`, then `quarter_turns` clockwise, then flips.

    One of the eight orientations a display matrix can express (rotations by quarter turns,
    optionally mirrored)."""

    clockwise: int = 0
    steps: tuple[str, ...] = ()

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        for step in self.steps:
            if step == "transpose":
                pixels = pixels.swapaxes(0, 1)
            elif step == "clockwise":
                pixels = np.rot90(pixels, -1)
            elif step == "counterclockwise":
                pixels = np.rot90(pixels, 1)
            elif step == "hflip":
                pixels = pixels[:, ::-1]
            elif step == "vflip":
                pixels = pixels[::-1]
        return pixels


def _orientation(av_frame, stream) -> _Orientation:
    """The orientation to display a stream's frames upright, as FFmpeg's players do.

    FFmpeg (8.x, as PyAV 18 bundles it) attaches the container's display matrix to every
    decoded frame as side data; `frame.rotation` is its counter-clockwise angle. Mirrored
    matrices (rare: front cameras of some phones) are read from the matrix itself. Older
    FFmpeg builds exported a clockwise `rotate` tag on the stream instead; it is honoured when
    no matrix is present.
    """
    matrix = None
    for side_data in av_frame.side_data:
        if "DISPLAYMATRIX" in str(getattr(side_data, "type", "")):
            matrix = np.frombuffer(bytes(side_data), dtype=np.int32)
    if matrix is None:
        tag = stream.metadata.get("rotate")
        if tag is None or not re.fullmatch(r"-?\d+", tag):
            return _Orientation()
        matrix = _rotation_matrix(int(tag))
        clockwise = int(tag) % 360
    else:
        clockwise = int(round(-av_frame.rotation)) % 360
    a, c, d = int(matrix[0]), int(matrix[3]), int(matrix[4])
    # The rules of ffplay / ffmpeg's autorotate (transpose / hflip / vflip filters), in numpy.
    # Angles that are not quarter turns (never seen in camera files) go to the nearest one.
    quarter = round(clockwise / 90) % 4
    if quarter == 1:
        steps = ("transpose",) if c > 0 else ("clockwise",)
    elif quarter == 2:
        steps = tuple(step for step, flip in (("hflip", a < 0), ("vflip", d < 0)) if flip)
    elif quarter == 3:
        steps = ("clockwise", "vflip") if c < 0 else ("counterclockwise",)
    else:
        steps = ("vflip",) if d < 0 else ()
    return _Orientation(clockwise=quarter * 90, steps=steps)


def _rotation_matrix(clockwise: int) -> np.ndarray:
    """The display matrix (a, b, c, d entries; 16.16 fixed point) of a clockwise rotation."""
    theta = math.radians(clockwise)
    cos, sin = round(math.cos(theta)), round(math.sin(theta))
    one = 1 << 16
    return np.array([cos * one, sin * one, 0, -sin * one, cos * one, 0, 0, 0, 1 << 30], dtype=np.int64)


# -- frame folders ----------------------------------------------------------------------------


class _FrameFilesReader(VideoReader):
    def __init__(self, file: str, files: list[Path], settings: SamplingSettings) -> None:
        super().__init__()
        self.file = file
        self.settings = settings
        self._files = files
        self.fps = settings.source_fps
        self.frame_count = len(files)
        self.duration = None if self.fps is None else len(files) / self.fps
        if self.fps is None and (settings.start is not None or settings.end is not None):
            raise VideoError(
                f"{file}: start and end need a frame rate for a folder of frames: give its source_fps "
                "(--source-fps), or pick the frames by name"
            )
        if settings.start is not None and self.duration is not None and settings.start >= self.duration:
            raise VideoError(
                f"{file}: start {settings.start} s is at or beyond the end of the {len(files)} frames "
                f"({self.duration:.3f} s at {self.fps} fps)"
            )
        self.width, self.height = self._check_sizes()

    def _check_sizes(self) -> tuple[int, int]:
        """Every file's upright size from its header (cheap: pixels are not decoded); mixed sizes
        or unreadable files are refused before any frame is processed."""
        from PIL import Image, UnidentifiedImageError

        first: tuple[int, int] | None = None
        for path in self._files:
            try:
                with Image.open(path) as image:
                    size = image.size
                    # EXIF orientations 5-8 turn the picture by a quarter: width and height swap.
                    if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                        size = size[::-1]
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                raise VideoError(f"{path}: cannot read this frame as an image ({error})") from error
            if first is None:
                first = size
            elif size != first:
                raise VideoError(
                    f"{path} is {size[0]}x{size[1]}, but the first frame ({self._files[0]}) is {first[0]}x{first[1]}: "
                    "all frames of a clip must have one size"
                )
        assert first is not None
        return first

    def _frames(self) -> Iterator[Frame]:
        from relate_anything.image_io import load_image

        rate = None if self.fps is None else Fraction(repr(self.fps))
        sampler = _Sampler(self.settings, tolerance=Fraction(0))
        last_time = None
        for source_index, path in enumerate(self._files):
            time = None if rate is None else source_index / rate
            decision = sampler.offer(time)
            if decision is _STOP:
                break
            if decision is _TAKE:
                try:
                    pixels = load_image(path)
                except RelateAnythingError as error:
                    raise VideoDecodeError(
                        f"{path}: {error}. The {sampler.taken - 1} sampled frames before it were read",
                        sampled_frames=sampler.taken - 1,
                        source_frames=source_index,
                        time=None if last_time is None else float(last_time),
                    ) from error
                if pixels.shape[:2] != (self.height, self.width):  # the file changed since it was opened
                    raise VideoError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, not {self.width}x{self.height}")
                yield Frame(
                    index=sampler.taken - 1,
                    source_index=source_index,
                    time=None if time is None else float(time),
                    pixels=pixels,
                )
                if sampler.full:
                    break
            last_time = time
        if sampler.taken == 0:
            raise VideoError(f"{self.file}: no frames {_span(self.settings)}")


_TAKE, _SKIP, _STOP = object(), object(), object()


class _Sampler:
    """Decides, frame by frame in presentation order, which frames a `SamplingSettings` takes.

    A frame is taken when it is the first at or after the next target time start + k / fps
    (within `tolerance`: timestamps are rounded to the stream's time base). Every
    target it covers is then used up, so a frame is never taken twice and a gap in a
    variable-rate clip does not produce a burst.
    """

    def __init__(self, settings: SamplingSettings, *, tolerance: Fraction) -> None:
        self.settings = settings
        self.tolerance = tolerance
        self.start = Fraction(repr(settings.start)) if settings.start is not None else Fraction(0)
        self.end = Fraction(repr(settings.end)) if settings.end is not None else None
        self.period = None if settings.fps is None else 1 / Fraction(repr(settings.fps))
        self.next_target = self.start
        self.taken = 0

    @property
    def full(self) -> bool:
        return self.settings.max_frames is not None and self.taken >= self.settings.max_frames

    def offer(self, time: Fraction | None) -> object:
        if time is None:  # no timestamps: every frame, up to max_frames
            self.taken += 1
            return _TAKE
        if self.end is not None and time >= self.end - self.tolerance:
            return _STOP
        if time < self.next_target - self.tolerance:
            return _SKIP
        if self.period is not None:
            # The next target strictly after this frame: start + k * period > time + tolerance.
            k = math.floor((time + self.tolerance - self.start) / self.period) + 1
            self.next_target = self.start + k * self.period
        self.taken += 1
        return _TAKE


def _natural_sorted(paths: Iterable[Path]) -> list[Path]:
    """Paths in natural order: digit runs compare as numbers (frame2 before frame10)."""

    def key(path: Path) -> list:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(path))]

    return sorted(paths, key=key)


def _image_suffixes() -> frozenset[str]:
    from relate_anything.batch.inputs import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


# -- writing ----------------------------------------------------------------------------------


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float, *, lossless: bool = False, crf: int = 18
) -> Path:
    """Encode RGB uint8 frames [H, W, 3] (all of one size) as H.264 into `path` (.mp4, .mkv, ...).

    Args:
        path: the file to write; it appears complete or not at all.
        frames: the frames, in order (an iterator is consumed as it goes: frames are not held).
        fps: frames per second (a float such as 29.97 is kept as an exact fraction).
        lossless: libx264rgb at crf 0 (RGB kept bit-exactly) instead of libx264 yuv420p.
        crf: x264's quality for the lossy encoding (lower: better and larger).

    Raises:
        VideoError: no frames, frames of different sizes or not RGB uint8.
    """
    import av

    path = Path(path)
    if fps <= 0:
        raise VideoError(f"fps must be positive, got {fps}")

    def encode(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format=_container_format(path)) as container:
            stream = None
            size = None
            for index, frame in enumerate(frames):
                frame = np.asarray(frame)
                if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                    raise VideoError(f"frame {index}: expected RGB uint8 [H, W, 3], got {frame.shape} {frame.dtype}")
                if stream is None:
                    size = frame.shape[:2]
                    stream = _add_stream(container, size, fps, lossless=lossless, crf=crf)
                elif frame.shape[:2] != size:
                    raise VideoError(
                        f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, the first was {size[1]}x{size[0]}"
                    )
                if not lossless:
                    frame = _pad_to_even(frame)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise VideoError(f"{path}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)

    try:
        return write_atomically(path, encode)
    finally:
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)


def _container_format(path: Path) -> str | None:
    # The temporary name hides the extension from FFmpeg, so the format is named from the target.
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}.get(
        path.suffix.lower()
    )


def _add_stream(container, size: tuple[int, int], fps: float, *, lossless: bool, crf: int):
    height, width = size
    rate = Fraction(fps).limit_denominator(1001)
    if lossless:
        stream = container.add_stream("libx264rgb", rate=rate)
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast"}
    else:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        height, width = height + height % 2, width + width % 2
    stream.width, stream.height = width, height
    return stream


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    """`frame` with one edge row/column repeated where its height/width is odd (yuv420p needs even)."""
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
