"""The web UI: its logic on the tiny random pipeline, and the real page in a real browser.

The browser test drives Debian's Chromium with Playwright: it uploads a photo, runs relate
anything, clicks on the photo (relate me with anything) and saves a screenshot under
test-artifacts/. It skips, saying why, where Playwright or Chromium is missing.
"""

import inspect
import json
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import RANDOM_WEIGHT_SETTINGS
from relate_anything import RelateAnything, RelateAnythingError, SceneGraph
from relate_anything.image_io import load_image
from relate_anything.naming import Labeler, Vocabulary
from relate_anything.visualize import MARKER_COLOUR

gradio = pytest.importorskip("gradio", reason="the UI needs gradio (pip install -e '.[test]')")

from relate_anything.serving.ui import CLICK_LABEL, CSS, SceneGraphDemo, _painted_example, build_ui, sample_photos  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine has no network: without these, Chromium keeps trying to reach Google's services.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def pipeline(tiny_sam, tiny_ram_pth):
    return RelateAnything.from_pretrained(tiny_sam.folder, tiny_ram_pth, top_k=10, settings=RANDOM_WEIGHT_SETTINGS)


@pytest.fixture(scope="module")
def demo(pipeline, tmp_path_factory):
    return SceneGraphDemo(pipeline, max_relations_shown=5, work_dir=tmp_path_factory.mktemp("ui"))


@pytest.fixture
def dog(dog_jpg):
    return load_image(dog_jpg)


def _count_encodings(pipeline):
    calls: list[int] = []
    handle = pipeline.segmenter.model.vision_encoder.register_forward_hook(lambda m, args, out: calls.append(1))
    return calls, handle


def test_relate_anything_fills_every_part_of_the_page(demo, dog):
    result = demo.relate_anything(dog, 8, file="dog.jpg")
    graph = result.graph
    assert len(graph.relations) == 8 and graph.file == "dog.jpg"
    # The table lists every relation, best first, by the segments' names.
    assert [row[0] for row in result.triplets] == list(range(1, 9))
    assert [row[1:4] for row in result.triplets] == [
        [graph.name(r.subject), r.predicate, graph.name(r.object)] for r in graph.relations
    ]
    # The picture shows the segments of the shown relations, each with its mask and a colour.
    shown = graph.relations[:5]
    involved = sorted({r.subject for r in shown} | {r.object for r in shown})
    assert [name for _, name in result.annotations] == [graph.name(i) for i in involved]
    for mask, name in result.annotations:
        segment_id = int(name.split("#")[1])
        assert np.array_equal(mask, graph.segment(segment_id).decode())
    assert set(result.colours) == {name for _, name in result.annotations}
    # The diagram has a node per involved segment; the download is the graph itself.
    assert result.svg.count('class="segment"') == len(involved)
    assert SceneGraph.load(result.json_path) == graph.without_features()
    assert "8 relations" in result.status


def test_a_click_relates_that_thing_without_encoding_the_photo_again(demo, pipeline, dog):
    demo.pipeline.segmenter.reset_image()
    calls, handle = _count_encodings(pipeline)
    try:
        first = demo.relate_anything(dog, 5)
        clicked = demo.relate_point(dog.copy(), (400, 300), 5)
        again = demo.relate_point(dog, (100, 400), 5)
    finally:
        handle.remove()
    assert calls == [1]  # the photo was encoded once for three requests
    assert "already encoded" not in first.status and "already encoded" in clicked.status
    assert {r.subject for r in clicked.graph.relations} == {r.subject for r in again.graph.relations} == {0}
    # The click's subject is the mask SAM gives for that point (as `run --point`).
    direct = pipeline(dog, point=(400, 300), top_k=5)
    assert clicked.graph.segment(0).mask == direct.segment(0).mask


