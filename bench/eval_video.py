"""How fast `relate-anything eval-video` scores a PVSG-validation-sized set.

Synthetic data shaped like PVSG's validation split: 62 videos of 150 sampled frames at 640x480;
per video 4 stuff bands and 16 moving ellipses (20 tracks; things leave and re-enter the frame
and hide one another, so tracks have gaps), 30 ground-truth relations over random frame ranges;
mask PNGs and pvsg.json written as PVSG ships them. Predictions: one VideoSceneGraph JSON per
video with the ground-truth tracks shifted by a few pixels (some small ones then fall below
IoU 0.5), 80% of them with the right class, and 100 ranked relations (the 30 true ones at random
ranks with jittered intervals, 70 random ones).

The timed run is the command itself, in a fresh process, as a user runs it:

    relate-anything eval-video PRED GT --split all --json report.json

with its wall time, its CPU time (user + system, all threads) and the load average around it
(the machine is shared: wall time under load says little, CPU time is the load-independent
figure); then, in this process, its three stages one after the other: reading the
predictions, reading the ground truth (PNG decoding and RLE encoding), scoring.

    python bench/eval_video.py                       # 62 videos x 150 frames, ~2 min to generate
    python bench/eval_video.py --videos 8 --frames 50
    python bench/eval_video.py --data /tmp/pvsg-bench    # generate once, time again later

The record (bench/records.py; `--json`, default bench/results/eval_video-<date>-<device>.json)
has one figures row: videos, frames, size ("WxH"), tracks_per_video, relations,
predicted_relations_per_video, eval_video_wall_s and eval_video_cpu_s (the command's),
load_average_during_run (the 1-minute load average, mean of before and after the command), the
in-process stages' wall and CPU seconds (read_predictions_s, read_predictions_cpu_s,
read_ground_truth_s, read_ground_truth_cpu_s, score_s, score_cpu_s) and the recalls the command
reported (R@K, mR@K, K = 20, 50, 100); details holds the timed command and numpy's version.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from relate_anything import pvsg
from relate_anything.masks import encode_label_map
from relate_anything.video_scene_graph import Track, TrackFrame, VideoInfo, VideoRelation, VideoSceneGraph

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402

STUFF = ("sky", "wall", "grass", "floor")
THINGS = 16
RELATIONS = 30
ROWS = 100


def draw_video(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """Label maps [T, H, W] uint8: bands 1-4, ellipses 5-20 drawn in id order (larger ids nearer)."""
    bands = np.repeat(np.arange(1, 5, dtype=np.uint8), -(-height // 4))[:height]
    radii = rng.uniform(12, 90, (THINGS, 2))
    start = rng.uniform((0, -100), (height, width + 100), (THINGS, 2))
    velocity = rng.uniform(-6, 6, (THINGS, 2))
    maps = np.empty((frames, height, width), dtype=np.uint8)
    for t in range(frames):
        labels = np.repeat(bands[:, None], width, axis=1)
        centres = start + velocity * t
        span = np.array([height, width + 200.0])
        centres = np.abs((centres + [0, 100]) % (2 * span) - span) * [1, 1] - [0, 100]  # bounce, past the edges
        for k, ((cy, cx), (ry, rx)) in enumerate(zip(centres, radii)):
            y0, y1 = int(max(0, cy - ry)), int(min(height, cy + ry + 1))
            x0, x1 = int(max(0, cx - rx)), int(min(width, cx + rx + 1))
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.ogrid[y0:y1, x0:x1]
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            labels[y0:y1, x0:x1][inside] = 5 + k
        maps[t] = labels
    return maps


def tracks_from(maps: np.ndarray, labels: dict[int, str | None]) -> list[Track]:
    per_id: dict[int, list[TrackFrame]] = {i: [] for i in labels}
    for t, frame in enumerate(maps):
        regions = encode_label_map(frame)
        for k, object_id in enumerate(regions.ids.tolist()):
            x0, y0, x1, y1 = (float(v) for v in regions.boxes[k])
            per_id[object_id].append(TrackFrame(t, regions.masks[k], (x0, y0, x1, y1), int(regions.areas[k]), 1.0))
    return [Track(id=i, frames=tuple(per_id[i]), score=1.0, label=labels[i]) for i in labels if per_id[i]]


def random_ranges(rng: np.random.Generator, frames: int) -> list[list[int]]:
    ranges = []
    for _ in range(int(rng.integers(1, 3))):
        start = int(rng.integers(0, frames - 10))
        ranges.append([start, int(min(frames - 1, start + rng.integers(5, frames // 2)))])
    return ranges


def generate(root: Path, pred_dir: Path, *, videos: int, frames: int, height: int, width: int, seed: int) -> int:
    """Write the PVSG folder and the prediction JSONs; return the number of ground-truth relations."""
    rng = np.random.default_rng(seed)
    things = pvsg.thing_classes()
    predicates = pvsg.predicates()
    records, relations_total = [], 0
    pred_dir.mkdir(parents=True, exist_ok=True)
    for index in range(videos):
        video_id = f"{index:04d}_{rng.integers(10**9, 10**10)}"
        maps = draw_video(rng, frames, height, width)
        mask_dir = root / "vidor" / "masks" / video_id
        mask_dir.mkdir(parents=True)
        for t, labels in enumerate(maps):
            Image.fromarray(labels).save(mask_dir / f"{t:04d}.png", compress_level=1)
        present = sorted(int(i) for i in np.unique(maps))
        classes = {i: STUFF[i - 1] if i <= 4 else str(rng.choice(things)) for i in present}
        objects = [{"object_id": i, "category": c, "is_thing": i > 4} for i, c in classes.items()]
        movers = [i for i in present if i > 4]
        truth = []
        for _ in range(RELATIONS):
            subject = int(rng.choice(movers))
            object_ = int(rng.choice([i for i in present if i != subject]))
            truth.append([subject, object_, str(rng.choice(predicates)), random_ranges(rng, frames)])
        relations_total += len(truth)
        records.append(
            {
                "video_id": video_id,
                "meta": {"height": height, "width": width, "fps": 5, "num_frames": frames, "duration": frames / 5},
                "objects": objects,
                "relations": truth,
            }
        )
        # the prediction: shifted masks, mostly right classes, ranked relations
        shift = tuple(int(v) for v in rng.integers(-6, 7, 2))
        shifted = np.roll(maps, shift, axis=(1, 2))
        labels = {i: (c if rng.random() < 0.8 else str(rng.choice(things))) for i, c in classes.items()}
        rows = [
            [int(rng.choice(movers)), int(rng.choice(present)), str(rng.choice(predicates)), random_ranges(rng, frames)]
            for _ in range(ROWS - len(truth))
        ]
        for row in truth:
            jitter = int(rng.integers(-3, 4))
            ranges = [[min(frames - 1, max(0, a + jitter)), min(frames - 1, max(0, b + jitter))] for a, b in row[3]]
            rows.insert(int(rng.integers(0, len(rows) + 1)), [row[0], row[1], row[2], ranges])
        rows = [r for r in rows if r[0] != r[1]]
        relations = [
            VideoRelation(s, p, predicates.index(p), o, 1.0 - k / ROWS, _disjoint(ranges))
            for k, (s, o, p, ranges) in enumerate(rows)
        ]
        video = VideoInfo(
            width=width,
            height=height,
            frame_index=tuple(range(frames)),
            fps=5.0,
            sampled_fps=5.0,
            file=f"{video_id}.mp4",
        )
        graph = VideoSceneGraph(video=video, tracks=tracks_from(shifted, labels), predicates=predicates)
        known = {t.id for t in graph.tracks}
        graph.with_relations([r for r in relations if r.subject in known and r.object in known]).save(
            pred_dir / f"{video_id}.json"
        )
    meta = {
        "objects": {"thing": list(things), "stuff": list(pvsg.stuff_classes())},
        "relations": list(predicates),
        "split": {"vidor": {"train": [], "val": [r["video_id"] for r in records]}},
        "data": records,
    }
    (root / "pvsg.json").write_text(json.dumps(meta))
    return relations_total


def _disjoint(ranges: list[list[int]]) -> tuple[tuple[int, int], ...]:
    covered = sorted({t for a, b in ranges for t in range(a, b + 1)})
    runs: list[list[int]] = []
    for t in covered:
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return tuple((a, b) for a, b in runs)


def stages(pred_dir: Path, root: Path) -> dict[str, float]:
    """The command's three stages, timed in this process."""
    from relate_anything.datasets.pvsg import PvsgDataset
    from relate_anything.evaluation.video import evaluate_video
    from relate_anything.evaluation.video_cli import load_video_graphs

    times = {}
    clocks = time.perf_counter(), time.process_time()
    predictions = load_video_graphs(pred_dir)
    times["read_predictions_s"], times["read_predictions_cpu_s"] = _since(clocks)
    dataset = PvsgDataset(root)
    clocks = time.perf_counter(), time.process_time()
    graphs = list(dataset)
    times["read_ground_truth_s"], times["read_ground_truth_cpu_s"] = _since(clocks)
    clocks = time.perf_counter(), time.process_time()
    evaluate_video(predictions, zip(dataset.video_ids, graphs), categories=dataset.categories)
    times["score_s"], times["score_cpu_s"] = _since(clocks)
    return times


