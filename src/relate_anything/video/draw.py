"""Pictures of a `VideoSceneGraph`: annotated frames, an annotated clip, and a timeline.

- `annotate_frame`: one sampled frame with every visible track tinted in its colour (stable per
  track id, `relate_anything.visualize.segment_colour`) and named, the tracks of the relations
  holding at that frame outlined, and those relations listed in a corner box.
- `write_annotated_video`: `annotate_frame` over a clip, streamed into an H.264 file.
- `draw_timeline`: the picture to read first: one row per top relation with bars over its
  intervals, then one thin row per track involved showing where it is visible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from relate_anything.video.io import VideoError, write_video
from relate_anything.video_scene_graph import VideoSceneGraph
from relate_anything.visualize import draw_segments, font_size, segment_colour

__all__ = ["annotate_frame", "draw_timeline", "write_annotated_video"]

_ELLIPSIS = "\u2026"


def annotate_frame(pixels: np.ndarray, graph: VideoSceneGraph, t: int, *, max_relations: int = 5) -> np.ndarray:
    """Sampled frame `t` of `graph` with its tracks and relations drawn on it.

    Args:
        pixels: the frame, RGB uint8 [H, W, 3] at the graph's size.
        graph: the clip's graph.
        t: the sampled-frame index.
        max_relations: how many of the relations holding at `t` (best first) to outline and list.

    Returns:
        RGB uint8 [H, W, 3], the same size (so frames make a video).
    """
    scene = graph.frame(t)
    shown = scene.relations[:max_relations]
    involved = {r.subject for r in shown} | {r.object for r in shown}
    visible = {segment.id for segment in scene.segments}
    font = _font(font_size(graph.width, graph.height))
    # Every visible track is tinted and named (following ids is the point of a video); the
    # relations' tracks stand out with a strong tint and an outline.
    picture = draw_segments(pixels, scene, highlight=involved, labelled=visible, font=font, faint=0.35)
    _relation_box(picture, scene, shown, font)
    _frame_stamp(picture, graph, t, font)
    return np.asarray(picture)


def write_annotated_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    graph: VideoSceneGraph,
    fps: float | None = None,
    *,
    max_relations: int = 5,
) -> Path:
    """Write the clip with `annotate_frame` on every sampled frame as H.264 (yuv420p, odd sizes
    padded), streaming: one frame in memory at a time.

    Args:
        path: the .mp4 (or .mkv, ...) to write, complete or not at all.
        frames: the graph's sampled frames in order, RGB uint8 [H, W, 3] (e.g. the pixels of a
            `VideoReader`'s frames), exactly `graph.num_frames` of them.
        graph: the clip's graph.
        fps: the output rate; default the graph's sampled rate, else the source rate, else 5.
        max_relations: relations listed per frame.

    Raises:
        VideoError: more or fewer frames than the graph has, or a frame of another size.
    """
    rate = fps or graph.video.sampled_fps or graph.video.fps or 5.0

    def annotated() -> Iterable[np.ndarray]:
        count = 0
        for t, pixels in enumerate(frames):
            if t >= graph.num_frames:
                raise VideoError(f"more frames than the graph's {graph.num_frames}")
            pixels = np.asarray(pixels)
            if pixels.shape[:2] != (graph.height, graph.width):
                raise VideoError(
                    f"frame {t} is {pixels.shape[1]}x{pixels.shape[0]}, the graph is {graph.width}x{graph.height}"
                )
            count += 1
            yield annotate_frame(pixels, graph, t, max_relations=max_relations)
        if count != graph.num_frames:
            raise VideoError(f"{count} frames given for a graph of {graph.num_frames}")

    return write_video(path, annotated(), fps=rate)


def _relation_box(picture: Image.Image, scene, relations, font: ImageFont.FreeTypeFont) -> None:
    """The relations, one a line, in a translucent box at the top left, names in track colours."""
    if not relations:
        return
    line_height = round(font.size * 1.35)
    pad = max(4, font.size // 3)
    # As many lines as fit in the upper half of the frame.
    relations = relations[: max(1, (picture.height // 2 - 2 * pad) // line_height)]
    available = picture.width - 4 * pad
    lines = []
    for relation in relations:
        lines.append(
            _fit_parts(
                [
                    (scene.name(relation.subject), segment_colour(relation.subject, brightness=1.0)),
                    (f" {relation.predicate} ", (255, 255, 255)),
                    (scene.name(relation.object), segment_colour(relation.object, brightness=1.0)),
                    (f"  {relation.score:.2f}", (190, 190, 190)),
                ],
                font,
                available,
            )
        )
    text_width = max(sum(font.getlength(text) for text, _ in parts) for parts in lines)
    box = (pad, pad, pad + int(text_width) + 2 * pad, pad + line_height * len(lines) + pad)
    box = (box[0], box[1], min(box[2], picture.width), min(box[3], picture.height))
    # A translucent black box: the pixels under it darkened to 40 %.
    under = np.asarray(picture.crop(box), dtype=np.float32)
    picture.paste(Image.fromarray((under * 0.4 + 0.5).astype(np.uint8)), box[:2])
    draw = ImageDraw.Draw(picture)
    for row, parts in enumerate(lines):
        x, y = box[0] + pad, box[1] + pad // 2 + row * line_height
        for text, colour in parts:
            draw.text((x, y), text, fill=colour, font=font)
            x += font.getlength(text)


def _frame_stamp(picture: Image.Image, graph: VideoSceneGraph, t: int, font: ImageFont.FreeTypeFont) -> None:
    """ "frame t / T" and its time, small, at the bottom left."""
    small = _font(max(10, round(font.size * 0.8)))
    rate = _rate(graph)
    text = f"frame {t} / {graph.num_frames}" + (f"  {t / rate:.1f} s" if rate else "")
    ImageDraw.Draw(picture).text(
        (small.size // 2, picture.height - small.size // 2),
        text,
        fill="white",
        font=small,
        anchor="ld",
        stroke_width=2,
        stroke_fill="black",
    )


# -- timeline ---------------------------------------------------------------------------------


def draw_timeline(graph: VideoSceneGraph, *, top_k: int = 20, width: int = 1200) -> Image.Image:
    """The graph's top relations over time, one row each, above where their tracks are visible.

    Each relation row reads "dog #3 chasing ball #7 (0.71)" (names in their track colours,
    truncated with an ellipsis if too long) with bars over its intervals in the subject's
    colour. Below, a thin row per track taking part shows the frames where it is visible. The
    axis is in seconds from the first sampled frame when the sampling rate is known, else in
    sampled frames.

    Args:
        graph: the clip's graph.
        top_k: how many relations (the graph's first, i.e. best).
        width: picture width in pixels; text is sized for it (about 14 px at 1200).

    Returns:
        An RGB `PIL.Image.Image`.
    """
    relations = graph.relations[:top_k]
    tracks = []
    for relation in relations:
        for track_id in (relation.subject, relation.object):
            if track_id not in tracks:
                tracks.append(track_id)
    size = max(11, round(width / 85))
    font = _font(size)
    small = _font(max(10, round(size * 0.85)))
    margin = size
    row_height = round(size * 1.9)
    track_height = round(size * 1.35)
    labels = [_relation_parts(graph, r) for r in relations] + [
        [(graph.name(t), segment_colour(t, brightness=0.55))] for t in tracks
    ]
    widest = max((sum(font.getlength(text) for text, _ in parts) for parts in labels), default=0)
    label_width = int(min(widest + size, 0.45 * width)) if labels else int(0.2 * width)
    left = margin + label_width
    right = width - margin
    frames = max(1, graph.num_frames)

    def x(frame: float) -> float:
        return left + (right - left) * frame / frames

    title_height = round(size * 2.2)
    heading_height = round(size * 1.6)
    rows_top = margin + title_height + heading_height
    tracks_top = rows_top + row_height * max(1, len(relations)) + (heading_height if tracks else 0)
    axis_top = tracks_top + track_height * len(tracks) + size // 2
    height = axis_top + round(size * 3.2)
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)

    draw.text((margin, margin), _title(graph), fill=(20, 20, 20), font=font)
    shown = f"relations: top {len(relations)} of {len(graph.relations)}" if relations else "relations"
    draw.text((margin, rows_top - heading_height), shown, fill=(110, 110, 110), font=small)
    # Grid lines at the ticks, under the bars.
    ticks, unit = _ticks(graph, right - left)
    for frame, _ in ticks:
        draw.line([(x(frame), rows_top), (x(frame), axis_top)], fill=(232, 232, 232))
    if not relations:
        draw.text((left, rows_top + row_height // 2), "no relations", fill=(110, 110, 110), font=font, anchor="lm")
    for row, (relation, parts) in enumerate(zip(relations, labels)):
        top = rows_top + row * row_height
        if row % 2:
            draw.rectangle([0, top, width, top + row_height - 1], fill=(247, 247, 247))
            for frame, _ in ticks:
                draw.line([(x(frame), top), (x(frame), top + row_height - 1)], fill=(232, 232, 232))
        _draw_parts(draw, (margin, top + row_height / 2), _fit_parts(parts, font, label_width - size // 2), font)
        bar = (top + row_height * 0.22, top + row_height * 0.78)
        for start, end in relation.intervals:
            # At least 2 px wide, so a one-frame interval still shows.
            x0, x1 = x(start), max(x(end + 1), x(start) + 2)
            draw.rectangle(
                [round(x0), round(bar[0]), round(x1) - 1, round(bar[1])], fill=segment_colour(relation.subject)
            )
    if tracks:
        draw.text((margin, tracks_top - heading_height), "tracks: visible", fill=(110, 110, 110), font=small)
    for row, track_id in enumerate(tracks):
        top = tracks_top + row * track_height
        parts = labels[len(relations) + row]
        _draw_parts(draw, (margin, top + track_height / 2), _fit_parts(parts, small, label_width - size // 2), small)
        band = (top + track_height * 0.35, top + track_height * 0.65)
        for start, end in _runs([f.frame for f in graph.track(track_id).frames]):
            x0, x1 = x(start), max(x(end + 1), x(start) + 2)
            draw.rectangle([round(x0), round(band[0]), round(x1) - 1, round(band[1])], fill=segment_colour(track_id))
    # The axis.
    draw.line([(left, axis_top), (right, axis_top)], fill=(90, 90, 90))
    for frame, label in ticks:
        draw.line([(x(frame), axis_top), (x(frame), axis_top + size // 3)], fill=(90, 90, 90))
        draw.text((x(frame), axis_top + size // 2), label, fill=(60, 60, 60), font=small, anchor="mt")
    draw.text((right, axis_top + round(size * 1.8)), unit, fill=(110, 110, 110), font=small, anchor="rt")
    return picture


def _title(graph: VideoSceneGraph) -> str:
    name = Path(graph.video.file).name if graph.video.file else "clip"
    rate = _rate(graph)
    span = f", {graph.num_frames / rate:.1f} s at {rate:g} fps" if rate else ""
    return f"{name}: {graph.num_frames} sampled frames{span}, {len(graph.tracks)} tracks"


def _rate(graph: VideoSceneGraph) -> float | None:
    """Sampled frames per second: the sampling rate, or the source's when every frame was taken."""
    return graph.video.sampled_fps or graph.video.fps


def _ticks(graph: VideoSceneGraph, pixels: float) -> tuple[list[tuple[float, str]], str]:
    """Tick positions (in sampled frames) and labels, about one per 90 px, on round values."""
    frames = max(1, graph.num_frames)
    rate = _rate(graph)
    span = frames / rate if rate else frames
    wanted = max(1, int(pixels // 90))
    raw = span / wanted
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if not rate:
        step = max(1, round(step))
    values = [i * step for i in range(int(span // step) + 1)]
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    if rate:
        return [(v * rate, f"{v:.{digits}f}") for v in values], "seconds"
    return [(v, f"{int(v)}") for v in values], "sampled frames"


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    """Consecutive frame numbers as inclusive (start, end) runs."""
    runs: list[tuple[int, int]] = []
    for frame in frames:
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs


def _relation_parts(graph: VideoSceneGraph, relation) -> list[tuple[str, tuple[int, int, int]]]:
    """'dog #3 chasing ball #7 (0.71)' as (text, colour) parts: names in darker track colours,
    readable on white."""
    return [
        (graph.name(relation.subject), segment_colour(relation.subject, brightness=0.55)),
        (f" {relation.predicate} ", (30, 30, 30)),
        (graph.name(relation.object), segment_colour(relation.object, brightness=0.55)),
        (f" ({relation.score:.2f})", (120, 120, 120)),
    ]


def _fit_parts(parts: list[tuple[str, tuple[int, int, int]]], font: ImageFont.FreeTypeFont, width: float) -> list:
    """`parts` cut to `width` pixels, the cut marked with an ellipsis (never a clipped glyph)."""
    fitted, used = [], 0.0
    for index, (text, colour) in enumerate(parts):
        length = font.getlength(text)
        if used + length <= width:
            fitted.append((text, colour))
            used += length
            continue
        room = width - used - font.getlength(_ELLIPSIS)
        cut = len(text)
        while cut > 0 and font.getlength(text[:cut]) > room:
            cut -= 1
        fitted.append((text[:cut].rstrip() + _ELLIPSIS, colour if cut else (120, 120, 120)))
        break
    return fitted


def _draw_parts(draw: ImageDraw.ImageDraw, at: tuple[float, float], parts: list, font: ImageFont.FreeTypeFont) -> None:
    x, y = at
    for text, colour in parts:
        draw.text((x, y), text, fill=colour, font=font, anchor="lm")
        x += font.getlength(text)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """PIL's default font at `size` px, loaded once per size (every frame of a clip asks again)."""
    return ImageFont.load_default(size=size)
