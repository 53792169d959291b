"""Pictures of video scene graphs: annotated frames and clips, the timeline."""

import av
import numpy as np
import pytest

from relate_anything import psg
from relate_anything.scene_graph import encode_masks
from relate_anything.video.draw import _fit_parts, annotate_frame, draw_timeline, write_annotated_video
from relate_anything.video.io import VideoError
from relate_anything.video_scene_graph import Track, TrackFrame, VideoInfo, VideoRelation, VideoSceneGraph
from relate_anything.visualize import segment_colour

GREY = 128


def synthetic_clip(frames=30, height=90, width=160, *, labels=("person", "dog", "ball", "grass"), fps=5.0):
    """A grey clip where a person stands, a dog runs right after a ball, on a strip of grass.

    Returns (frames [T, H, W, 3] uint8, graph): track ids 1-4; the ball leaves the picture after
    frame 24, the dog is hidden (occluded) on frames 12-13.
    """
    pixels = np.full((frames, height, width, 3), GREY, np.uint8)
    masks = np.zeros((4, frames, height, width), bool)
    masks[3, :, int(height * 0.75) :, :] = True  # grass
    for t in range(frames):
        masks[0, t, height // 6 : int(height * 0.75), width // 10 : width // 10 + width // 8] = True  # person
        dog_x = width // 4 + t * width // (2 * frames)
        if t not in (12, 13):
            masks[1, t, height // 2 : int(height * 0.75), dog_x : dog_x + width // 6] = True
        ball_x = dog_x + width // 5 + t * 2
        if t <= 24 and ball_x + width // 16 < width:
            masks[2, t, int(height * 0.6) : int(height * 0.7), ball_x : ball_x + width // 16] = True
    masks[3] &= ~(masks[0] | masks[1] | masks[2])
    tracks = []
    for index, label in enumerate(labels):
        items = []
        for t in range(frames):
            if masks[index, t].any():
                ys, xs = np.nonzero(masks[index, t])
                rle = encode_masks(masks[index, t][None])[0]
                bbox = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
                items.append(TrackFrame(t, rle, bbox, int(masks[index, t].sum()), 0.9))
        tracks.append(Track(id=index + 1, frames=tuple(items), score=0.9, label=label))
    names = psg.predicates()

    def relation(subject, predicate, object_, score, intervals):
        intervals = tuple((a, min(b, frames - 1)) for a, b in intervals if a < frames)  # short clips
        return VideoRelation(subject, predicate, names.index(predicate), object_, score, intervals)

    relations = [
        relation(2, "chasing", 3, 0.71, ((2, 11), (14, 24))),
        relation(1, "looking at", 2, 0.64, ((0, 17),)),
        relation(1, "standing on", 4, 0.58, ((0, frames - 1),)),
        relation(2, "running on", 4, 0.52, ((5, 9), (20, 22))),
    ]
    info = VideoInfo(width=width, height=height, frame_index=tuple(range(0, 6 * frames, 6)), fps=30.0, sampled_fps=fps)
    return pixels, VideoSceneGraph(video=info, tracks=tracks, relations=relations, predicates=names), masks


def _tint(colour, alpha):
    """Grey tinted with `colour` at `alpha`, as RGB ints."""
    return np.round(GREY * (1 - alpha) + np.array(colour) * alpha).astype(int)


def test_annotated_frame_tints_each_track_in_its_colour_and_leaves_the_rest():
    frames, graph, masks = synthetic_clip(height=180, width=320)
    t = 5
    picture = annotate_frame(frames[t], graph, t)
    assert picture.shape == frames[t].shape and picture.dtype == np.uint8
    # Every track takes part in a relation at t = 5: outlined in its colour, and tinted towards
    # it inside (its lower right corner, clear of the names written at mask centres).
    for index in range(4):
        ys, xs = np.nonzero(masks[index, t])
        assert tuple(picture[ys.max() - 1, xs.max() - 1]) == segment_colour(index + 1)
        if index == 2:
            continue  # the ball is too small to be clear of its name
        pixel = (ys.max() - 6, xs.max() - 6)
        assert np.abs(picture[pixel].astype(int) - _tint(segment_colour(index + 1), 0.55)).max() <= 1
    # At t = 26 the ball is gone and no relation involves the dog: a faint tint, no outline.
    later = annotate_frame(frames[26], graph, 26)
    ys, xs = np.nonzero(masks[1, 26])
    for pixel in [(ys.max() - 6, xs.max() - 6), (ys.max() - 1, xs.max() - 1)]:
        assert np.abs(later[pixel].astype(int) - _tint(segment_colour(2), 0.35)).max() <= 1
    # Where no track is: grey, or neutral text (names, the frame stamp), or the relation box.
    background = ~masks[:, t].any(axis=0)
    dark = np.argwhere(picture.max(axis=2) < 80)  # the box: grey under 60 % black
    background[: dark[:, 0].max() + 1, : dark[:, 1].max() + 1] = False
    pixels = picture[background].astype(int)
    assert (pixels[:, 0] == pixels[:, 1]).all() and (pixels[:, 1] == pixels[:, 2]).all()
    assert (pixels == GREY).all(axis=1).mean() > 0.9


def test_only_relations_holding_at_t_are_listed():
    frames, graph, _ = synthetic_clip()
    # At frame 12 the dog is hidden: "chasing" does not hold, its text is not drawn; the top-left
    # box then holds 2 lines, fewer than at frame 5 (4 lines).
    box_rows = []
    for t in (5, 12):
        picture = annotate_frame(frames[t], graph, t).astype(int)
        dark = (picture[:, :, :].max(axis=2) < 90).any(axis=1)  # the translucent black box
        box_rows.append(int(dark[:60].sum()))
    assert box_rows[0] > box_rows[1] > 0


def test_annotated_frame_of_a_frame_without_tracks_is_the_frame_with_a_stamp():
    frames, graph, _ = synthetic_clip()
    empty = VideoSceneGraph(video=graph.video, tracks=[], relations=[], predicates=graph.predicates)
    picture = annotate_frame(frames[0], empty, 0)
    assert (picture[:60] == GREY).all()  # nothing but the stamp at the bottom
    with pytest.raises(ValueError, match="image is"):
        annotate_frame(frames[0][:50], graph, 0)


def test_annotated_video_decodes_to_the_frames_and_size(tmp_path):
    frames, graph, _ = synthetic_clip(frames=12, height=45, width=81)  # odd sizes
    path = write_annotated_video(tmp_path / "clip.mp4", iter(frames), graph)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == 5.0
    assert len(decoded) == 12 and decoded[0].shape == (46, 82, 3)  # padded to even by one row/column
    expected = annotate_frame(frames[3], graph, 3).astype(int)
    assert np.abs(decoded[3][:45, :81].astype(int) - expected).mean() < 6  # lossy, but the same picture
    with pytest.raises(VideoError, match="11 frames given for a graph of 12"):
        write_annotated_video(tmp_path / "short.mp4", frames[:11], graph)
    with pytest.raises(VideoError, match="more frames than the graph's 12"):
        write_annotated_video(tmp_path / "long.mp4", list(frames) + [frames[0]], graph)
    assert not (tmp_path / "short.mp4").exists() and not (tmp_path / "long.mp4").exists()


def _bar_columns(picture, row_band, colour):
    """Columns in a band of rows where the exact `colour` fills the middle row."""
    middle = (row_band[0] + row_band[1]) // 2
    return np.flatnonzero((picture[middle] == colour).all(axis=1))


def _row_of(picture, colour, after=0):
    """The first band of rows (start, end) at or below `after` holding `colour`."""
    rows = np.flatnonzero((picture == colour).all(axis=2).any(axis=1))
    rows = rows[rows >= after]
    end = rows[0]
    while end + 1 in rows:
        end += 1
    return rows[0], end


def test_timeline_bars_cover_the_intervals():
    _, graph, _ = synthetic_clip(frames=30)
    names = psg.predicates()
    # Person standing on grass holds over all 30 frames: its bar spans the plot; the others are
    # placed proportionally.
    picture = np.asarray(draw_timeline(graph))
    assert picture.shape[1] == 1200
    person, dog = np.array(segment_colour(1)), np.array(segment_colour(2))
    band = _row_of(picture, dog)  # the first relation row: dog chasing ball (bars in the dog's colour)
    chasing = _bar_columns(picture, band, dog)
    looking = _bar_columns(picture, _row_of(picture, person), person)  # person looking at dog: 0-17
    standing = _bar_columns(picture, _row_of(picture, person, after=_row_of(picture, person)[1] + 1), person)
    left, right = standing.min(), standing.max() + 1
    per_frame = (right - left) / 30

    def span(start, end):
        return left + start * per_frame, left + (end + 1) * per_frame

    assert looking.min() == pytest.approx(span(0, 17)[0], abs=1.5) and looking.max() + 1 == pytest.approx(
        span(0, 17)[1], abs=1.5
    )
    # Two bars for (2-11) and (14-24), a gap between them.
    pieces = np.split(chasing, np.flatnonzero(np.diff(chasing) > 1) + 1)
    assert len(pieces) == 2
    for piece, (start, end) in zip(pieces, [(2, 11), (14, 24)]):
        assert piece.min() == pytest.approx(span(start, end)[0], abs=1.5)
        assert piece.max() + 1 == pytest.approx(span(start, end)[1], abs=1.5)
    assert graph.relations[0].predicate == "chasing" and names.index("chasing") == graph.relations[0].predicate_id


def test_timeline_shows_where_tracks_are_visible():
    _, graph, _ = synthetic_clip(frames=30)
    picture = np.asarray(draw_timeline(graph))
    dog = np.array(segment_colour(2))
    rows = np.flatnonzero((picture == dog).all(axis=2).any(axis=1))
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    track_band = bands[-1]  # the dog's visibility row comes after the relation rows
    columns = _bar_columns(picture, (track_band[0], track_band[-1]), dog)
    pieces = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    assert len(pieces) == 2  # hidden on frames 12-13
    assert (pieces[1].min() - pieces[0].max()) == pytest.approx(2 * (columns.max() - columns.min()) / 30, abs=2)


def test_timeline_of_an_empty_graph_and_top_k():
    _, graph, _ = synthetic_clip()
    empty = VideoSceneGraph(video=graph.video, tracks=[], relations=[], predicates=graph.predicates)
    picture = draw_timeline(empty)
    assert picture.width == 1200 and 60 < picture.height < 300
    one = np.asarray(draw_timeline(graph, top_k=1))
    four = np.asarray(draw_timeline(graph, top_k=4))
    assert one.shape[0] < four.shape[0]
    assert not (one == np.array(segment_colour(1))).all(axis=2).any()  # the person takes no part in #1
    assert draw_timeline(graph, width=600).width == 600


def test_long_labels_are_cut_with_an_ellipsis_not_clipped():
    from PIL import ImageFont

    font = ImageFont.load_default(size=14)
    parts = [("a very long track name " * 5, (0, 0, 0)), (" chasing ", (1, 1, 1)), ("ball #7", (2, 2, 2))]
    fitted = _fit_parts(parts, font, 200)
    assert len(fitted) == 1 and fitted[0][0].endswith("\u2026")
    assert sum(font.getlength(text) for text, _ in fitted) <= 200
    assert _fit_parts(parts[1:], font, 500) == parts[1:]
    _, graph, _ = synthetic_clip(labels=("person " * 30, "dog", "ball", "grass"))
    picture = np.asarray(draw_timeline(graph))  # draws; the long name stays in its column
    person = np.array(segment_colour(1))
    band = _row_of(picture, person)
    assert _bar_columns(picture, band, person).min() > 1200 * 0.45
