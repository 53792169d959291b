"""`relate-anything video`: a thin shell over `RelateAnything.video_run`.

For each INPUT (a video file, a folder or glob of frames): OUT/<stem>.json (the
`VideoSceneGraph`), OUT/<stem>.mp4 (the clip with its tracks and current relations drawn) and
OUT/<stem>.timeline.png (the top relations over time). Every input is opened and checked before
any model loads.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Annotated

import typer

from relate_anything.atomic import write_atomically
from relate_anything.console import (
    EXIT_INPUTS,
    DeviceOption,
    DtypeOption,
    LabelerOption,
    LabelThresholdOption,
    MultimaskOption,
    RamOption,
    Sam2Option,
    SamOption,
    SeggptOption,
    VocabOption,
    build_pipeline,
    handles_errors,
    optional_model,
    parse_numbers,
    progress_bar,
    report,
    segment_settings_options,
    stderr,
)
from relate_anything.errors import InputFileError, PromptError, UsageError
from relate_anything.settings import SegmentSettings


@segment_settings_options
@handles_errors
def video_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT...",
            help="Video files (MP4, MOV, WebM, AVI, MKV), folders of frames, or globs of frames ('shots/*.png').",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for <stem>.json, <stem>.mp4 and <stem>.timeline.png.")] = Path("."),
    fps: Annotated[
        float, typer.Option(min=0.0, help="Frames sampled per second, by timestamps (PVSG: 5); 0: every frame.")
    ] = 5.0,
    max_frames: Annotated[int | None, typer.Option(min=1, help="Most frames sampled.", show_default=False)] = None,
    start: Annotated[
        float | None, typer.Option(min=0.0, help="Start at this time (seconds).", show_default=False)
    ] = None,
    end: Annotated[float | None, typer.Option(min=0.0, help="Stop at this time (seconds).", show_default=False)] = None,
    tracker: Annotated[
        str,
        typer.Option(help="iou (SAM prompted with each track's last box), sam2 (SAM 2's video predictor) or seggpt."),
    ] = "iou",
    keyframe_every: Annotated[
        int, typer.Option(min=1, help="Segment everything again every N sampled frames (things that enter).")
    ] = 5,
    max_gap: Annotated[int, typer.Option(min=0, help="Frames a track may be unseen and still continue.")] = 5,
    min_track: Annotated[int, typer.Option(min=1, help="Tracks seen on fewer frames are dropped.")] = 3,
    min_interval: Annotated[int, typer.Option(min=1, help="Shortest relation interval kept, in sampled frames.")] = 3,
    merge_gap: Annotated[
        int, typer.Option(min=0, help="Gaps of at most this many frames inside a relation are bridged.")
    ] = 2,
    point: Annotated[
        str | None,
        typer.Option(
            help="X,Y in pixels on frame --frame: that thing is the subject through the clip.", show_default=False
        ),
    ] = None,
    box: Annotated[
        str | None,
        typer.Option(help="X0,Y0,X1,Y1 in pixels on frame --frame: that thing is the subject.", show_default=False),
    ] = None,
    frame: Annotated[int, typer.Option(min=0, help="The sampled frame of --point / --box.")] = 0,
    multimask: MultimaskOption = False,
    top_k: Annotated[int, typer.Option(min=1, help="Relations kept for the clip, best first.")] = 20,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    sam: SamOption = None,
    ram: RamOption = None,
    labeler: LabelerOption = None,
    vocab: VocabOption = None,
    label_threshold: LabelThresholdOption = None,
    find: Annotated[
        str | None,
        typer.Option(
            help='Find a track by a phrase ("the dog"): it becomes the subject.',
            show_default=False,
            rich_help_panel="Naming and finding",
        ),
    ] = None,
    seggpt: SeggptOption = None,
    sam2: Sam2Option = None,
    no_video: Annotated[
        bool, typer.Option("--no-video", help="Skip the annotated MP4 (JSON and timeline only).")
    ] = False,
    settings: SegmentSettings = SegmentSettings(),
) -> None:
    """Track every thing and stuff through each INPUT and relate the tracks over time."""
    from relate_anything.devices import check_device
    from relate_anything.pipeline_spec import PipelineSpec
    from relate_anything.video.intervals import IntervalSettings
    from relate_anything.video.io import SamplingSettings, open_video
    from relate_anything.video.settings import TrackerSettings, VideoRequest
    from relate_anything.weights import LABELER_WEIGHTS, SAM2_WEIGHTS, SEGGPT_WEIGHTS

    if (point is not None or box is not None) and find is not None:
        raise UsageError("give --point/--box or --find, not both")
    sampling = SamplingSettings(fps=fps or None, max_frames=max_frames, start=start, end=end)
    request = VideoRequest(
        tracker=tracker,
        sampling=sampling,
        tracking=TrackerSettings(keyframe_every=keyframe_every, max_gap=max_gap, min_track=min_track),
        intervals=IntervalSettings(min_interval=min_interval, merge_gap=merge_gap),
        top_k=top_k,
        point=parse_numbers(point, 2, "--point"),
        box=parse_numbers(box, 4, "--box"),
        frame=frame,
        multimask=multimask,
        find=find,
    )
    naming = labeler is not None or vocab is not None or find is not None
    spec = PipelineSpec(
        sam=sam,
        ram=ram,
        dtype=dtype,
        settings=settings,
        top_k=top_k,
        labeler=optional_model(LABELER_WEIGHTS, labeler, wanted=naming),
        label_threshold=label_threshold,
        vocabulary=vocab,
        seggpt=optional_model(SEGGPT_WEIGHTS, seggpt, wanted=tracker == "seggpt"),
        sam2=optional_model(SAM2_WEIGHTS, sam2, wanted=tracker == "sam2"),
    )
    spec.load_vocabulary()
    device = check_device(device)
    # Every input opened (format, streams, first frame, sizes) before any model loads.
    readers, failures = {}, 0
    for source in inputs:
        try:
            readers[source] = open_video(source, settings=sampling)
        except InputFileError as error:
            failures += 1
            report(error)
    if not readers:
        raise typer.Exit(code=EXIT_INPUTS)
    pipeline = build_pipeline(spec, device)
    out.mkdir(parents=True, exist_ok=True)
    for source, reader in readers.items():
        try:
            _relate_one(pipeline, source, reader, request, out, write_video=not no_video)
        except (InputFileError, PromptError) as error:
            failures += 1
            report(error)
    if failures:
        raise typer.Exit(code=EXIT_INPUTS)


def _relate_one(pipeline, source: str, reader, request, out: Path, *, write_video: bool) -> None:
    """One input: its graph, timeline and annotated clip (each file complete or absent)."""
    from relate_anything.video.draw import draw_timeline, write_annotated_video

    stem = _stem(source)
    with progress_bar(rate_unit="frames") as bar:
        task = bar.add_task(stem, total=reader.expected_frames)
        run = pipeline.video_run(reader, request, progress=lambda done, total: bar.update(task, completed=done))
        graph = run.result()
    graph.save(out / f"{stem}.json")
    timeline = draw_timeline(graph)
    write_atomically(out / f"{stem}.timeline.png", lambda tmp: timeline.save(tmp, format="PNG"))
    if write_video:
        # A second pass over the clip (a reader decodes again on each iteration): frames are never held.
        frames = (frame.pixels for frame in islice(reader, graph.num_frames))
        write_annotated_video(out / f"{stem}.mp4", frames, graph)
    written = ", ".join(
        f"{stem}{suffix}" for suffix in (".json", ".timeline.png", ".mp4" if write_video else None) if suffix
    )
    stderr.print(
        f"{source}: {graph.num_frames} frames, {len(graph.tracks)} tracks, {len(graph.relations)} relations -> {written}",
        highlight=False,
        markup=False,
    )
    if run.stopped is not None:
        raise run.stopped  # the frames before the damage are written; the error says where it stopped


def _stem(source: str) -> str:
    path = Path(source.rstrip("/"))
    if any(ch in source for ch in "*?["):
        return path.parent.name or "frames"
    return path.stem if path.suffix else path.name
