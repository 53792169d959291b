"""The REST API (`relate-anything serve`) on real photos with tiny random models."""

import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import replace

import pytest
from PIL import Image

from conftest import RANDOM_WEIGHT_FLAGS, RANDOM_WEIGHT_SETTINGS

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from relate_anything import RelateAnything, SceneGraph  # noqa: E402
from relate_anything.serving.api import FORM_FIELDS, SceneGraphOut, create_app  # noqa: E402

MAX_UPLOAD_BYTES = 1 << 20
MAX_PIXELS = 2_000_000
TOP_K = 10
# A coarser grid than the other tests': every request runs the pipeline, on 2 shared CPU cores.
SETTINGS = replace(RANDOM_WEIGHT_SETTINGS, points_per_side=2)


@pytest.fixture(scope="module")
def pipeline(tiny_sam, tiny_ram_pth):
    return RelateAnything.from_pretrained(tiny_sam.folder, tiny_ram_pth, top_k=TOP_K, settings=SETTINGS)


@pytest.fixture(scope="module")
def client(pipeline):
    app = create_app(
        pipeline, max_upload_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_PIXELS, models={"sam": "tiny", "ram": "tiny"}
    )
    with TestClient(app) as client:
        yield client


def _post(client, path, *, name=None, fields=None, content=None):
    """POST /v1/scene-graph with the file at `path` (or `content`) as `image`."""
    data = path.read_bytes() if content is None else content
    files = {"image": (name or path.name, data, "application/octet-stream")}
    return client.post("/v1/scene-graph", files=files, data=fields or {})


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose (tiny) data is never decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------------------------------
# Success