def test_the_clicked_point_is_marked_on_the_result(demo, dog):
    from relate_anything.visualize import MARKER_COLOUR

    clicked = demo.relate_point(dog, (400, 300), 5)
    assert tuple(clicked.image[300, 400]) == MARKER_COLOUR and not np.array_equal(clicked.image, dog)
    assert np.array_equal(clicked.image[:, :300], dog[:, :300])  # only around the point
    # ... and over the masks, which the page draws nearly opaque: the last annotation, in black.
    mask, name = clicked.annotations[-1]
    assert name == CLICK_LABEL and clicked.colours[CLICK_LABEL] == "#000000"
    assert mask[300, 400] and mask.sum() < 1000 and not mask[:, :300].any()
    plain = demo.relate_anything(dog, 5)
    assert np.array_equal(plain.image, dog) and CLICK_LABEL not in plain.colours  # no click, no marker


def test_clear_messages_for_what_the_visitor_can_fix(demo, dog):
    with pytest.raises(RelateAnythingError, match="upload a photo"):
        demo.relate_anything(None, 5)
    with pytest.raises(RelateAnythingError, match="--labeler or --detector"):
        demo.find(dog, "the dog", 5)
    with pytest.raises(RelateAnythingError, match="--seggpt"):
        demo.by_example(dog, dog, np.ones(dog.shape[:2], bool), 5)
    with pytest.raises(RelateAnythingError, match="outside"):
        demo.relate_point(dog, (5000, 10), 5)


def test_find_by_text_with_a_labeler(pipeline, tiny_clip_folder, dog, tmp_path):
    labeled = RelateAnything(
        pipeline.segmenter,
        pipeline.relation_head,
        labeler=Labeler.from_pretrained(tiny_clip_folder, threshold=0.0),
        vocabulary=Vocabulary.from_names(["dog", "bowl", "floor"]),
    )
    demo = SceneGraphDemo(labeled, work_dir=tmp_path)
    with pytest.raises(RelateAnythingError, match="type what to find"):
        demo.find(dog, "  ", 5)
    result = demo.find(dog, "the dog", 5)
    assert {r.subject for r in result.graph.relations} == {0} and "find 'the dog'" in result.status
    assert all(name.split(" #")[0] in {"dog", "bowl", "floor"} for _, name in result.annotations)


@pytest.mark.slow
def test_segment_by_example_with_seggpt(pipeline, tiny_seggpt_folder, dog, tmp_path):
    from relate_anything.seggpt import ExampleSegmenter

    with_seggpt = RelateAnything(
        pipeline.segmenter,
        pipeline.relation_head,
        example_segmenter=ExampleSegmenter.from_pretrained(tiny_seggpt_folder),
    )
    demo = SceneGraphDemo(with_seggpt, work_dir=tmp_path)
    painted = np.zeros(dog.shape[:2], dtype=bool)
    painted[100:300, 200:500] = True
    with pytest.raises(RelateAnythingError, match="paint the thing"):
        demo.by_example(dog, dog, np.zeros_like(painted), 5)
    with pytest.raises(RelateAnythingError, match="example photo's size"):
        demo.by_example(dog, dog, painted[100:300], 5)
    result = demo.by_example(dog, dog, painted, 5)
    # The same graph as the pipeline's own segment-by-example call.
    expected = with_seggpt(dog, examples=[(dog, painted)], top_k=5)
    assert [s.mask for s in result.graph.segments] == [s.mask for s in expected.segments]
    assert "segment by example" in result.status


def test_painted_example_mask():
    background = np.zeros((4, 5, 3), np.uint8)
    layer = np.zeros((4, 5, 4), np.uint8)
    layer[1:3, 2:4, 3] = 255
    example, mask = _painted_example({"background": background, "layers": [layer], "composite": background})
    assert example.shape == (4, 5, 3) and mask.sum() == 4 and mask[1:3, 2:4].all()
    assert _painted_example(None) == (None, None)
    assert _painted_example({"background": background, "layers": []})[1] is None


