"""The video pipeline's speed per tracker and where its time goes; its memory over a long clip (issue 13 item 6).

    python bench/video.py --random tiny --size 320,240 --frames 40 --trackers iou,sam2,seggpt --threads 1  # CPU
    python bench/video.py --random vit_h --bf16 --device cuda --size 1920,1080 --frames 60 \\
        --trackers iou,sam2                                 # the published sizes, random weights
    python bench/video.py --sam facebook/sam-vit-huge --ram ram_epoch12.pth \\
        --sam2 facebook/sam2.1-hiera-tiny --bf16 --device cuda --trackers iou,sam2  # real weights
    python bench/video.py --what memory --random tiny --size 320,240 --frames 3000 --threads 1   # peak RSS

(On this project's 2 shared cores, --threads 1 ran 2-3 times faster than torch's 2 threads in short trials.)

Each run goes through `RelateAnything.video_run` on a synthetic clip (`synthetic_video`, written
with `write_video`, lossy H.264 at `--fps`, every frame sampled) exactly as a user's clip would:
frames decoded ahead in a thread, SAM's encoder on `--encoder-batch` frames at a time, the
tracker, the RAM head on the visible tracks, the interval accumulator, RLE per frame. Nothing in
src is changed: the script wraps the methods each stage calls, on the objects of the run, and
adds their wall time (on CUDA synchronising around each, so a stage owns its kernels):

    decode      next() of the clip's reader, in the decoding thread (overlaps the rest)
    wait        the main thread waiting for decoded frames
    encode      `Segmenter.embed_images` + `set_embedding`
    tracking    `Tracker.update`, of which
      propagate     the tracker's `_propagate` (IoU: SAM prompted with the tracks' boxes; SAM 2:
                    `Sam2VideoTracker.step` (sam2_step) + SAM prompted with its masks' boxes for
                    the tracks' features; SegGPT: its predictions + the same), prompt decodes
                    counted as `prompts`
      keyframes     `Segmenter.segment_everything` on keyframes (every `--keyframe-every` frames)
      rest          matching (Hungarian), conflicts, bookkeeping
    ram_head    the relation head's scores of the visible tracks (`RelateAnything.relation_logits`)
    top_k       the frame's top-k triplets (`RelateAnything.ranked_relations`)
    intervals   `IntervalAccumulator.add` every frame + `result` at the end
    rle         the frame's SceneGraph: masks to RLE, boxes, the tracks' records (`_frame_graph`)
    other       the rest of the wall time (progress, the clip's end, ...)

Two ratios: tracking_share = tracking / the whole wall time; and the target's,
overhead_ratio = (tracking - keyframes + intervals) / (encode + keyframes + ram_head): the
tracker's own cost (propagation, matching) and the temporal aggregation against the SAM + RAM
work a frame needs anyway (the keyframes' segment-everything is the image pipeline's SAM work,
done on 1 frame in `--keyframe-every`). Target: < 0.1.

Random weights (--random) cost what real ones of the same size cost, except for how many masks
survive: the predicted-IoU threshold is set on the clip's first frame so that about `--masks`
masks of the whole grid survive a keyframe (box NMS off; the grid is decoded whole, as with real
weights), and the head's scores decide the accumulator's candidates (an untrained head's reach
the cap of 10,000). `--random tiny` is the tests' tiny encoder at 256 px with a 32-wide prompt
encoder and mask decoder (the published decoder's cost does not shrink with the encoder; see
collect_throughput.random_sam) and a random SAM 2 of the tests' tiny config at 128 px; the
published sizes are vit_b/l/h at 1024 px, 256 wide, and SAM 2's default config (hiera-tiny).
The RAM head is the published size (`RelationHeadConfig()`, its input as wide as SAM's tokens).

--what memory runs one clip of `--frames` frames with one tracker and samples the process's
peak RSS (bench/peak_rss.py; on CUDA also the GPU's allocated bytes) at `--checkpoints` points:
if the run held frames or dense masks, peak RSS would grow by about a frame (W x H x 3 bytes) or
a frame's masks (tracks x W x H bytes) a frame; what must grow is the output (the tracks' RLE
masks) and the accumulator's candidate series (4 bytes x candidates x frames, candidates capped),
both also recorded. The clip is written by a separate process (so its frames are never in this
one): a `--loop`-frame synthetic clip played forwards and backwards until `--frames` frames.

Records (bench/records.py; `--json`): --what speed writes bench "video"
(bench/results/video-<date>-<device>.json), one figures row per tracker: tracker, sam,
tracker_model (SAM 2 or SegGPT; None for iou), dtype, size, frames, points_per_side,
keyframe_every, keyframe_masks (mean), tracks_per_frame (mean), max_tracks, tracks (in the
result), candidates (the accumulator's), seconds, frames_per_s, then per stage `<stage>_ms` (ms a
frame; keyframes_ms too) and keyframe_ms (ms a keyframe), tracking_share, overhead_ratio.
--what memory writes bench "video_memory": one row: tracker, sam, tracker_model, dtype, size,
frames, fps, tracks_per_frame, tracks, seconds, frames_per_s, rss_before_mib (models loaded,
after a warm-up run, before the clip), peak_rss_first_mib (at the first checkpoint,
first_checkpoint_frame), peak_rss_frames_mib (through the last frame), peak_rss_mib (with the
clip's graph built: `result()`), growth_mib_per_1000_frames (of the peak, over
the second half), accumulator_mib, candidates and rle_mib (at the end), frame_mib and
dense_masks_mib (one frame; one frame's masks at the mean track count), peak_gpu_mib (CUDA);
details holds every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # sam_factory, sam2_factory: the tests' random models

import records  # noqa: E402
from collect_throughput import RANDOM_ENCODERS, random_sam  # noqa: E402
from peak_rss import PeakRss, resident_bytes  # noqa: E402
from relate_anything.pipeline import PipelineSpec, RelateAnything  # noqa: E402
from relate_anything.ram import RelationHead, RelationHeadConfig  # noqa: E402
from relate_anything.sam import Segmenter, SegmentSettings  # noqa: E402
from relate_anything.video import pipeline as video_pipeline  # noqa: E402
from relate_anything.video.io import SamplingSettings  # noqa: E402
from relate_anything.video.pipeline import VideoRequest  # noqa: E402
from relate_anything.video.tracking import TrackerSettings  # noqa: E402

STAGES = ("decode", "wait", "encode", "tracking", "propagate", "sam2_step", "prompts", "keyframes")
STAGES += ("ram_head", "top_k", "intervals", "rle")
MIB = 2**20


# ----------------------------------------------------------------------------------------------
# Models


def build_pipeline(args: argparse.Namespace, settings: SegmentSettings, trackers: list[str]) -> RelateAnything:
    """Real weights by reference (--sam/--ram/--sam2/--seggpt) or random ones of a size (--random);
    SAM 2 and SegGPT only for the trackers that use them."""
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    if args.sam:
        spec = PipelineSpec(
            sam=args.sam, ram=args.ram, sam2=args.sam2, seggpt=args.seggpt, dtype=str(dtype).removeprefix("torch.")
        )
        return dataclasses.replace(spec, settings=settings).build(args.device)
    tiny = args.random == "tiny"
    model = random_sam(args.random, args.device, dtype, 256 if tiny else 1024, width=32 if tiny else 256)
    segmenter = Segmenter(model, settings=settings)
    torch.manual_seed(0)
    head = RelationHead(RelationHeadConfig(feature_dim=segmenter.feature_dim)).to(args.device).eval()
    return RelateAnything(
        segmenter,
        head,
        settings=settings,
        video_tracker=random_sam2(args, dtype) if "sam2" in trackers else None,
        example_segmenter=random_seggpt(args) if "seggpt" in trackers else None,
    )


def random_sam2(args: argparse.Namespace, dtype: torch.dtype):
    """A random SAM 2 video tracker (the tests' tiny one for --random tiny, else SAM 2's default
    config, hiera-tiny) that calls every tracked object present (the object-score bias)."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    from relate_anything.video.sam2 import Sam2VideoTracker
    from sam2_factory import random_sam2_video

    if args.random == "tiny":
        model = random_sam2_video()
    else:
        torch.manual_seed(0)
        model = Sam2VideoModel(Sam2VideoConfig()).eval()
        with torch.no_grad():
            model.mask_decoder.pred_obj_score_head.proj_out.weight.mul_(0.01)
            model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(8.0)
    return Sam2VideoTracker(model.to(args.device, dtype))


