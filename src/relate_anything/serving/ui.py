"""The web UI: one page where a photo becomes a scene graph, in the modes of RAM's demo and more.

- relate anything: segment everything, show the top-k triplets over all pairs;
- relate me with anything: click on the photo, the thing under the click is the subject;
- find by text: a phrase names the subject (needs a labeler or a detector);
- segment by example: paint the thing on an example photo; SegGPT adds segments like it.

Every mode shows the same result: the photo with the segments that take part in the relations
(named, coloured as in the graph), the ranked triplets, the graph as a node-link diagram, and the
`SceneGraph` JSON to download.

`SceneGraphDemo` is the page's logic (tested directly); `build_ui` lays it out with Gradio.
The model is loaded once and shared by every visitor; calls are serialised because SAM's
predictor holds one photo at a time. Recent photos' embeddings are cached, and so are their
"segment everything" results, so a second click on the same photo only decodes its prompt.
"""

from __future__ import annotations

import functools
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from relate_anything.errors import RelateAnythingError
from relate_anything.image_io import load_image
from relate_anything.pipeline import RelateAnything
from relate_anything.samples import sample_photos
from relate_anything.scene_graph import SceneGraph
from relate_anything.video_scene_graph import VideoSceneGraph
from relate_anything.visualize import draw_point_marker, graph_svg, point_marker_mask, segment_hex_colour

__all__ = ["CSS", "PageResult", "SceneGraphDemo", "VideoPageResult", "build_ui", "sample_photos"]

# Photos whose embeddings stay cached: a visitor going back and forth between a few photos
# never waits for the encoder twice (4 MiB each for ViT-H in float32).
EMBEDDING_CACHE_SIZE = 8
TRIPLET_HEADERS = ["rank", "subject", "predicate", "object", "score"]
#: The clicked point's annotation in the result picture: black reads on every segment colour.
CLICK_LABEL = "clicked point"
CLICK_COLOUR = "#000000"


@dataclass(frozen=True)
class PageResult:
    """Everything the page shows for one request.

    Attributes:
        image: the photo, RGB uint8 [H, W, 3], with a marker where the visitor clicked (if so).
        graph: the scene graph.
        annotations: (mask [H, W] bool, name) of the segments taking part in the shown relations,
            then the clicked point's marker (CLICK_LABEL) if there was a click.
        colours: name -> "#rrggbb", the colours of those segments (the graph diagram's too).
        triplets: rows of TRIPLET_HEADERS, best first.
        svg: the graph as an SVG node-link diagram.
        json_path: the graph's JSON, written for download.
        status: one line on what was done and how long it took.
    """

    image: np.ndarray
    graph: SceneGraph
    annotations: list[tuple[np.ndarray, str]]
    colours: dict[str, str]
    triplets: list[list[Any]]
    svg: str
    json_path: Path
    status: str


