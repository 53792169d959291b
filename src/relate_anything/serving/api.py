"""The REST API: `POST /v1/scene-graph` (a photo in, its scene graph out) and `GET /healthz`.

A thin shell over `RelateAnything`: the handler checks the upload (bytes, then pixels from the
header, then the decoded image), parses the form fields (named like the CLI's flags), and hands a
`Job` to the `InferenceWorker`, which owns the pipeline. Every error is JSON of one shape,
`{"detail": "what is wrong"}` with `detail` a string for a person to read (for a bad field it
starts with the field's name), and a 4xx status for what the client can fix:

- 413: upload over `max_upload_bytes`, or an image over `max_pixels` (checked before decoding);
- 415: not an image; 400: an image that cannot be decoded (truncated, corrupt);
- 422: a bad field (malformed or out-of-image point/box, thresholds out of range, a field the
  API does not have, ...);
- 400: `vocab` on a server without a labeler;
- 503 (with Retry-After): the queue is full; 504: the scene graph took longer than `timeout`.

Example:
    >>> app = create_app(RelateAnything.from_pretrained(device="cuda"), max_upload_bytes=20 << 20)
    >>> uvicorn.run(app, port=8000)
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from relate_anything.errors import ImageError, ImageTooLargeError, NotAnImageError, RelateAnythingError, UsageError
from relate_anything.image_io import MAX_PIXELS, load_image_bytes
from relate_anything.pipeline import check_prompt
from relate_anything.serving.video_api import JobStore, add_video_routes, clip_too_large
from relate_anything.serving.worker import InferenceWorker, Job, QueueFullError, WorkerClosedError
from relate_anything.settings import SettingsError

if TYPE_CHECKING:
    import numpy as np

    from relate_anything.naming import Vocabulary
    from relate_anything.pipeline import RelateAnything

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

#: Room for the multipart framing and the form fields on top of the image itself.
_FORM_OVERHEAD_BYTES = 64 * 1024
#: Bounds on per-request choices, so one request cannot occupy the model for minutes.
MAX_TOP_K = 1000
MAX_POINTS_PER_SIDE = 64
MAX_VOCABULARY_NAMES = 256
MAX_NAME_LENGTH = 100


# ----------------------------------------------------------------------------------------------
# Response schemas (documentation: the handler returns `SceneGraph.to_dict()` as it is)


class ImageInfo(BaseModel):
    width: int
    height: int
    file: str | None = None
    id: str | None = Field(None, description="A dataset's id for the image (PSG's image_id), if any.")


class SegmentOut(BaseModel):
    id: int
    mask: dict[str, Any] = Field(description="COCO run-length encoding: {'size': [H, W], 'counts': str}.")
    bbox: list[float] = Field(description="[x0, y0, x1, y1], pixel edges.")
    area: int
    score: float = Field(description="SAM's predicted IoU.")
    label: str | None = None
    label_score: float | None = None
    category_id: int | None = None
    feature: list[float] | None = Field(None, description="256-d SAM mask-token feature (with features=true).")


class RelationOut(BaseModel):
    subject: int
    predicate: str
    predicate_id: int
    object: int
    score: float


class SceneGraphOut(BaseModel):
    """relate-anything's scene-graph JSON (`SceneGraph.to_dict`)."""

    schema_: str = Field(alias="schema")
    image: ImageInfo
    predicates: list[str]
    segments: list[SegmentOut]
    relations: list[RelationOut]


class QueueInfo(BaseModel):
    waiting: int
    running: int
    capacity: int


class Health(BaseModel):
    status: str
    device: str
    dtype: str  # SAM's precision: float32, bfloat16 or float16
    models: dict[str, str]
    queue: QueueInfo


class ErrorOut(BaseModel):
    """Every error's body: one string, whatever the status."""

    detail: str = Field(
        description="What is wrong, for a person to read; for a bad form field it starts with the field's name "
        '("top_k: Input should be less than or equal to 1000").'
    )


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


# ----------------------------------------------------------------------------------------------
# The app