def _since(clocks: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU of every thread of this process) seconds since `clocks`."""
    return time.perf_counter() - clocks[0], time.process_time() - clocks[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=62, help="videos (PVSG val: 62)")
    parser.add_argument("--frames", type=int, default=150, help="sampled frames a video")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="keep the generated set in this folder, reuse it when there")
    records.add_json_option(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp)
        root, pred_dir = data / "pvsg", data / "pred"
        if (root / "pvsg.json").is_file():
            meta = json.loads((root / "pvsg.json").read_text())
            relations = sum(len(v["relations"]) for v in meta["data"])
            args.videos, args.frames = len(meta["data"]), meta["data"][0]["meta"]["num_frames"]
            args.height, args.width = meta["data"][0]["meta"]["height"], meta["data"][0]["meta"]["width"]
            print(f"reusing {root}: {args.videos} videos x {args.frames} frames, {relations} relations")
        else:
            start = time.perf_counter()
            size = {"height": args.height, "width": args.width}
            relations = generate(root, pred_dir, videos=args.videos, frames=args.frames, seed=args.seed, **size)
            seconds = time.perf_counter() - start
            print(f"generated {args.videos} videos x {args.frames} frames, {relations} relations in {seconds:.0f} s")
        report_path = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "relate_anything.cli",
            "eval-video",
            str(pred_dir),
            str(root),
            "--split",
            "all",
        ]
        command += ["--json", str(report_path), "--no-per-predicate"]
        load_before = os.getloadavg()[0]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        load = (load_before + os.getloadavg()[0]) / 2
        report = json.loads(report_path.read_text())
        print(f"eval-video: {wall:.1f} s for {args.videos} videos ({cpu:.1f} CPU s; load average {load:.1f})")
        print(f"  R@20/50/100 = {[round(report['recall'][f'R@{k}'], 3) for k in (20, 50, 100)]}")
        parts = stages(pred_dir, root)
        print("  stages in-process: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))

    figures = {
        "videos": args.videos,
        "frames": args.frames,
        "size": f"{args.width}x{args.height}",
        "tracks_per_video": 4 + THINGS,
        "relations": relations,
        "predicted_relations_per_video": ROWS,
        "eval_video_wall_s": round(wall, 2),
        "eval_video_cpu_s": round(cpu, 2),
        "load_average_during_run": round(load, 2),
        **{k: round(v, 2) for k, v in parts.items()},
        **report["recall"],
    }
    details = {
        "timed_command": "relate-anything eval-video PRED GT --split all --json report.json --no-per-predicate",
        "numpy": np.__version__,
    }
    records.save("eval_video", [figures], device="cpu", path=args.json, details=details)


if __name__ == "__main__":
    main()