class SceneGraphDemo:
    """The page's actions on a shared pipeline, safe to call from several threads.

    Args:
        pipeline: the loaded pipeline (its labeler, detector and example segmenter, when present,
            enable naming, find by text and segment by example).
        max_relations_shown: triplets drawn in the picture and the diagram (the table and the JSON
            keep all top-k).
        work_dir: where the JSON downloads are written (default: a new temporary folder).
        max_video_seconds: longest clip the video tab takes (a clip takes the model for seconds
            a frame on a CPU).
    """

    def __init__(
        self,
        pipeline: RelateAnything,
        *,
        max_relations_shown: int = 20,
        work_dir: str | Path | None = None,
        max_video_seconds: float = 30.0,
    ) -> None:
        self.pipeline = pipeline
        self.max_relations_shown = max_relations_shown
        self.max_video_seconds = max_video_seconds
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="relate-anything-ui-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._requests = 0

    @property
    def can_find(self) -> bool:
        return self.pipeline.labeler is not None or self.pipeline.detector is not None

    @property
    def can_segment_by_example(self) -> bool:
        return self.pipeline.example_segmenter is not None

    def relate_anything(self, image: np.ndarray | None, top_k: int, *, file: str | None = None) -> PageResult:
        """The top-k triplets over all pairs of segments."""
        return self._run(image, top_k, file=file, mode="relate anything")

    def relate_point(
        self,
        image: np.ndarray | None,
        point: Sequence[float],
        top_k: int,
        *,
        multimask: bool = False,
        file: str | None = None,
    ) -> PageResult:
        """The top-k triplets whose subject is the thing at `point` (x, y in image pixels); with
        `multimask`, the best of SAM's 3 candidate masks is the subject (see `RelateAnything`)."""
        mode = f"relate the thing at ({point[0]:.0f}, {point[1]:.0f})"
        return self._run(image, top_k, file=file, mode=mode, point=tuple(point), multimask=multimask)

    def find(self, image: np.ndarray | None, phrase: str, top_k: int, *, file: str | None = None) -> PageResult:
        """The top-k triplets whose subject is the thing that `phrase` describes best."""
        if not self.can_find:
            raise RelateAnythingError(
                "find by text needs a labeler or a detector: start the UI with --labeler or --detector"
            )
        phrase = (phrase or "").strip()
        if not phrase:
            raise RelateAnythingError("type what to find, e.g. 'the dog'")
        return self._run(image, top_k, file=file, mode=f"find {phrase!r}", find=phrase)

    def by_example(
        self,
        image: np.ndarray | None,
        example: np.ndarray | None,
        example_mask: np.ndarray | None,
        top_k: int,
        *,
        file: str | None = None,
    ) -> PageResult:
        """The top-k triplets with SegGPT's segments of things like the masked one in `example`."""
        if not self.can_segment_by_example:
            raise RelateAnythingError("segment by example needs SegGPT: start the UI with --seggpt")
        if example is None or example_mask is None or not np.asarray(example_mask).any():
            raise RelateAnythingError("upload an example photo and paint the thing on it")
        example = load_image(example)
        if np.asarray(example_mask).shape[:2] != example.shape[:2]:
            raise RelateAnythingError("the painted mask must have the example photo's size")
        return self._run(
            image,
            top_k,
            file=file,
            mode="segment by example",
            examples=[(example, np.asarray(example_mask, dtype=bool))],
        )

    def relate_video(self, clip: str | Path | None, top_k: int, *, fps: float = 5.0) -> VideoPageResult:
        """A clip's tracks and relations over time (the `iou` tracker), with its annotated video,
        timeline, relation table and JSON; clips longer than `max_video_seconds` are refused."""
        from relate_anything.video.draw import draw_timeline, write_annotated_video
        from relate_anything.video.io import SamplingSettings, open_video
        from relate_anything.video.pipeline import VideoRequest

        if clip is None:
            raise RelateAnythingError("upload a clip first")
        sampling = SamplingSettings(fps=fps or None)
        reader = open_video(clip, settings=sampling)
        if reader.duration is not None and reader.duration > self.max_video_seconds:
            raise RelateAnythingError(
                f"the clip lasts {reader.duration:.1f} s; this page takes clips of up to {self.max_video_seconds:g} s"
            )
        with self._lock:
            started = time.perf_counter()
            graph = self.pipeline.video(reader, VideoRequest(sampling=sampling, top_k=int(top_k)))
            seconds = time.perf_counter() - started
            self._requests += 1
            stem = f"{Path(clip).stem}-{self._requests}"
        json_path, video_path, timeline_path = (
            self.work_dir / f"{stem}{suffix}" for suffix in (".json", ".mp4", ".png")
        )
        graph.save(json_path)
        draw_timeline(graph).save(timeline_path)
        # The clip's own rate when every frame was taken (fps 0), not a slow-motion 5 fps.
        frames = (frame.pixels for frame in reader)
        write_annotated_video(video_path, islice(frames, graph.num_frames), graph)
        triplets = [
            [rank + 1, graph.name(r.subject), r.predicate, graph.name(r.object), round(r.score, 3),
             ", ".join(f"{a}-{b}" for a, b in r.intervals)]
            for rank, r in enumerate(graph.relations)
        ]  # fmt: skip
        status = (
            f"relate the clip: {graph.num_frames} frames, {len(graph.tracks)} tracks, {len(graph.relations)} relations "
            f"in {seconds:.1f} s"
        )
        return VideoPageResult(graph, video_path, timeline_path, triplets, json_path, status)

    def _run(self, image: np.ndarray | None, top_k: int, *, file: str | None, mode: str, **prompts: Any) -> PageResult:
        if image is None:
            raise RelateAnythingError("upload a photo or pick a sample first")
        pixels = load_image(image)
        with self._lock:
            cached = self.pipeline.segmenter.has_embedding(pixels)
            started = time.perf_counter()
            graph = self.pipeline(pixels, top_k=int(top_k), file=file, **prompts)
            seconds = time.perf_counter() - started
            self._requests += 1
            json_path = self.work_dir / f"{Path(file or 'photo').stem}-{self._requests}.json"
        graph.save(json_path, features=False)
        status = f"{mode}: {len(graph.segments)} segments, {len(graph.relations)} relations in {seconds:.2f} s" + (
            " (photo already encoded)" if cached else ""
        )
        return self._page(pixels, graph, json_path, status, point=prompts.get("point"))

    def _page(self, pixels: np.ndarray, graph: SceneGraph, json_path: Path, status: str, *, point=None) -> PageResult:
        shown = graph.relations[: self.max_relations_shown]
        involved = sorted({r.subject for r in shown} | {r.object for r in shown})
        masks = graph.masks()
        index = {segment.id: i for i, segment in enumerate(graph.segments)}
        annotations = [(masks[index[i]], graph.name(i)) for i in involved]
        colours = {graph.name(i): segment_hex_colour(i) for i in involved}
        triplets = [
            [rank + 1, graph.name(r.subject), r.predicate, graph.name(r.object), round(r.score, 3)]
            for rank, r in enumerate(graph.relations)
        ]
        svg = graph_svg(graph, max_relations=self.max_relations_shown)
        # The clicked point is marked on the result's picture, never on the input (a changed
        # input would be a new photo to encode at the next click): on the photo, and as the top
        # annotation, since the page draws the masks nearly opaque over the photo.
        shown_photo = pixels
        if point is not None:
            shown_photo = draw_point_marker(pixels, point)
            annotations.append((point_marker_mask(graph.height, graph.width, point), CLICK_LABEL))
            colours[CLICK_LABEL] = CLICK_COLOUR
        return PageResult(shown_photo, graph, annotations, colours, triplets, svg, json_path, status)