def create_app(
    pipeline: RelateAnything | Callable[[], RelateAnything],
    *,
    max_upload_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = MAX_PIXELS,
    queue_size: int = 32,
    timeout: float = 60.0,
    max_batch: int = 8,
    batch_window: float = 0.005,
    models: Mapping[str, str] | None = None,
    max_video_bytes: int = 200 * 1024 * 1024,
    max_video_seconds: float = 120.0,
    keep_jobs: int = 64,
) -> FastAPI:
    """The FastAPI app serving `pipeline`.

    Args:
        pipeline: the pipeline, or a function that builds it (called once, at startup).
        max_upload_bytes: largest image file accepted (bytes).
        max_pixels: largest image accepted (width x height), checked before decoding.
        queue_size: requests that may wait for the model; more get 503.
        timeout: seconds a request may wait and run in all; then 504.
        max_batch: most photos the worker runs as one batch.
        batch_window: seconds the worker waits for more requests to batch with the first.
        models: names shown by /healthz, e.g. {"sam": "facebook/sam-vit-huge", "ram": "..."}.
        max_video_bytes, max_video_seconds: largest clip accepted by POST /v1/video-scene-graph
            (bytes; seconds of video, read from the container before decoding).
        keep_jobs: finished video jobs kept with their results for GET /v1/jobs/{id}.
    """

    jobs = JobStore(keep=keep_jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = pipeline if hasattr(pipeline, "segmenter") else pipeline()  # an instance, or its factory
        worker = InferenceWorker(loaded, queue_size=queue_size, max_batch=max_batch, batch_window=batch_window).start()
        app.state.worker = worker
        app.state.jobs = jobs
        app.state.models = dict(models) if models is not None else _model_names(loaded)
        try:
            yield
        finally:
            await run_in_threadpool(worker.close, timeout)
            jobs.close()

    app = FastAPI(
        title="relate-anything",
        summary="Panoptic scene graphs from any image: SAM segments, the RAM head relates.",
        version=_version(),
        lifespan=lifespan,
    )
    app.add_middleware(
        BodySizeLimit,
        max_bytes=max_upload_bytes + _FORM_OVERHEAD_BYTES,
        detail=f"upload too large: the limit is {max_upload_bytes} bytes ({max_upload_bytes / 2**20:.1f} MiB)",
        # A clip has its own limit (--max-video-mb), larger or smaller than a photo's.
        routes={"/v1/video-scene-graph": (max_video_bytes + _FORM_OVERHEAD_BYTES, clip_too_large(max_video_bytes))},
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own body is a list of error objects; every error here is one string.
        return JSONResponse({"detail": _validation_message(error.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # A bug, not the client's fault: the details go to the log, the client gets JSON all the same.
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse({"detail": "internal server error; the server's log has the details"}, status_code=500)

    @app.get("/healthz", response_model=Health, summary="Liveness, device, precision, models and queue depth")
    def healthz() -> Health:
        worker: InferenceWorker = app.state.worker
        return Health(
            status="ok",
            device=str(worker.pipeline.segmenter.device),
            dtype=str(worker.pipeline.segmenter.dtype).removeprefix("torch."),
            models=app.state.models,
            queue=QueueInfo(waiting=worker.waiting, running=worker.running, capacity=worker.queue_size),
        )

    @app.post(
        "/v1/scene-graph",
        summary="The scene graph of a photo",
        response_class=JSONResponse,
        responses={
            200: {"model": SceneGraphOut, "description": "The scene graph (relate-anything/scene-graph/v1)."},
            400: _error("Corrupt image, or vocab on a server without a labeler."),
            413: _error("Upload or image too large."),
            415: _error("Not an image."),
            422: _error("A bad form field: a value out of range or malformed, or a field the API does not have."),
            503: _error("The queue is full; retry after Retry-After seconds."),
            504: _error("The scene graph took longer than the server's timeout."),
        },
    )
    async def scene_graph(
        request: Request,
        image: Annotated[UploadFile, File(description="The photo (JPEG, PNG, WebP, ...).")],
        top_k: Annotated[
            int | None, Form(ge=1, le=MAX_TOP_K, description="Relations to keep, best first (default: the server's).")
        ] = None,
        point: Annotated[
            str | None, Form(description='"X,Y" in pixels: relate the thing at this point with everything else.')
        ] = None,
        box: Annotated[
            str | None, Form(description='"X0,Y0,X1,Y1" in pixels: relate the thing in this box with everything else.')
        ] = None,
        points_per_side: Annotated[
            int | None,
            Form(ge=1, le=MAX_POINTS_PER_SIDE, description="Segment everything with an N x N grid of point prompts."),
        ] = None,
        pred_iou_thresh: Annotated[
            float | None, Form(ge=0.0, le=1.0, description="Keep masks whose predicted IoU is above this.")
        ] = None,
        stability_score_thresh: Annotated[
            float | None, Form(ge=0.0, le=1.0, description="Keep masks whose stability score is at least this.")
        ] = None,
        vocab: Annotated[
            str | None,
            Form(
                max_length=MAX_VOCABULARY_NAMES * (MAX_NAME_LENGTH + 1),
                description='Names for the segments: "dog,stick,sand" or "psg" (needs a server with a labeler).',
            ),
        ] = None,
        multimask: Annotated[
            bool,
            Form(
                description="For point/box: the best of SAM's 3 candidate masks instead of its single-mask output "
                "(RAM's demo uses the single mask)."
            ),
        ] = False,
        features: Annotated[bool, Form(description="Include each segment's 256-d SAM feature.")] = False,
    ) -> Response:
        worker: InferenceWorker = app.state.worker
        _refuse_unknown_fields(await request.form())
        parsed_point = _parse_numbers(point, 2, "point")
        parsed_box = _parse_numbers(box, 4, "box")
        vocabulary = _parse_vocabulary(vocab, has_labeler=worker.pipeline.labeler is not None)
        data = await image.read()
        if len(data) > max_upload_bytes:
            raise HTTPException(
                413,
                f"upload too large: {len(data)} bytes, the limit is {max_upload_bytes} bytes ({max_upload_bytes / 2**20:.1f} MiB)",
            )
        try:
            settings = worker.pipeline.settings.replace(
                points_per_side=points_per_side,
                pred_iou_thresh=pred_iou_thresh,
                stability_score_thresh=stability_score_thresh,
            )
        except SettingsError as error:
            raise HTTPException(422, str(error)) from error
        pixels = await run_in_threadpool(_decode_image, data, max_pixels)
        try:
            check_prompt(parsed_point, parsed_box, width=pixels.shape[1], height=pixels.shape[0])
        except UsageError as error:
            raise HTTPException(422, str(error)) from error
        job = Job(
            pixels=pixels,
            settings=settings,
            top_k=worker.pipeline.top_k if top_k is None else top_k,
            file=_file_name(image.filename),
            point=parsed_point,
            box=parsed_box,
            multimask=multimask,
            vocabulary=vocabulary,
        )
        graph = await _result(worker, job, timeout)
        body = await run_in_threadpool(lambda: json.dumps(graph.to_dict(features=features)).encode())
        return Response(body, media_type="application/json")

    add_video_routes(
        app, jobs, max_video_bytes=max_video_bytes, max_video_seconds=max_video_seconds, max_pixels=max_pixels
    )
    return app


def _submit(worker: InferenceWorker, job) -> Future:
    """Queue `job` on the worker, or the 503 that says why it cannot wait."""
    try:
        return worker.submit(job)
    except QueueFullError as error:
        # A rough hint: by then the jobs ahead have had a few seconds to finish.
        raise HTTPException(503, str(error), headers={"Retry-After": "5"}) from error
    except WorkerClosedError as error:
        raise HTTPException(503, str(error)) from error


async def _result(worker: InferenceWorker, job: Job, timeout: float):
    """The job's scene graph, or the HTTP error that says why there is none."""
    future = _submit(worker, job)
    try:
        # On timeout wait_for cancels the future, so a job still waiting is never run.
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except TimeoutError as error:
        raise HTTPException(504, f"no scene graph within the server's timeout of {timeout:g} s") from error
    except WorkerClosedError as error:
        raise HTTPException(503, str(error)) from error
    except RelateAnythingError as error:
        raise HTTPException(422, str(error)) from error


# ----------------------------------------------------------------------------------------------
# Checking the request

#: The form fields of POST /v1/scene-graph (the handler's parameters).
FORM_FIELDS = (
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
)


def _refuse_unknown_fields(form, fields: Sequence[str] = FORM_FIELDS) -> None:
    """422 for a form field the route does not have ("topk" for "top_k"): silently ignoring it
    would answer another question than the one asked."""
    unknown = sorted(set(form.keys()) - set(fields))
    if unknown:
        hints = [difflib.get_close_matches(name, fields, n=1) for name in unknown]
        named = ", ".join(
            f"{name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") for name, hint in zip(unknown, hints)
        )
        raise HTTPException(422, f"unknown form field {named}: the fields are {', '.join(fields)}")


def _validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """FastAPI's validation errors as one line: "top_k: Input should be ...; image: Field required"."""
    parts = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
        message = str(error.get("msg", "invalid value"))
        parts.append(f"{'.'.join(location)}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"


def _decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] from an uploaded file (`image_io.load_image_bytes`: the pixel count is
    checked from the header, before decoding); its errors as HTTP statuses."""
    try:
        return load_image_bytes(data, name="the upload", max_pixels=max_pixels)
    except ImageTooLargeError as error:
        raise HTTPException(413, str(error)) from error
    except NotAnImageError as error:
        raise HTTPException(415, str(error)) from error
    except ImageError as error:
        raise HTTPException(400, str(error)) from error


def _file_name(filename: str | None) -> str | None:
    """The upload's name without any folders a client put in it."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    return name or None


def _parse_numbers(text: str | None, count: int, field: str) -> tuple[float, ...] | None:
    if text is None or not text.strip():
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise HTTPException(422, f"{field}: expected {count} comma-separated numbers, got {text!r}")
    return values


def _parse_vocabulary(text: str | None, *, has_labeler: bool) -> Vocabulary | None:
    """The request's vocabulary: "psg" or comma-separated names (never a file on the server)."""
    if text is None or not text.strip():
        return None
    if not has_labeler:
        raise HTTPException(
            400, "vocab needs a labeler, and this server has none: start it with `relate-anything serve --labeler ...`"
        )
    from relate_anything.naming import Vocabulary

    if text.strip().lower() == "psg":
        return Vocabulary.psg()
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise HTTPException(422, f"vocab {text!r} has no names: give comma-separated names or psg")
    if len(names) > MAX_VOCABULARY_NAMES or any(len(name) > MAX_NAME_LENGTH for name in names):
        raise HTTPException(
            422, f"vocab: at most {MAX_VOCABULARY_NAMES} names of at most {MAX_NAME_LENGTH} characters each"
        )
    try:
        return Vocabulary.from_names(names)
    except RelateAnythingError as error:
        raise HTTPException(422, f"vocab: {error}") from error


# ----------------------------------------------------------------------------------------------
# Request size


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: requests whose body exceeds `max_bytes` get 413 without being read whole.

    A declared Content-Length over the limit is refused before any byte is read; a body sent
    without one (chunked) is counted as it arrives and cut off at the limit, whatever the app was
    doing with it (FastAPI would otherwise report the aborted form as a parse error).
    """

    def __init__(
        self,
        app,
        *,
        max_bytes: int,
        detail: str | None = None,
        routes: Mapping[str, tuple[int, str]] | None = None,
    ) -> None:
        """`routes`: {path: (max_bytes, detail)} for paths with their own limit (video uploads)."""
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail or f"request body over the limit of {max_bytes} bytes"
        self.routes = dict(routes or {})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, detail = self.routes.get(scope.get("path", ""), (self.max_bytes, self.detail))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(send, detail)
            return
        received = 0
        exceeded = False
        refused = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message) -> None:
            nonlocal refused
            if not exceeded:
                await send(message)
            elif not refused and message["type"] == "http.response.start":
                refused = True
                await self._refuse(send, detail)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not refused:
            await self._refuse(send, detail)

    async def _refuse(self, send, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------------------------


def _model_names(pipeline: RelateAnything) -> dict[str, str]:
    """What /healthz names when the caller gave no names: the models' own config names."""
    names = {"sam": pipeline.segmenter.name, "ram": type(pipeline.relation_head).__name__}
    if pipeline.labeler is not None:
        names["labeler"] = pipeline.labeler.name
    return names


def _version() -> str:
    from relate_anything import __version__

    return __version__
