"""Video building blocks on a CPU: reading (speed, and memory against clip length), the streaming
relation-interval accumulator at 10-minute-clip scale, and annotating 1080p frames.

    python bench/video_io.py
    python bench/video_io.py --clip-seconds 1 --interval-frames 50 --annotate-frames 1   # a smoke run

Clips are synthetic (moving gradients with noise, H.264 from `write_video`), written to a
temporary folder first; their writing is not timed.

The record (bench/records.py; `--json`, default bench/results/video_io-<date>-cpu.json) has one
figures row per measurement, by "what":
- "read": clip_seconds, size, source_fps, sampling_fps (None: every frame), sampled_frames,
  seconds, source_frames_per_second, peak_rss_growth_mb;
- "intervals": frames, tracks, predicates, candidates, add_ms_per_frame, result_seconds,
  held_mb, dense_tensor_mb (the [T, P, N, N] tensor it avoids), relations;
- "annotate": size, tracks, ms_per_frame.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import records  # noqa: E402
from peak_rss import PeakRss, resident_bytes  # noqa: E402
from relate_anything.video.intervals import IntervalAccumulator, IntervalSettings  # noqa: E402
from relate_anything.video.io import SamplingSettings, open_video, write_video  # noqa: E402


def _clip(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (1080, 1920)) -> Path:
    height, width = size
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 24, (height, width, 3), dtype=np.uint8)

    def frames():
        for index in range(int(seconds * fps)):
            shifted = np.roll(ramp, index * 7, axis=1)
            yield (np.broadcast_to(shifted, (height, width, 3)) * 0.8).astype(np.uint8) + noise

    return write_video(path, frames(), fps=fps, crf=28)


def bench_reading(folder: Path, seconds_list: list[float]) -> list[dict]:
    results = []
    for seconds in seconds_list:
        path = _clip(folder / f"clip_{seconds:g}s.mp4", seconds)
        for fps in (5.0, None):
            reader = open_video(path, settings=SamplingSettings(fps=fps))
            before = resident_bytes()
            start = time.perf_counter()
            with PeakRss() as peak:
                count = sum(1 for _ in reader)
            elapsed = time.perf_counter() - start
            results.append(
                {
                    "what": "read",
                    "clip_seconds": seconds,
                    "size": f"{reader.width}x{reader.height}",
                    "source_fps": reader.fps,
                    "sampling_fps": fps,
                    "sampled_frames": count,
                    "seconds": round(elapsed, 2),
                    "source_frames_per_second": round(reader.frame_count / elapsed, 1),
                    "peak_rss_growth_mb": round((peak.peak - before) / 2**20, 1),
                }
            )
            print(results[-1], flush=True)
    return results


def bench_intervals(frames: int = 3000, tracks: int = 50, predicates: int = 56, held: int = 2000) -> dict:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.3, (predicates, tracks, tracks)).astype(np.float32)
    # `held` triplets that come and go (each holds about a third of the time, in long stretches).
    hot = rng.choice(predicates * tracks * tracks, held, replace=False)
    phase = rng.uniform(0, 2 * np.pi, held)
    accumulator = IntervalAccumulator(settings=IntervalSettings())
    ids = list(range(tracks))
    adding = 0.0
    for t in range(frames):
        scores = base.copy()
        scores.reshape(-1)[hot[np.sin(t / 37 + phase) > 0.5]] = 0.8
        start = time.perf_counter()
        accumulator.add(t, ids, scores)
        adding += time.perf_counter() - start
    start = time.perf_counter()
    found = accumulator.result(top_k=100)
    finishing = time.perf_counter() - start
    result = {
        "what": "intervals",
        "frames": frames,
        "tracks": tracks,
        "predicates": predicates,
        "candidates": accumulator.num_candidates,
        "add_ms_per_frame": round(1000 * adding / frames, 2),
        "result_seconds": round(finishing, 2),
        "held_mb": round(accumulator.nbytes / 2**20, 1),
        "dense_tensor_mb": round(frames * predicates * tracks * tracks * 4 / 2**20),
        "relations": len(found),
    }
    print(result, flush=True)
    return result


def bench_annotation(repeats: int = 5) -> dict:
    from relate_anything.video.draw import annotate_frame
    from test_video_draw import synthetic_clip

    frames, graph, _ = synthetic_clip(frames=repeats, height=1080, width=1920)
    start = time.perf_counter()
    for t in range(repeats):
        annotate_frame(frames[t], graph, t)
    result = {
        "what": "annotate",
        "size": "1920x1080",
        "tracks": len(graph.tracks),
        "ms_per_frame": round(1000 * (time.perf_counter() - start) / repeats),
    }
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-seconds", default="10,60", help="lengths of the 1080p30 clips read, comma-separated")
    parser.add_argument("--interval-frames", type=int, default=3000, help="frames fed to the interval accumulator")
    parser.add_argument("--annotate-frames", type=int, default=5, help="1080p frames annotated")
    records.add_json_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        reading = bench_reading(Path(folder), [float(s) for s in args.clip_seconds.split(",")])
    rows = [*reading, bench_intervals(frames=args.interval_frames), bench_annotation(args.annotate_frames)]
    import av

    details = {"pyav": av.__version__, "ffmpeg": getattr(av, "ffmpeg_version_info", None)}
    records.save("video_io", rows, device="cpu", path=args.json, details=details)


if __name__ == "__main__":
    main()