def random_seggpt(args: argparse.Namespace):
    """A random SegGPT: the tests' tiny one for --random tiny, else the default config (ViT-L)."""
    from transformers import SegGptConfig, SegGptForImageSegmentation

    from relate_anything.seggpt import ExampleSegmenter
    from seggpt_factory import random_seggpt as tiny_seggpt

    if args.random == "tiny":
        model = tiny_seggpt()
    else:
        torch.manual_seed(0)
        model = SegGptForImageSegmentation(SegGptConfig()).eval()
    return ExampleSegmenter(model.to(args.device))


def calibrated_settings(pipeline: RelateAnything, frame: np.ndarray, args: argparse.Namespace) -> SegmentSettings:
    """Settings that keep about `--masks` masks of the whole `--points-per-side` grid on `frame`
    (random weights: the predicted-IoU threshold at that quantile, box NMS off)."""
    settings = SegmentSettings(
        points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    segmenter = pipeline.segmenter
    with torch.inference_mode():
        segmenter.set_image(frame)
        scores = segmenter.segment_everything(settings=settings).iou_predictions.float().sort(descending=True).values
    segmenter.reset_image()
    if len(scores) > args.masks:
        settings = settings.replace(pred_iou_thresh=min(max(float(scores[args.masks - 1]), 0.0), 1.0))
    return settings


# ----------------------------------------------------------------------------------------------
# Timing


class Stopwatch:
    """Seconds and calls per stage name, added up by the wrappers `wrap` puts around methods."""

    def __init__(self, device: str) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.sizes: dict[str, list[int]] = defaultdict(list)  # len() of what a stage returned
        self.cuda = device.startswith("cuda")

    def wrap(self, owner: object, method: str, stage: str, *, count: bool = False) -> None:
        """Time `owner.method` (an instance attribute shadowing the class's method); with `count`,
        keep the length of each result too."""
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            self._sync()
            started = time.perf_counter()
            try:
                result = original(*args, **kwargs)
            finally:
                self._sync()
                self.seconds[stage] += time.perf_counter() - started
                self.calls[stage] += 1
            if count:
                self.sizes[stage].append(len(result))
            return result

        setattr(owner, method, timed)

    def iterate(self, items, stage: str) -> Iterator:
        """`items` with the time of each next() added to `stage`."""
        iterator = iter(items)
        while True:
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.seconds[stage] += time.perf_counter() - started
            yield item

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class _TimedFrames:
    """The clip's reader, its frames timed in whichever thread iterates them."""

    def __init__(self, reader, stopwatch: Stopwatch) -> None:
        self.reader, self.stopwatch = reader, stopwatch
        self.expected_frames = getattr(reader, "expected_frames", None)

    def __iter__(self) -> Iterator:
        return self.stopwatch.iterate(self.reader, "decode")


def instrumented_run(pipeline: RelateAnything, clip: Path, request: VideoRequest, stopwatch: Stopwatch, progress=None):
    """`pipeline.video_run(clip, request)` with every stage's methods wrapped (see the docstring)."""
    run = pipeline.video_run(clip, request, progress=progress)
    run._frames = _TimedFrames(run._frames, stopwatch)
    for owner, method, stage in (
        (run.tracker, "update", "tracking"),
        (run.tracker, "_propagate", "propagate"),
        (run, "_frame_graph", "rle"),
        (run._accumulator, "add", "intervals"),
        (run._accumulator, "result", "intervals"),
    ):
        stopwatch.wrap(owner, method, stage)
    return run


class _Wrapped:
    """Wraps the shared models' methods for the length of a block, then restores them (the
    warm-up and the timed runs use the same pipeline)."""

    def __init__(self, pipeline: RelateAnything, stopwatch: Stopwatch) -> None:
        self.pipeline, self.stopwatch = pipeline, stopwatch

    def __enter__(self) -> _Wrapped:
        segmenter, watch = self.pipeline.segmenter, self.stopwatch
        self._wrapped = [
            (segmenter, "embed_images", "encode"),
            (segmenter, "set_embedding", "encode"),
            (segmenter, "segment_everything", "keyframes"),
            (segmenter, "segment_prompts", "prompts"),
            (self.pipeline, "relation_logits", "ram_head"),
            (self.pipeline, "ranked_relations", "top_k"),
        ]
        if self.pipeline.video_tracker is not None:
            self._wrapped.append((self.pipeline.video_tracker, "step", "sam2_step"))
        for owner, method, stage in self._wrapped:
            watch.wrap(owner, method, stage, count=stage == "keyframes")
        # The main thread's waits for decoded frames: around the pipeline's prefetching iterator.
        self._ahead = video_pipeline.iterated_ahead
        video_pipeline.iterated_ahead = lambda items, **kw: watch.iterate(self._ahead(items, **kw), "wait")
        return self

    def __exit__(self, *exc) -> None:
        for owner, method, _ in self._wrapped:
            vars(owner).pop(method, None)  # the class's method again
        video_pipeline.iterated_ahead = self._ahead


# ----------------------------------------------------------------------------------------------
# Clips


def write_clip(path: str, frames: int, loop: int, width: int, height: int, fps: float, seed: int) -> None:
    """A synthetic clip of `frames` frames: `loop` frames of `synthetic_video` played forwards
    then backwards, again and again (run in a separate process: its frames stay there)."""
    from relate_anything.datasets.synthetic_video import synthetic_video
    from relate_anything.video.io import write_video

    _, base = synthetic_video(np.random.default_rng(seed), frames=min(loop, frames), size=(width, height))
    cycle = np.concatenate([np.arange(len(base)), np.arange(len(base) - 2, 0, -1)]) if len(base) > 2 else [0, 1]
    order = (cycle[k % len(cycle)] for k in range(frames))
    write_video(path, (base[i] for i in order), fps=fps)


def make_clip(folder: Path, args: argparse.Namespace) -> Path:
    path = folder / "clip.mp4"
    width, height = args.size
    options = (str(path), args.frames, args.loop, width, height, args.fps, args.seed)
    process = multiprocessing.get_context("spawn").Process(target=write_clip, args=options)
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"writing the synthetic clip failed (exit {process.exitcode})")
    return path


