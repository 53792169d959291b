"""The REST API's video routes: `POST /v1/video-scene-graph` (a clip in, a job id out, 202) and
`GET /v1/jobs/{id}` (the job's status, then its `VideoSceneGraph`).

A clip takes long, so it runs as a job in the same worker as the photos (`InferenceWorker`,
`VideoJob`): the upload is checked (bytes while it arrives; then format, frame size and duration
from the container, before any frame is decoded), saved to a temporary file, queued, and its id
returned. Limits answer as for photos: 413 for an upload, frame or clip over the limits, 415 for
a file that is not a video, 422 for a bad field, 503 when the queue is full. Finished jobs are kept
(the `keep` most recent) for their results; their clips are deleted once they have run.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from relate_anything.errors import UsageError, VideoError

if TYPE_CHECKING:
    from relate_anything.serving.worker import InferenceWorker, VideoJob

__all__ = ["JobStore", "add_video_routes"]

_CHUNK = 1 << 20
#: The form fields of POST /v1/video-scene-graph (the handler's parameters).
VIDEO_FORM_FIELDS = (
    "video",
    "top_k",
    "fps",
    "max_frames",
    "start",
    "end",
    "tracker",
    "keyframe_every",
    "point",
    "box",
    "frame",
    "multimask",
    "points_per_side",
    "vocab",
)


class JobAccepted(BaseModel):
    job: str = Field(description="The job's id.")
    status: str = Field(description="queued")
    url: str = Field(description="Where to ask for its status and result: GET /v1/jobs/{id}.")


class JobStatus(BaseModel):
    job: str
    status: str = Field(description="queued, running, done or failed.")
    result: dict[str, Any] | None = Field(
        None, description="The clip's VideoSceneGraph JSON (relate-anything/video-scene-graph/v1), when done."
    )
    detail: str | None = Field(None, description="Why the job failed, when it did.")


class JobStore:
    """Jobs by id, the `keep` most recent finished ones with their results; each job's clip is
    deleted when the job has run."""

    def __init__(self, *, keep: int = 64) -> None:
        self.keep = keep
        self.directory = Path(tempfile.mkdtemp(prefix="relate-anything-video-"))
        self._jobs: OrderedDict[str, VideoJob] = OrderedDict()
        self._lock = threading.Lock()

    def new_path(self, name: str | None) -> Path:
        suffix = Path(name or "").suffix.lower()[:8] if name else ""
        return self.directory / f"{uuid.uuid4().hex}{suffix}"

    def add(self, job: VideoJob) -> str:
        job_id = uuid.uuid4().hex
        job.future.add_done_callback(lambda _: Path(job.source).unlink(missing_ok=True))
        with self._lock:
            self._jobs[job_id] = job
            finished = [key for key, value in self._jobs.items() if value.future.done()]
            for key in finished[: max(0, len(finished) - self.keep)]:
                del self._jobs[key]
        return job_id

    def get(self, job_id: str) -> VideoJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def add_video_routes(
    app: FastAPI, store: JobStore, *, max_video_bytes: int, max_video_seconds: float, max_pixels: int
) -> None:
    """Add the video routes to `app` (whose `state.worker` runs the jobs)."""
    from relate_anything.serving.api import (
        _error,
        _file_name,
        _parse_numbers,
        _parse_vocabulary,
        _refuse_unknown_fields,
        _submit,
    )

    @app.post(
        "/v1/video-scene-graph",
        status_code=202,
        response_model=JobAccepted,
        summary="Relate a clip (a job: poll GET /v1/jobs/{id})",
        responses={
            413: _error("Upload, frame or clip over the server's limits."),
            415: _error("Not a video in a format this server reads."),
            422: _error("A bad form field: a value out of range or malformed, or a field the API does not have."),
            503: _error("The queue is full; retry after Retry-After seconds."),
        },
    )
    async def video_scene_graph(
        http: Request,
        video: Annotated[UploadFile, File(description="The clip (MP4, MOV, WebM, AVI, MKV).")],
        top_k: Annotated[int, Form(ge=1, le=1000, description="Relations kept for the clip, best first.")] = 20,
        fps: Annotated[float, Form(ge=0.0, le=60.0, description="Frames sampled per second (0: every frame).")] = 5.0,
        max_frames: Annotated[int | None, Form(ge=1, description="Most frames sampled.")] = None,
        start: Annotated[float | None, Form(ge=0.0, description="Start at this time (seconds).")] = None,
        end: Annotated[float | None, Form(ge=0.0, description="Stop at this time (seconds).")] = None,
        tracker: Annotated[
            str, Form(description="iou, sam2 (needs SAM 2 on the server) or seggpt (needs SegGPT).")
        ] = "iou",
        keyframe_every: Annotated[
            int, Form(ge=1, le=1000, description="Segment everything every N sampled frames.")
        ] = 5,
        point: Annotated[str | None, Form(description='"X,Y" on frame `frame`: that thing is the subject.')] = None,
        box: Annotated[
            str | None, Form(description='"X0,Y0,X1,Y1" on frame `frame`: that thing is the subject.')
        ] = None,
        frame: Annotated[int, Form(ge=0, description="The sampled frame of point / box.")] = 0,
        multimask: Annotated[bool, Form(description="The best of SAM's 3 masks for point / box.")] = False,
        points_per_side: Annotated[
            int | None, Form(ge=1, le=64, description="Segment everything with an N x N grid.")
        ] = None,
        vocab: Annotated[
            str | None, Form(description='Names for the tracks: "dog,stick" or "psg" (needs a labeler).')
        ] = None,
    ) -> JSONResponse:
        from relate_anything.serving.worker import VideoJob
        from relate_anything.video.io import SamplingSettings
        from relate_anything.video.pipeline import VideoRequest
        from relate_anything.video.tracking import TrackerSettings

        worker: InferenceWorker = app.state.worker
        _refuse_unknown_fields(await http.form(), VIDEO_FORM_FIELDS)
        parsed_point, parsed_box = _parse_numbers(point, 2, "point"), _parse_numbers(box, 4, "box")
        vocabulary = _parse_vocabulary(vocab, has_labeler=worker.pipeline.labeler is not None)
        try:
            sampling = SamplingSettings(fps=fps or None, max_frames=max_frames, start=start, end=end)
            request = VideoRequest(
                tracker=tracker,
                sampling=sampling,
                tracking=TrackerSettings(keyframe_every=keyframe_every),
                settings=worker.pipeline.settings.replace(points_per_side=points_per_side),
                top_k=top_k,
                point=parsed_point,
                box=parsed_box,
                frame=frame,
                multimask=multimask,
                vocabulary=vocabulary,
            )
        except UsageError as error:
            raise HTTPException(422, str(error)) from error
        path = store.new_path(video.filename)
        try:
            await _save(video, path, max_video_bytes)
            await run_in_threadpool(
                _check_clip, path, sampling, max_video_seconds, max_pixels, parsed_point, parsed_box
            )
            job = VideoJob(path, request, file=_file_name(video.filename))
            _submit(worker, job)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        job_id = store.add(job)
        return JSONResponse(
            {"job": job_id, "status": "queued", "url": f"/v1/jobs/{job_id}"},
            status_code=202,
            headers={"Location": f"/v1/jobs/{job_id}"},
        )

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobStatus,
        response_model_exclude_none=True,
        summary="A video job's status, and its VideoSceneGraph when done",
        responses={
            404: _error("No such job (or it is long gone)."),
            422: _error("A malformed request."),
        },
    )
    def job_status(job_id: str) -> JobStatus:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept for a while, then dropped)")
        future = job.future
        if not future.done():
            return JobStatus(job=job_id, status="running" if future.running() else "queued")
        error = future.exception()
        if error is not None:
            return JobStatus(job=job_id, status="failed", detail=str(error) or type(error).__name__)
        return JobStatus(job=job_id, status="done", result=future.result().to_dict())


def clip_too_large(limit: int) -> str:
    """The 413 message for a clip over `limit` bytes."""
    return f"upload too large: the limit for a clip is {limit / 2**20:.1f} MiB"


async def _save(upload: UploadFile, path: Path, limit: int) -> None:
    """Copy the upload to `path`, refusing it (413) as soon as it passes `limit` bytes."""
    written = 0
    with path.open("wb") as handle:
        while chunk := await upload.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise HTTPException(413, clip_too_large(limit))
            handle.write(chunk)


def _check_clip(path: Path, sampling, max_seconds: float, max_pixels: int, point, box) -> None:
    """Format, frame size and duration from the container (nothing decoded beyond the first
    frame); a prompt must fit the frame."""
    from relate_anything.pipeline import check_prompt
    from relate_anything.video.io import open_video

    try:
        reader = open_video(path, settings=sampling)
    except VideoError as error:
        raise HTTPException(415, f"the upload cannot be read as a video: {error}") from error
    except UsageError as error:
        raise HTTPException(422, str(error)) from error
    if reader.width * reader.height > max_pixels:
        raise HTTPException(
            413,
            f"frames are {reader.width}x{reader.height} = {reader.width * reader.height} pixels, over the limit of {max_pixels}",
        )
    if reader.duration is not None and reader.duration > max_seconds:
        raise HTTPException(413, f"the clip lasts {reader.duration:.1f} s, over the limit of {max_seconds:g} s")
    try:
        check_prompt(point, box, width=reader.width, height=reader.height)
    except UsageError as error:
        raise HTTPException(422, str(error)) from error