def test_samples_ship_with_the_package(images_dir):
    packaged = sample_photos()
    assert [p.name for p in packaged] == ["dog.jpg", "street_bus.jpg"]
    assert all(load_image(p).shape[2] == 3 for p in packaged)
    assert len(sample_photos(images_dir)) == len(packaged) + len(list(images_dir.glob("*.jpg")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_page(demo):
    page = build_ui(demo, samples=sample_photos(), top_k=6)
    port = _free_port()
    queued = page.queue()
    style = {"css": CSS} if "css" in inspect.signature(queued.launch).parameters else {}  # as `relate-anything ui`
    queued.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False, quiet=True, **style
    )
    yield f"http://127.0.0.1:{port}"
    page.close()


def _column(page, index: int) -> list[str]:
    """The texts of one column of the triplet table, top to bottom."""
    return page.eval_on_selector_all(
        f"#triplets [role=gridcell][data-col='{index}']", "cells => cells.map(cell => cell.innerText.trim())"
    )


@pytest.mark.slow
def test_the_page_in_a_real_browser(served_page, dog_jpg):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="browser tests need playwright (pip install -e '.[test]')"
    )
    if CHROMIUM is None:
        pytest.skip("browser tests need Chromium (Debian: apt-get install chromium); .ci/run installs it")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served_page, wait_until="networkidle")
            page.locator("#photo input[type=file]").set_input_files(str(dog_jpg))
            page.wait_for_selector("#photo img", timeout=30_000)
            # Relate anything: the status line, the triplet table and the diagram appear.
            page.click("#relate-anything")
            page.wait_for_function(
                "document.querySelector('#status').innerText.includes('relate anything:')", timeout=120_000
            )
            assert "6 relations" in page.inner_text("#status")
            assert len(_column(page, 0)) == 6
            assert page.locator("#scene-graph svg g.segment").count() >= 2
            _assert_diagram_inside_its_panel(page)
            page.screenshot(path=str(ARTIFACTS / "ui-relate-anything.png"), full_page=True)
            # Relate me with anything: a click at the middle of the photo makes that thing the subject.
            photo = page.locator("#photo img").first.bounding_box()
            page.mouse.click(photo["x"] + photo["width"] / 2, photo["y"] + photo["height"] / 2)
            page.wait_for_function(
                "document.querySelector('#status').innerText.includes('relate the thing at')", timeout=120_000
            )
            status = page.inner_text("#status")
            x, y = (int(v) for v in re.search(r"at \((\d+), (\d+)\)", status).groups())
            assert abs(x - 320) <= 2 and abs(y - 213) <= 2 and "already encoded" in status  # the middle of 640x427
            assert set(_column(page, 1)) == {"#0"}
            _assert_diagram_inside_its_panel(page)
            # The result's photo carries a marker where the click was.
            deadline = time.monotonic() + 30  # the new picture may still be loading

            def marked(pixel) -> bool:  # Gradio serves the picture lossily compressed
                return pixel is not None and max(abs(a - b) for a, b in zip(pixel, MARKER_COLOUR)) <= 12

            while not marked(pixel := page.evaluate(_PIXEL_JS, [x, y])):
                assert time.monotonic() < deadline, f"no marker at the click: {pixel}"
                time.sleep(0.2)
            assert CLICK_LABEL in page.inner_text("#segments")  # its legend entry, over the masks
            page.screenshot(path=str(ARTIFACTS / "ui-relate-me-with-anything.png"), full_page=True)
            with page.expect_download() as download:
                page.click("#download")
            saved = ARTIFACTS / "ui-scene-graph.json"
            download.value.save_as(saved)
            assert json.loads(saved.read_text())["schema"] == "relate-anything/scene-graph/v1"
        finally:
            browser.close()


