"""Reading and writing video with PyAV (its wheels ship FFmpeg: a pip install is enough).

- `write_video`: RGB frames to an H.264 file, lossless (libx264rgb at crf 0: decoded frames equal
  the written ones, for test clips whose masks must stay exact) or for viewing (libx264, yuv420p,
  odd sizes padded to even, since yuv420p cannot hold them).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from relate_anything.atomic import write_atomically
from relate_anything.errors import RelateAnythingError

__all__ = ["VideoError", "write_video"]


class VideoError(RelateAnythingError):
    """A video that cannot be read or written."""


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
