"""The REST API's video jobs: POST /v1/video-scene-graph (202 and a job id), GET /v1/jobs/{id}."""

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import RANDOM_WEIGHT_SETTINGS
from relate_anything import RelateAnything, VideoSceneGraph
from relate_anything.datasets.synthetic_video import synthetic_video
from relate_anything.serving.api import create_app
from relate_anything.video.io import write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    _, frames = synthetic_video(np.random.default_rng(4), frames=6, size=(96, 64))
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=5, lossless=True)


@pytest.fixture(scope="module")
def client(small_sam, tiny_ram_pth):
    pipeline = RelateAnything.from_pretrained(small_sam, tiny_ram_pth, settings=RANDOM_WEIGHT_SETTINGS)
    app = create_app(pipeline, max_video_bytes=1 << 20, max_video_seconds=30, max_pixels=100_000)
    with TestClient(app) as client:
        yield client


def _post(client, path, **fields):
    with open(path, "rb") as handle:
        files = {"video": (path.name, handle.read(), "video/mp4")}
    return client.post("/v1/video-scene-graph", files=files, data={key: str(value) for key, value in fields.items()})


def _wait(client, url, timeout=240.0):
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(url).json()
        if status["status"] in ("done", "failed"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def test_a_clip_is_a_job_whose_result_is_its_video_scene_graph(client, clip):
    response = _post(client, clip, fps=0, top_k=3)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and response.headers["location"] == accepted["url"]
    status = _wait(client, accepted["url"])
    assert status["status"] == "done", status
    graph = VideoSceneGraph.from_dict(status["result"])
    assert graph.num_frames == 6 and graph.video.file == "clip.mp4" and len(graph.relations) <= 3
    assert list(client.app.state.jobs.directory.iterdir()) == []  # the clip is deleted once it has run
    assert client.get("/v1/jobs/nope").status_code == 404


@pytest.mark.parametrize(
    "fields, status, message",
    [
        ({"tracker": "magic"}, 422, "tracker must be one of"),
        ({"topk": 3}, 422, "unknown form field 'topk' (did you mean 'top_k'?)"),
        ({"start": 3, "end": 1}, 422, "before end"),
        ({"point": "500,1"}, 422, "outside the 96x64"),
        ({"tracker": "sam2"}, 202, None),  # accepted; the job fails: this server has no SAM 2
    ],
)
def test_bad_fields(client, clip, fields, status, message):
    response = _post(client, clip, **fields)
    assert response.status_code == status, response.text
    if message:
        assert message in response.json()["detail"]
    else:
        failed = _wait(client, response.json()["url"])
        assert failed["status"] == "failed" and "SAM 2" in failed["detail"]


def test_limits_and_not_a_video(client, clip, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    response = _post(client, notes)
    assert response.status_code == 415 and "cannot be read as a video" in response.json()["detail"]
    big = tmp_path / "big.mp4"
    big.write_bytes(clip.read_bytes() + b"\0" * (1 << 20))
    response = _post(client, big)
    assert response.status_code == 413 and "limit for a clip" in response.json()["detail"]
    _, frames = synthetic_video(np.random.default_rng(5), frames=3, size=(512, 256))
    wide = write_video(tmp_path / "wide.mp4", frames, fps=5)
    response = _post(client, wide)
    assert response.status_code == 413 and "over the limit of 100000" in response.json()["detail"]
    long_clip = write_video(tmp_path / "long.mp4", [np.zeros((16, 16, 3), np.uint8)] * 200, fps=5)  # 40 s
    response = _post(client, long_clip)
    assert response.status_code == 413 and "over the limit of 30 s" in response.json()["detail"]


def test_the_known_fields_are_the_handlers(client):
    from relate_anything.serving.video_api import VIDEO_FORM_FIELDS

    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/video-scene-graph"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    properties = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]
    assert set(properties) == set(VIDEO_FORM_FIELDS)
    assert "/v1/jobs/{job_id}" in schema["paths"]


def test_a_clip_larger_than_the_photo_limit_is_taken_up_to_the_clip_limit(small_sam, tiny_ram_pth, tmp_path):
    """--max-upload-mb limits photos, --max-video-mb clips: a clip over the first is not refused."""
    _, frames = synthetic_video(np.random.default_rng(4), frames=6, size=(320, 240))
    clip = write_video(tmp_path / "clip.mp4", frames, fps=5, lossless=True)
    size = clip.stat().st_size  # ~190 KB, over the photo limit below and its 64 KiB of form overhead
    pipeline = RelateAnything.from_pretrained(small_sam, tiny_ram_pth, settings=RANDOM_WEIGHT_SETTINGS)
    app = create_app(pipeline, max_upload_bytes=16_000, max_video_bytes=1 << 20)
    assert size > 16_000 + 64 * 1024
    with TestClient(app) as client:
        assert _post(client, clip, max_frames=2, top_k=3).status_code == 202
        photo = client.post("/v1/scene-graph", files={"image": ("a.jpg", b"x" * size, "image/jpeg")})
        assert photo.status_code == 413 and "the limit is" in photo.json()["detail"]
    small = create_app(pipeline, max_upload_bytes=20 << 20, max_video_bytes=size // 4)
    with TestClient(small) as client:
        response = _post(client, clip)
        assert response.status_code == 413 and "limit for a clip" in response.json()["detail"]