def _assert_diagram_inside_its_panel(page) -> None:
    """Every label of the graph diagram lies inside the diagram's panel, as drawn by the browser."""
    boxes = page.evaluate(
        """() => {
            const panel = document.querySelector('#scene-graph').getBoundingClientRect();
            const svg = document.querySelector('#scene-graph svg').getBoundingClientRect();
            const texts = [...document.querySelectorAll('#scene-graph svg text')].map(t => {
                const r = t.getBoundingClientRect();
                return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
            });
            return {panel: {left: panel.left, right: panel.right, top: panel.top, bottom: panel.bottom},
                    svg: {left: svg.left, right: svg.right, top: svg.top, bottom: svg.bottom}, texts};
        }"""
    )
    assert boxes["texts"], "the diagram has no labels"
    for area in ("panel", "svg"):
        outside = [
            t["text"]
            for t in boxes["texts"]
            if t["left"] < boxes[area]["left"] - 0.5
            or t["right"] > boxes[area]["right"] + 0.5
            or t["top"] < boxes[area]["top"] - 0.5
            or t["bottom"] > boxes[area]["bottom"] + 0.5
        ]
        assert not outside, (area, outside, boxes[area])


# The colour at (x, y), in the photo's own pixels, of the base image of the result picture
# (Gradio's AnnotatedImage draws the photo, then each mask as its own image on top).
_PIXEL_JS = """
async ([x, y]) => {
    const img = document.querySelector('#segments img');
    if (!img || !img.complete || !img.naturalWidth) return null;
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    return Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3));
}
"""


def _clip(folder, fps: float):
    from relate_anything.datasets.synthetic_video import synthetic_video
    from relate_anything.video.io import write_video

    _, frames = synthetic_video(np.random.default_rng(2), frames=4, size=(96, 64))
    return write_video(folder / "clip.mp4", frames, fps=fps, lossless=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 frames at 5 fps: all of them at the page's default sampling rate."""
    return _clip(tmp_path_factory.mktemp("clip"), fps=5)


def test_the_video_tab_relates_a_clip(demo, tmp_path):
    clip = _clip(tmp_path, fps=10)  # every frame taken (fps 0): the annotated clip keeps 10 fps
    import av

    from relate_anything import VideoSceneGraph

    result = demo.relate_video(str(clip), 5, fps=0)
    graph = VideoSceneGraph.load(result.json_path)
    assert graph.to_dict() == result.graph.to_dict() and graph.num_frames == 4
    assert len(result.triplets) == len(graph.relations) <= 5
    for row, relation in zip(result.triplets, graph.relations):
        assert row[2] == relation.predicate and row[5] == ", ".join(f"{a}-{b}" for a, b in relation.intervals)
    with av.open(str(result.video_path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
        assert container.streams.video[0].average_rate == 10  # every frame taken: the clip's own rate
    assert result.timeline_path.stat().st_size > 0 and "4 frames" in result.status
    with pytest.raises(RelateAnythingError, match="upload a clip"):
        demo.relate_video(None, 5)
    short = SceneGraphDemo(demo.pipeline, work_dir=demo.work_dir, max_video_seconds=0.1)
    with pytest.raises(RelateAnythingError, match="up to 0.1 s"):
        short.relate_video(str(clip), 5)


@pytest.mark.slow
def test_the_video_tab_in_a_real_browser(served_page, clip):
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")
    if CHROMIUM is None:
        pytest.skip("browser tests need Chromium (Debian: apt-get install chromium); .ci/run installs it")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served_page, wait_until="networkidle")
            page.get_by_role("tab", name="Video").click()
            page.locator("#clip input[type=file]").set_input_files(str(clip))
            page.wait_for_selector("#clip video", timeout=30_000)
            page.click("#relate-video")
            page.wait_for_function(
                "document.querySelector('#video-status').innerText.includes('relate the clip:')", timeout=180_000
            )
            status = page.inner_text("#video-status")
            assert "4 frames" in status
            rows = page.eval_on_selector_all(
                "#video-triplets [role=gridcell][data-col='0']", "cells => cells.map(cell => cell.innerText.trim())"
            )
            relations = int(status.split(" relations")[0].rsplit(" ", 1)[-1])
            assert len(rows) == relations
            page.wait_for_selector("#timeline img", timeout=30_000)
            page.wait_for_selector("#video-result video", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "ui-video.png"), full_page=True)
        finally:
            browser.close()