@dataclass(frozen=True)
class VideoPageResult:
    """What the video tab shows for one clip.

    Attributes:
        graph: the clip's `VideoSceneGraph`.
        video_path: the clip with its tracks and current relations drawn (H.264 MP4).
        timeline_path: the top relations over time (PNG).
        triplets: rows of VIDEO_TRIPLET_HEADERS, best first.
        json_path: the graph's JSON, written for download.
        status: one line on what was done and how long it took.
    """

    graph: VideoSceneGraph
    video_path: Path
    timeline_path: Path
    triplets: list[list[Any]]
    json_path: Path
    status: str


VIDEO_TRIPLET_HEADERS = ["rank", "subject", "predicate", "object", "score", "frames"]


#: The page's style sheet (Gradio takes it at launch: `page.launch(css=CSS)`).
CSS = """
#scene-graph svg { display: block; margin: auto; }
#status { min-height: 1.5em; }
"""


def build_ui(demo: SceneGraphDemo, *, samples: Sequence[Path] = (), top_k: int = 20):
    """The Gradio page for `demo` (a `gradio.Blocks`; call `.launch()` on it)."""

    def result_outputs(result: PageResult) -> tuple:
        picture = gr.AnnotatedImage(value=(result.image, result.annotations), color_map=result.colours)
        download = gr.DownloadButton(value=str(result.json_path), visible=True)
        # The diagram keeps inside its panel whatever the page's width (it scales down, never spills).
        diagram = f'<div class="diagram" style="overflow: hidden; max-width: 100%">{result.svg}</div>'
        return picture, result.triplets, diagram, download, result.status

    def guarded(action):
        """Run a page action; a problem the visitor can fix becomes a message, not a traceback."""

        # wraps: Gradio reads the signature to pass the click (gr.SelectData) to on_click.
        @functools.wraps(action)
        def run(*args, **kwargs):
            try:
                return action(*args, **kwargs)
            except RelateAnythingError as error:
                raise gr.Error(str(error)) from None

        return run

    @guarded
    def on_relate(image, k):
        return result_outputs(demo.relate_anything(image, k))

    @guarded
    def on_click(image, k, multimask, event: gr.SelectData):
        x, y = event.index
        return result_outputs(demo.relate_point(image, (x, y), k, multimask=multimask))

    @guarded
    def on_find(image, phrase, k):
        return result_outputs(demo.find(image, phrase, k))

    @guarded
    def on_example(image, editor, k):
        example, mask = _painted_example(editor)
        return result_outputs(demo.by_example(image, example, mask, k))

    @guarded
    def on_video(clip, k, fps):
        result = demo.relate_video(clip, k, fps=fps)
        download = gr.DownloadButton(value=str(result.json_path), visible=True)
        return str(result.video_path), str(result.timeline_path), result.triplets, download, result.status

    with gr.Blocks(title="relate-anything", analytics_enabled=False) as page:
        gr.Markdown(
            "## relate-anything\n"
            "Upload a photo (or pick a sample), then **relate anything**, or **click on the photo** to relate "
            "that thing with everything else."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                photo = gr.Image(
                    label="Photo (click on it: relate that thing with everything)",
                    type="numpy",
                    sources=["upload", "clipboard"],
                    elem_id="photo",
                )
                if samples:
                    gr.Examples(examples=[[str(p)] for p in samples], inputs=[photo], label="Samples")
                k = gr.Slider(1, 100, value=top_k, step=1, label="Relations to show (top-k)", elem_id="top-k")
                with gr.Tabs():
                    with gr.Tab("Relate anything", id="relate"):
                        relate_button = gr.Button("Relate anything", variant="primary", elem_id="relate-anything")
                    with gr.Tab("Relate me with anything", id="click"):
                        gr.Markdown("Click on a thing in the photo: it becomes the subject of every relation.")
                        multimask = gr.Checkbox(
                            False,
                            label="Best of SAM's 3 masks (RAM's demo uses SAM's single mask)",
                            elem_id="multimask",
                        )
                    with gr.Tab("Find by text", id="find"):
                        phrase = gr.Textbox(label="What to find", placeholder="the dog", interactive=demo.can_find)
                        find_button = gr.Button("Find and relate", interactive=demo.can_find, elem_id="find")
                        if not demo.can_find:
                            gr.Markdown("Start the UI with `--labeler` or `--detector` to find things by text.")
                    with gr.Tab("Segment by example", id="example"):
                        editor = gr.ImageEditor(
                            label="Example photo: paint the thing",
                            type="numpy",
                            interactive=demo.can_segment_by_example,
                        )
                        example_button = gr.Button(
                            "Segment like this and relate", interactive=demo.can_segment_by_example
                        )
                        if not demo.can_segment_by_example:
                            gr.Markdown("Start the UI with `--seggpt` to segment by example.")
            with gr.Column(scale=1):
                status = gr.Markdown(elem_id="status")
                picture = gr.AnnotatedImage(label="Segments in the top relations", elem_id="segments")
                graph = gr.HTML(label="Scene graph", elem_id="scene-graph")
                download = gr.DownloadButton("Download the scene graph (JSON)", visible=False, elem_id="download")
        triplets = gr.Dataframe(
            headers=TRIPLET_HEADERS, label="Relations, best first", interactive=False, elem_id="triplets", wrap=True
        )
        with gr.Tabs():
            with gr.Tab("Video", id="video"):
                gr.Markdown(
                    f"Upload a short clip (up to {demo.max_video_seconds:g} s): every thing is tracked through it and "
                    "the relations come with the frames where they hold."
                )
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        clip = gr.Video(label="Clip", sources=["upload"], elem_id="clip")
                        fps = gr.Slider(
                            0, 10, value=5, step=1, label="Frames sampled per second (0: all)", elem_id="fps"
                        )
                        video_button = gr.Button("Relate the clip", variant="primary", elem_id="relate-video")
                    with gr.Column(scale=1):
                        video_status = gr.Markdown(elem_id="video-status")
                        annotated = gr.Video(label="Tracks and relations", elem_id="video-result", interactive=False)
                        timeline = gr.Image(label="Relations over time", elem_id="timeline", interactive=False)
                        video_download = gr.DownloadButton(
                            "Download the video scene graph (JSON)", visible=False, elem_id="video-download"
                        )
                video_triplets = gr.Dataframe(
                    headers=VIDEO_TRIPLET_HEADERS,
                    label="Relations over time, best first (frames: sampled-frame intervals)",
                    interactive=False,
                    elem_id="video-triplets",
                    wrap=True,
                )
        outputs = [picture, triplets, graph, download, status]
        # One model, one photo at a time: every action queues for the same slot.
        shared = {"concurrency_id": "model", "concurrency_limit": 1}
        relate_button.click(on_relate, [photo, k], outputs, **shared)
        photo.select(on_click, [photo, k, multimask], outputs, **shared)
        find_button.click(on_find, [photo, phrase, k], outputs, **shared)
        example_button.click(on_example, [photo, editor, k], outputs, **shared)
        video_outputs = [annotated, timeline, video_triplets, video_download, video_status]
        video_button.click(on_video, [clip, k, fps], video_outputs, **shared)
    return page


def _painted_example(editor: dict | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(example photo, painted mask) from an ImageEditor value: the mask is what any layer covers."""
    if not editor or editor.get("background") is None:
        return None, None
    background = np.asarray(editor["background"])
    layers = [np.asarray(layer) for layer in editor.get("layers") or [] if layer is not None]
    if not layers:
        return background[..., :3], None
    mask = np.zeros(background.shape[:2], dtype=bool)
    for layer in layers:
        mask |= (
            layer[..., 3] > 0
            if layer.ndim == 3 and layer.shape[2] == 4
            else layer.reshape(*layer.shape[:2], -1).any(-1)
        )
    return background[..., :3], mask