def first_frame(path: Path) -> np.ndarray:
    from relate_anything.video.io import open_video

    return next(iter(open_video(path, settings=SamplingSettings(fps=None, max_frames=1)))).pixels


# ----------------------------------------------------------------------------------------------
# The two measurements


def request_for(args: argparse.Namespace, tracker: str, settings: SegmentSettings, **sampling) -> VideoRequest:
    return VideoRequest(
        tracker=tracker,
        sampling=SamplingSettings(fps=None, **sampling),
        tracking=TrackerSettings(keyframe_every=args.keyframe_every),
        settings=settings,
        encoder_batch=args.encoder_batch,
    )


def measure_speed(pipeline, clip: Path, settings: SegmentSettings, tracker: str, args) -> dict:
    """One tracker over the clip after a warm-up run of `--warmup` frames: the figures row."""
    warm = Stopwatch(args.device)
    with _Wrapped(pipeline, warm):
        instrumented_run(pipeline, clip, request_for(args, tracker, settings, max_frames=args.warmup), warm).result()
    pipeline.segmenter.reset_image()  # no frame of the warm-up cached (embedding, segment-everything)
    watch = Stopwatch(args.device)
    counts: list[int] = []
    with _Wrapped(pipeline, watch):
        watch._sync()
        started = time.perf_counter()
        run = instrumented_run(pipeline, clip, request_for(args, tracker, settings), watch)
        for graph in run:
            counts.append(len(graph.segments))
        graph = run.result()
        watch._sync()
        seconds = time.perf_counter() - started
    frames = graph.num_frames
    stage = {name: watch.seconds.get(name, 0.0) for name in STAGES}
    main_thread = ("wait", "encode", "tracking", "ram_head", "top_k", "intervals", "rle")
    stage["other"] = seconds - sum(stage[name] for name in main_thread)
    keyframes = max(watch.calls.get("keyframes", 0), 1)
    sam_and_ram = stage["encode"] + stage["keyframes"] + stage["ram_head"]
    row = {
        "tracker": tracker,
        **describe_models(args, tracker),
        "size": f"{graph.width}x{graph.height}",
        "frames": frames,
        "points_per_side": settings.points_per_side,
        "keyframe_every": args.keyframe_every,
        "keyframe_masks": float(np.mean(watch.sizes["keyframes"])) if watch.sizes["keyframes"] else None,
        "tracks_per_frame": float(np.mean(counts)) if counts else 0.0,
        "max_tracks": max(counts, default=0),
        "tracks": len(graph.tracks),
        "candidates": run._accumulator.num_candidates,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
    }
    row |= {f"{name}_ms": 1000 * value / frames for name, value in stage.items()}
    row["keyframe_ms"] = 1000 * stage["keyframes"] / keyframes
    row["tracking_share"] = stage["tracking"] / seconds
    row["overhead_ratio"] = (stage["tracking"] - stage["keyframes"] + stage["intervals"]) / sam_and_ram
    return row


