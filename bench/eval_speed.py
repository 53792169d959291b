"""How fast `relate_anything.evaluation.evaluate` scores a PSG-test-sized set of scene graphs.

Synthetic data shaped like PSG test predictions: 2,177 images of 640x480; per image ~20
ground-truth segments tiling the image (a Voronoi partition: panoptic, no overlap, no void),
~6 ground-truth relations; 30 predicted segments (20 jittered copies of ground-truth segments,
mostly with the right label, plus 10 random ellipses, overlapping freely) and 100 ranked rows,
some of which are correct triplets. Masks are stored as RLE, as in every SceneGraph. The masks
come from a pool of distinct images (default 64) reused with fresh labels and relations, since
drawing 2,177 full-size partitions takes longer than scoring them; the evaluator caches nothing
between images, so reuse does not flatter the timing.

    python bench/eval_speed.py                  # 2177 images
    python bench/eval_speed.py --images 200     # quicker

Prints the wall time and images/s of the full `evaluate` (SGDet R@K/mR@K, the
one-mask-per-object variant and PQ), and of recall alone and PQ alone.

The record (bench/records.py; `--json`, default bench/results/eval_speed-<date>-cpu.json) has one
figures row per measurement: what, images, seconds, images_per_s; details holds the recalls and
PQ of the full run (the same on every machine for the same seed) and numpy's version.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from relate_anything import psg
from relate_anything.evaluation import evaluate, panoptic_quality, triplet_recall
from relate_anything.scene_graph import Relation, SceneGraph

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402

HEIGHT, WIDTH = 480, 640


def make_pool(
    rng: np.random.Generator, size: int, *, gt_segments: int, pred_segments: int
) -> list[tuple[SceneGraph, SceneGraph]]:
    """`size` (ground truth, prediction) pairs of segment sets, without labels or relations."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
    pool = []
    for _ in range(size):
        seeds = rng.uniform((0, 0), (HEIGHT, WIDTH), (gt_segments, 2)).astype(np.float32)
        distance = (yy[None] - seeds[:, :1, None]) ** 2 + (xx[None] - seeds[:, 1:, None]) ** 2
        owner = distance.argmin(0)
        gt_masks = owner[None] == np.arange(gt_segments)[:, None, None]
        copies = min(gt_segments, pred_segments)
        jittered = np.stack([np.roll(m, tuple(rng.integers(-8, 9, 2)), axis=(0, 1)) for m in gt_masks[:copies]])
        centres = rng.uniform((0, 0), (HEIGHT, WIDTH), (pred_segments - copies, 2))
        radii = rng.uniform(15, 150, (pred_segments - copies, 2))
        ellipses = ((yy[None] - centres[:, :1, None]) / radii[:, :1, None]) ** 2 + (
            (xx[None] - centres[:, 1:, None]) / radii[:, 1:, None]
        ) ** 2 < 1
        pred_masks = np.concatenate([jittered, ellipses])
        gt = SceneGraph.from_masks(gt_masks, np.ones(gt_segments))
        pred = SceneGraph.from_masks(pred_masks, rng.random(pred_segments))
        pool.append((gt, pred))
    return pool


def make_image(
    rng: np.random.Generator, index: int, gt: SceneGraph, pred: SceneGraph, *, gt_relations: int, rows: int
) -> tuple[SceneGraph, SceneGraph]:
    """Label a pooled pair and give it ground-truth relations and ranked predicted rows."""
    categories, predicates = psg.categories(), psg.predicates()
    gt_labels = rng.choice(len(categories), len(gt.segments))
    gt_segments = [replace(s, label=categories[c]) for s, c in zip(gt.segments, gt_labels)]
    pred_segments = []
    for i, segment in enumerate(pred.segments):
        right = i < len(gt.segments) and rng.random() < 0.8
        label = categories[gt_labels[i]] if right else categories[rng.integers(len(categories))]
        pred_segments.append(replace(segment, label=label))

    def relation(s: int, o: int, p: int, score: float) -> Relation:
        return Relation(subject=s, predicate=predicates[p], predicate_id=p, object=o, score=score)

    n_gt = len(gt.segments)
    pairs = [rng.choice(n_gt, 2, replace=False) for _ in range(gt_relations)]
    truth = [relation(int(s), int(o), int(rng.integers(len(predicates))), 1.0) for s, o in pairs]
    ranked = []
    for _ in range(rows):
        s, o = rng.choice(len(pred_segments), 2, replace=False)
        ranked.append(relation(int(s), int(o), int(rng.integers(len(predicates))), 0.0))
    for t in truth[: gt_relations // 2]:  # half the ground truth is predicted, at a random rank
        ranked[rng.integers(rows)] = relation(t.subject, t.object, t.predicate_id, 0.0)  # copies share ids 0..n_gt-1
    ranked = [replace(r, score=1.0 - k / rows) for k, r in enumerate(ranked)]
    name = f"val2017/{index:012d}.jpg"
    gt_graph = replace(gt, segments=gt_segments, relations=truth, file=name, image_id=str(index))
    pred_graph = replace(pred, segments=pred_segments, relations=ranked, file=name, image_id=str(index))
    return gt_graph, pred_graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2177, help="images to score (PSG test: 2177)")
    parser.add_argument("--pool", type=int, default=64, help="distinct mask sets to draw")
    parser.add_argument("--seed", type=int, default=0)
    records.add_json_option(parser)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    pool = make_pool(rng, min(args.pool, args.images), gt_segments=20, pred_segments=30)
    pairs = [make_image(rng, i, *pool[i % len(pool)], gt_relations=6, rows=100) for i in range(args.images)]
    gts, preds = [g for g, _ in pairs], [p for _, p in pairs]
    print(f"generated {args.images} images ({len(pool)} distinct mask sets) in {time.perf_counter() - start:.1f} s")

    rows, details = [], {"numpy": np.__version__, "pool": len(pool), "seed": args.seed}
    for name, run in (
        ("full evaluate (SGDet R@K/mR@K, one-mask-per-object variant, PQ)", lambda: evaluate(preds, gts)),
        ("recall only (SGDet)", lambda: triplet_recall(preds, gts)),
        ("PQ only", lambda: panoptic_quality(preds, gts)),
    ):
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        rows.append({"what": name, "images": args.images, "seconds": seconds, "images_per_s": args.images / seconds})
        print(f"{name:34s} {seconds:6.2f} s  {args.images / seconds:8.1f} images/s")
        if isinstance(result, dict) and "sgdet" in result:
            details["recall"] = {f"R@{k}": result["sgdet"][f"R@{k}"] for k in (20, 50, 100)}
            details["pq"] = result["pq"]["PQ"]
            print(f"  R@20/50/100 = {[round(v, 3) for v in details['recall'].values()]}, PQ = {details['pq']:.3f}")
    records.save("eval_speed", rows, device="cpu", path=args.json, details=details)


if __name__ == "__main__":
    main()