def test_scene_graph_of_a_photo(client, pipeline, dog_jpg):
    response = _post(client, dog_jpg, fields={"top_k": "5"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    SceneGraphOut.model_validate(data)  # the documented schema
    graph = SceneGraph.from_dict(data)
    assert (graph.width, graph.height, graph.file) == (640, 427, "dog.jpg")
    assert 0 < len(graph.relations) <= 5 and graph.features() is None
    # The same graph as the pipeline called directly (the worker is idle now).
    assert data == pipeline(dog_jpg, top_k=5).to_dict(features=False)


def test_point_prompt_and_features(client, images_dir):
    response = _post(
        client, images_dir / "two_dogs_stick.jpg", fields={"point": "300,200", "features": "true", "top_k": "4"}
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert {r["subject"] for r in data["relations"]} == {0}
    assert all(len(s["feature"]) == 256 for s in data["segments"])


def test_segment_settings_per_request_go_with_the_request(client, pipeline, dog_jpg):
    strict = _post(client, dog_jpg, fields={"pred_iou_thresh": "1", "points_per_side": "1"})
    default = _post(client, dog_jpg)
    assert strict.status_code == 200 and default.status_code == 200
    # The server's settings are untouched...
    assert pipeline.settings == SETTINGS and pipeline.segmenter.settings == SETTINGS
    # ... and the request got what the pipeline gives with its settings (the worker is idle now).
    strict_settings = replace(SETTINGS, pred_iou_thresh=1.0, points_per_side=1)
    assert strict.json() == pipeline(dog_jpg, settings=strict_settings).to_dict(features=False)
    assert len(strict.json()["segments"]) != len(default.json()["segments"])


def test_response_model_matches_the_scene_graph_json_field_for_field(dog_jpg):
    """The API documents `SceneGraph.to_dict`: every field of a graph with every optional part
    (image id, labels, PSG categories, features) round-trips through the response model."""
    import numpy as np

    masks = np.zeros((2, 6, 8), dtype=bool)
    masks[0, 1:3, 1:4] = masks[1, 3:, 4:] = True
    graph = SceneGraph.from_masks(
        masks, [0.9, 0.8], features=np.ones((2, 4), np.float32), labels=["dog", "sand"], label_scores=[0.5, 0.4],
        category_ids=[16, None], file="dog.jpg",
    )  # fmt: skip
    graph = replace(graph, image_id="42", relations=[])
    graph = graph.with_relations([pipeline_relation(graph)])
    data = graph.to_dict()
    model = SceneGraphOut.model_validate(data)
    assert model.model_dump(by_alias=True, exclude_unset=True) == data


def pipeline_relation(graph):
    from relate_anything.scene_graph import Relation

    return Relation(subject=0, predicate=graph.predicates[3], predicate_id=3, object=1, score=0.5)


def test_upload_name_loses_its_folders(client, dog_jpg):
    response = _post(client, dog_jpg, name="C:\\photos\\holiday/dog 1.jpg", fields={"top_k": "1"})
    assert response.status_code == 200 and response.json()["image"]["file"] == "dog 1.jpg"


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "device": "cpu",
        "dtype": "float32",
        "models": {"sam": "tiny", "ram": "tiny"},
        "queue": {"waiting": 0, "running": 0, "capacity": 32},
    }


def test_a_factory_is_called_once_at_startup(pipeline):
    calls = []

    def load():
        calls.append(1)
        return pipeline

    app = create_app(load)
    assert calls == []
    with TestClient(app) as client:
        assert client.get("/healthz").json()["models"]["sam"]  # named from the model's config
        assert client.get("/healthz").status_code == 200
    assert calls == [1]


def test_openapi_names_the_fields_like_the_cli(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/scene-graph"]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    properties = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]
    assert {
        "image",
        "top_k",
        "point",
        "box",
        "points_per_side",
        "pred_iou_thresh",
        "stability_score_thresh",
        "vocab",
        "multimask",
        "features",
    } <= set(properties)
    assert {"200", "400", "413", "415", "422", "503", "504"} <= set(operation["responses"])
    assert "/healthz" in schema["paths"]
    assert set(properties) == set(FORM_FIELDS)  # the fields the handler accepts, no other


def test_every_error_has_one_documented_shape(client, dog_jpg):
    """`detail` is one string for every error, FastAPI's own validation errors included, and the
    OpenAPI schema says so for every error status."""
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():  # every route, the video ones included
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    reference = response["content"]["application/json"]["schema"]["$ref"]
                    assert reference == "#/components/schemas/ErrorOut", (path, method, status)
    assert schema["components"]["schemas"]["ErrorOut"]["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    answers = [
        client.post("/v1/scene-graph", data={"top_k": "3"}),  # FastAPI's validation: no image
        _post(client, dog_jpg, fields={"top_k": "0"}),  # FastAPI's validation: out of range
        _post(client, dog_jpg, fields={"point": "1,2,3"}),  # ours
        _post(client, dog_jpg, content=b"not an image"),  # ours
        client.get("/nowhere"),  # Starlette's
    ]
    assert [answer.status_code for answer in answers] == [422, 422, 422, 415, 404]
    for answer in answers:
        assert list(answer.json()) == ["detail"] and isinstance(answer.json()["detail"], str), answer.text
    assert answers[0].json()["detail"] == "image: Field required"
    assert answers[1].json()["detail"].startswith("top_k: Input should be greater than or equal to 1")


def test_an_unknown_field_is_refused_by_name(client, dog_jpg):
    response = _post(client, dog_jpg, fields={"topk": "3", "top_k": "2"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("unknown form field 'topk' (did you mean 'top_k'?)") and "points_per_side" in detail


# ----------------------------------------------------------------------------------------------
# Bad uploads


def test_upload_over_the_byte_limit(client, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(MAX_UPLOAD_BYTES + 1))  # just over: passes the body limit, not the file limit
    response = _post(client, big)
    assert response.status_code == 413 and f"{MAX_UPLOAD_BYTES + 1} bytes, the limit is" in response.json()["detail"]
    huge = os.urandom(MAX_UPLOAD_BYTES + 200_000)  # refused from its Content-Length, before it is read
    response = _post(client, big, content=huge)
    assert (
        response.status_code == 413
        and "upload too large: the limit is 1048576 bytes (1.0 MiB)" in response.json()["detail"]
    )


def test_chunked_upload_is_cut_off_at_the_limit(client):
    boundary = "relate-anything-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n'.encode()

    def body():  # no Content-Length: httpx sends it chunked
        yield head
        for _ in range(40):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/scene-graph", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert (
        response.status_code == 413
        and "upload too large: the limit is 1048576 bytes (1.0 MiB)" in response.json()["detail"]
    )


@pytest.mark.parametrize("width, height", [(2000, 1001), (100_000, 100_000)])
def test_too_many_pixels_is_refused_from_the_header(client, tmp_path, width, height):
    # The second size is past PIL's own decompression-bomb limit, which refuses it while opening.
    response = _post(client, tmp_path / "bomb.png", content=_png_header(width, height))
    assert response.status_code == 413, response.text
    assert "pixels" in response.json()["detail"] or "too large" in response.json()["detail"]


def test_corrupt_image(client, dog_jpg):
    response = _post(client, dog_jpg, name="broken.jpg", content=dog_jpg.read_bytes()[:3000])
    assert response.status_code == 400 and "cannot read image" in response.json()["detail"]


def test_text_file_is_not_an_image(client, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a dog holding a stick\n")
    response = _post(client, notes)
    assert response.status_code == 415 and "not an image" in response.json()["detail"]


def test_missing_image_field(client):
    response = client.post("/v1/scene-graph", data={"top_k": "3"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"point": "abc"}, "point: expected 2 comma-separated numbers"),
        ({"point": "1,2,3"}, "point: expected 2"),
        ({"point": "nan,3"}, "point: expected 2"),
        ({"point": "700,10"}, "outside the 640x427 image"),
        ({"box": "10,10,5,50"}, "must satisfy"),
        ({"box": "0,0,700,100"}, "must satisfy"),
        ({"top_k": "0"}, None),
        ({"points_per_side": "1000"}, None),
        ({"pred_iou_thresh": "1.5"}, None),
    ],
)
def test_bad_fields(client, dog_jpg, fields, message):
    response = _post(client, dog_jpg, fields=fields)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(next(iter(fields)))  # the field comes first
    if message:
        assert message in detail


def test_vocab_without_a_labeler(client, dog_jpg):
    response = _post(client, dog_jpg, fields={"vocab": "dog,stick"})
    assert response.status_code == 400 and "labeler" in response.json()["detail"]


def test_vocab_names_segments_when_the_server_has_a_labeler(pipeline, tiny_clip_folder, dog_jpg, monkeypatch):
    from relate_anything.naming import Labeler

    monkeypatch.setattr(pipeline, "labeler", Labeler.from_pretrained(tiny_clip_folder, threshold=-1.0))
    with TestClient(create_app(pipeline)) as client:
        named = _post(client, dog_jpg, fields={"vocab": "dog, stick ,sand", "top_k": "2"}).json()
        default = _post(client, dog_jpg, fields={"top_k": "2"}).json()
        duplicate = _post(client, dog_jpg, fields={"vocab": "dog,dog"})
    assert {s["label"] for s in named["segments"]} <= {"dog", "stick", "sand"}
    assert all("label" in s for s in default["segments"])  # the server's vocabulary: PSG's classes
    assert pipeline.vocabulary is None  # the request's vocabulary was the request's only
    assert duplicate.status_code == 422 and "more than once" in duplicate.json()["detail"]


def test_a_bug_is_a_json_500_not_a_traceback(pipeline, dog_jpg, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(pipeline, "batch", broken)
    monkeypatch.setattr(RelateAnything, "__call__", broken)
    with TestClient(create_app(pipeline), raise_server_exceptions=False) as client:
        response = _post(client, dog_jpg)
    assert response.status_code == 500 and "internal server error" in response.json()["detail"]
    assert "simulated bug" not in response.text


# ----------------------------------------------------------------------------------------------
# The worker: queue, timeout, batching


class GatedBatch:
    """`pipeline.batch` that records each call's size and holds the first call until `gate` opens."""

    def __init__(self, original):
        self.original = original
        self.sizes = []
        self.gate = threading.Event()

    def __call__(self, images, **kwargs):
        self.sizes.append(len(images))
        if len(self.sizes) == 1:
            assert self.gate.wait(30), "the test never opened the gate"
        return self.original(images, **kwargs)


def _wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def _in_thread(function, *args, **kwargs):
    """Start `function` in a thread; returns a callable that joins it and gives its result."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", function(*args, **kwargs)))
    thread.start()

    def result():
        thread.join(60)
        return box["result"]

    return result


def test_full_queue_answers_503(pipeline, dog_jpg, monkeypatch):
    batch = GatedBatch(pipeline.batch)
    monkeypatch.setattr(pipeline, "batch", batch)
    with TestClient(create_app(pipeline, queue_size=1)) as client:
        worker = client.app.state.worker
        try:
            running = _in_thread(_post, client, dog_jpg)
            _wait_until(lambda: worker.running == 1)
            waiting = _in_thread(_post, client, dog_jpg)
            _wait_until(lambda: worker.waiting == 1)
            refused = _post(client, dog_jpg)
            assert refused.status_code == 503 and "busy" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) > 0
            assert client.get("/healthz").json()["queue"] == {"waiting": 1, "running": 1, "capacity": 1}
        finally:
            batch.gate.set()
        assert running().status_code == 200 and waiting().status_code == 200


def test_slow_request_answers_504(pipeline, dog_jpg, monkeypatch):
    batch = GatedBatch(pipeline.batch)
    monkeypatch.setattr(pipeline, "batch", batch)
    with TestClient(create_app(pipeline, timeout=0.3)) as client:
        worker = client.app.state.worker
        try:
            started = time.monotonic()
            response = _post(client, dog_jpg)
            assert response.status_code == 504 and "timeout" in response.json()["detail"]
            assert time.monotonic() - started < 10
            # A request that times out while waiting is dropped, never run.
            waiting = _post(client, dog_jpg, fields={"top_k": "3"})
            assert waiting.status_code == 504
        finally:
            batch.gate.set()
        _wait_until(lambda: worker.running == 0 and worker.waiting == 0)
        assert batch.sizes == [1]


def test_requests_that_arrive_together_share_one_batch(pipeline, images_dir, monkeypatch):
    batch = GatedBatch(pipeline.batch)
    monkeypatch.setattr(pipeline, "batch", batch)
    photos = ["dog.jpg", "two_men_talking.jpg", "street_bus.jpg"]
    with TestClient(create_app(pipeline, max_batch=8)) as client:
        worker = client.app.state.worker
        try:
            first = _in_thread(_post, client, images_dir / "dog_running.jpg")
            _wait_until(lambda: worker.running == 1)
            # While the first runs: three plain requests, one prompted, one with its own settings,
            # each queued before the next is sent (the worker groups them in order of arrival).
            together, sent = [], 0
            for name in photos:
                together.append(_in_thread(_post, client, images_dir / name, fields={"top_k": "6"}))
                sent += 1
                _wait_until(lambda: worker.waiting == sent)
            prompted = _in_thread(_post, client, images_dir / "dog.jpg", fields={"point": "400,300", "top_k": "6"})
            _wait_until(lambda: worker.waiting == 4)
            coarse = _in_thread(_post, client, images_dir / "dog.jpg", fields={"points_per_side": "1", "top_k": "6"})
            _wait_until(lambda: worker.waiting == 5)
        finally:
            batch.gate.set()
        responses = [get() for get in (first, *together, prompted, coarse)]
    assert [r.status_code for r in responses] == [200] * 6
    # The three plain ones ran as one batch, the one with its own settings as another, the
    # prompted one alone (not through batch).
    assert batch.sizes == [1, 3, 1]
    for name, response in zip(photos, responses[1:4]):  # each client got its own photo's graph
        width, height = Image.open(images_dir / name).size
        assert response.json()["image"] == {"width": width, "height": height, "file": name}
    assert {r["subject"] for r in responses[4].json()["relations"]} == {0}
    assert pipeline.settings == SETTINGS


@pytest.mark.gpu
def test_requests_on_cuda_are_batched(tiny_sam, tiny_ram_pth, images_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pipeline = RelateAnything.from_pretrained(
        tiny_sam.folder, tiny_ram_pth, device="cuda", top_k=TOP_K, settings=SETTINGS
    )
    batch = GatedBatch(pipeline.batch)
    pipeline.batch = batch
    photos = ["dog.jpg", "two_men_talking.jpg", "street_bus.jpg"]
    with TestClient(create_app(pipeline)) as client:
        worker = client.app.state.worker
        assert client.get("/healthz").json()["device"].startswith("cuda")
        try:
            first = _in_thread(_post, client, images_dir / "dog_running.jpg")
            _wait_until(lambda: worker.running == 1)
            together = [_in_thread(_post, client, images_dir / name) for name in photos]
            _wait_until(lambda: worker.waiting == 3)
        finally:
            batch.gate.set()
        responses = [get() for get in (first, *together)]
    assert [r.status_code for r in responses] == [200] * 4 and batch.sizes == [1, 3]
    for name, response in zip(photos, responses[1:]):
        assert response.json()["image"]["file"] == name and len(response.json()["relations"]) > 0


# ----------------------------------------------------------------------------------------------
# Schemathesis: whatever the schema allows, the server answers without a server error


@pytest.mark.slow
def test_openapi_schema_fuzz(pipeline):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    app = create_app(pipeline, max_upload_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_PIXELS)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    photo = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(photo, format="PNG")

    def with_photo(case):
        # Random bytes are never an image; a real one lets the other fields reach the model. A
        # fine grid of random-weight masks takes minutes on a CPU, so the grid stays coarse.
        if isinstance(case.body, dict) and "image" in case.body:
            case.body["image"] = photo.getvalue()
            if isinstance(case.body.get("points_per_side"), (int, float)):
                case.body["points_per_side"] = min(case.body["points_per_side"], 2)
        return case

    operation = schema["/v1/scene-graph"]["POST"]
    strategies = {
        "random bytes": operation.as_strategy(),
        "a photo": operation.as_strategy().map(with_photo),
        "healthz": schema["/healthz"]["GET"].as_strategy(),
    }
    statuses = {}
    try:
        for name, strategy in strategies.items():

            @given(case=strategy)
            @settings(
                max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
            )
            def check(case):
                response = case.call_and_validate(checks=checks)
                statuses.setdefault(name, set()).add(response.status_code)

            check()
    finally:
        # Schemathesis started the app's lifespan (and so its worker); stop it here, not at exit.
        from schemathesis.python.asgi import shutdown_lifespans

        shutdown_lifespans()
    assert 200 in statuses["a photo"] and 415 in statuses["random bytes"], statuses


# ----------------------------------------------------------------------------------------------
# The real command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_serve_command_answers_http(tiny_sam, tiny_ram_pth, dog_jpg):
    port = _free_port()
    command = [sys.executable, "-c", "from relate_anything.cli import main; main()", "serve", "--port", str(port)]
    command += ["--sam", str(tiny_sam.folder), "--ram", str(tiny_ram_pth), "--top-k", "3"]
    command += RANDOM_WEIGHT_FLAGS
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health.json()["models"] == {"sam": str(tiny_sam.folder), "ram": str(tiny_ram_pth)}
        with dog_jpg.open("rb") as photo:
            response = httpx.post(
                f"{base}/v1/scene-graph", files={"image": ("dog.jpg", photo, "image/jpeg")}, timeout=60
            )
        assert response.status_code == 200, response.text
        graph = SceneGraph.from_dict(response.json())
        assert graph.file == "dog.jpg" and 0 < len(graph.relations) <= 3
    finally:
        server.terminate()
        server.wait(30)


def test_serve_help_lists_the_limits():
    from typer.testing import CliRunner

    from relate_anything.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in [
        "--host",
        "--port",
        "--sam",
        "--ram",
        "--device",
        "--max-upload-mb",
        "--max-pixels",
        "--queue-size",
        "--timeout",
        "--max-batch",
        "--labeler",
        "--vocab",
    ]:
        assert option in result.output


def test_serve_without_the_serve_extra_says_what_to_install(monkeypatch):
    from typer.testing import CliRunner

    from relate_anything.cli import app

    for module in ("uvicorn", "fastapi", "relate_anything.serving.api"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "pip install 'relate-anything[serve]'" in result.output


def test_serve_without_weights_is_one_clear_message(tmp_path):
    from typer.testing import CliRunner

    from relate_anything.cli import app

    result = CliRunner().invoke(app, ["serve", "--sam", str(tmp_path / "no-sam"), "--port", str(_free_port())])
    assert result.exit_code == 3, result.output
    assert "no-sam" in result.output and "Traceback" not in result.output