def measure_memory(pipeline, clip: Path, settings: SegmentSettings, tracker: str, args) -> tuple[dict, list[dict]]:
    """Peak RSS (and GPU memory) at checkpoints through one long clip: the row and the checkpoints."""
    cuda = args.device.startswith("cuda")
    every = max(1, args.frames // args.checkpoints)
    checkpoints: list[dict] = []
    state: dict = {}

    def progress(done: int, expected: int | None) -> None:
        if done % every and done != expected:
            return
        run = state["run"]
        rle = sum(len(item.mask["counts"]) for record in run._records.values() for item in record.frames)
        checkpoints.append(
            {
                "frame": done,
                "seconds": round(time.perf_counter() - state["started"], 2),
                "rss_mib": round(resident_bytes() / MIB, 1),
                "peak_rss_mib": round(state["peak"].peak / MIB, 1),
                "gpu_allocated_mib": round(torch.cuda.memory_allocated() / MIB, 1) if cuda else None,
                "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / MIB, 1) if cuda else None,
                "accumulator_mib": round(run._accumulator.nbytes / MIB, 2),
                "candidates": run._accumulator.num_candidates,
                "tracks": len(run._records),
                "rle_mib": round(rle / MIB, 2),
            }
        )
        print(checkpoints[-1], file=sys.stderr, flush=True)

    warm = Stopwatch(args.device)
    with _Wrapped(pipeline, warm):
        instrumented_run(pipeline, clip, request_for(args, tracker, settings, max_frames=args.warmup), warm).result()
    pipeline.segmenter.reset_image()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resident_bytes()
    counts: list[int] = []
    with PeakRss() as peak:
        state |= {"peak": peak, "started": time.perf_counter()}
        run = state["run"] = pipeline.video_run(clip, request_for(args, tracker, settings), progress=progress)
        for graph in run:
            counts.append(len(graph.segments))
        graph = run.result()
        seconds = time.perf_counter() - state["started"]
    half = [c for c in checkpoints if c["frame"] >= checkpoints[-1]["frame"] / 2]
    growth = (half[-1]["peak_rss_mib"] - half[0]["peak_rss_mib"]) / max(half[-1]["frame"] - half[0]["frame"], 1)
    width, height = graph.width, graph.height
    row = {
        "tracker": tracker,
        **describe_models(args, tracker),
        "size": f"{width}x{height}",
        "frames": graph.num_frames,
        "fps": args.fps,
        "tracks_per_frame": float(np.mean(counts)),
        "tracks": len(graph.tracks),
        "seconds": seconds,
        "frames_per_s": graph.num_frames / seconds,
        "rss_before_mib": rss_before / MIB,
        "peak_rss_first_mib": checkpoints[0]["peak_rss_mib"],
        "first_checkpoint_frame": checkpoints[0]["frame"],
        "peak_rss_frames_mib": checkpoints[-1]["peak_rss_mib"],  # through the last frame
        "peak_rss_mib": peak.peak / MIB,  # with the clip's graph built (`result()`)
        "growth_mib_per_1000_frames": 1000 * growth,
        "accumulator_mib": checkpoints[-1]["accumulator_mib"],
        "candidates": checkpoints[-1]["candidates"],
        "rle_mib": checkpoints[-1]["rle_mib"],
        "frame_mib": width * height * 3 / MIB,
        "dense_masks_mib": float(np.mean(counts)) * width * height / MIB,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / MIB if cuda else None,
    }
    return row, checkpoints


def describe_models(args: argparse.Namespace, tracker: str) -> dict:
    """sam, tracker_model (the tracker's own model: SAM 2, SegGPT, none) and dtype of a row."""
    dtype = "bfloat16" if args.bf16 else "float32"
    if args.sam:
        sam, helpers = args.sam, {"sam2": args.sam2, "seggpt": args.seggpt}
    elif args.random == "tiny":
        sam = "random tiny at 256 px, 32-wide decoder"
        helpers = {"sam2": "random tiny SAM 2 at 128 px", "seggpt": "random tiny SegGPT"}
    else:
        sam = f"random {args.random}"
        helpers = {"sam2": "random SAM 2 hiera-tiny (default config)", "seggpt": "random SegGPT ViT-L (default config)"}
    return {"sam": sam, "tracker_model": helpers.get(tracker), "dtype": dtype}


# ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=("speed", "memory"), default="speed")
    parser.add_argument("--sam", help="SAM weights (hub id, folder or sam_vit_*.pth); with --ram")
    parser.add_argument("--ram", help="RAM head weights (with --sam)")
    parser.add_argument("--sam2", help="SAM 2 video weights for the sam2 tracker (with --sam)")
    parser.add_argument("--seggpt", help="SegGPT weights for the seggpt tracker (with --sam)")
    parser.add_argument("--random", choices=sorted(RANDOM_ENCODERS), help="random models of this size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="SAM (and SAM 2) in bfloat16")
    parser.add_argument("--trackers", default="iou,sam2", help="iou, sam2, seggpt, comma-separated; memory: the first")
    parser.add_argument("--size", default="320,240", help="the clip's width,height")
    parser.add_argument("--frames", type=int, default=40, help="sampled frames of the timed clip")
    parser.add_argument("--fps", type=float, default=5.0, help="the clip's frame rate (every frame is sampled)")
    parser.add_argument("--loop", type=int, default=150, help="distinct synthetic frames, played back and forth")
    parser.add_argument("--warmup", type=int, default=3, help="frames of the untimed warm-up run")
    parser.add_argument("--points-per-side", type=int, default=None, help="keyframe grid (default: 32, CPU tiny 8)")
    parser.add_argument("--masks", type=int, default=30, help="random weights: masks a keyframe keeps (about)")
    parser.add_argument("--keyframe-every", type=int, default=TrackerSettings().keyframe_every)
    parser.add_argument("--encoder-batch", type=int, default=VideoRequest().encoder_batch)
    parser.add_argument("--checkpoints", type=int, default=10, help="memory: RSS samples through the clip")
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    records.add_json_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.sam is None) == (args.random is None) or (args.sam is None) != (args.ram is None):
        parser.error("give --sam and --ram (and --sam2 for the sam2 tracker), or --random")
    args.size = tuple(int(v) for v in args.size.split(","))
    if args.points_per_side is None:
        args.points_per_side = 8 if args.random == "tiny" else 32
    trackers = [name for name in args.trackers.split(",") if name]
    if args.what == "memory":
        trackers = trackers[:1]

    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp), args)
        settings = SegmentSettings(points_per_side=args.points_per_side)
        pipeline = build_pipeline(args, settings, trackers)
        if args.random:
            settings = calibrated_settings(pipeline, first_frame(clip), args)
        if args.what == "speed":
            rows = []
            for tracker in trackers:
                rows.append(measure_speed(pipeline, clip, settings, tracker, args))
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
            details = {"settings": dataclasses.asdict(settings), "warmup": args.warmup, "loop": args.loop}
            records.save("video", rows, device=args.device, path=args.json, details=details)
        else:
            row, checkpoints = measure_memory(pipeline, clip, settings, trackers[0], args)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            details = {"settings": dataclasses.asdict(settings), "checkpoints": checkpoints, "loop": args.loop}
            records.save("video_memory", [row], device=args.device, path=args.json, details=details)


if __name__ == "__main__":
    main()
