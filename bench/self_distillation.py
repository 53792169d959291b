"""Does RAM's self-distillation (an EMA teacher's soft targets mixed into the labels) help? (issue 15 item 4)

RAM's recipe softens the labels with the predictions of an exponential moving average of the
student, which is said to help with predicates that overlap ("on" vs "standing on"). This trains
small relation heads with the real trainer (`relate_anything.training.train`) on synthetic feature
caches with deliberately ambiguous predicate pairs under label noise, with and without
self-distillation, and scores them on clean held-out caches.

Data (`training.synthetic_features`): per seed, a rule with 4 unambiguous predicates and 3
ambiguous pairs, (on, standing on), (holding, carrying), (over, flying over): a pair's relation
holds by one rule and a third direction decides which of the two it is (the specific one for
`--specific-rate` of them); in the training cache each such label is flipped to the other
predicate of its pair with probability `--label-noise`. The held-out cache has clean labels.

Training: the trainer's defaults (RAM's recipe: AdamW, weight decay 0.05, 12 epochs, lr x0.1 at
epochs 6 and 10, multi-label CE, gradient clipping at 0.01, EMA decay 0.999) except a small head
(hidden 128, 2 layers, 2 heads, 64-d projections), lr 1e-3 and batch size 8 (the best of
lr 1e-4 / 1e-3 / 3e-3 for the arm without distillation, on a pilot cache of rule seed 0, which is
none of the seeds below; 320 images take 480 steps).
Every arm of a seed trains on the same cache from the same initialisation and data order, so the
differences between arms are paired.

Arms: distill_weight 0 (no self-distillation) and distill_weight x distill_temperature from
`--arms`. Figures: R@K and mR@K (`training.trainer.evaluate`, index-based, over the predicates
present), and mR@K over the 6 ambiguous predicates alone, of the trained head (head.safetensors)
and of its EMA (head_ema.safetensors); mean +- standard deviation over seeds, and each arm's
paired difference from distill_weight 0 with its standard error.

    python bench/self_distillation.py --seeds 5 --jobs 2
    python bench/self_distillation.py --loss bce --arms 0.25:1,0.5:1   # the same with BCE
    python bench/self_distillation.py --seeds 2 --arms 0.25:1 --train-images 48 --val-images 24 --epochs 2  # smoke

The record (bench/records.py; `--json`, default
bench/results/self_distillation-<date>-<device>[-bce].json) has one figures row per arm, for the
trained head: loss, arm, distill_weight, distill_temperature, seeds, train_images, and per figure F
(R@K, mR@K, ambiguous_mR@K; fractions) F (the mean over seeds), F_std, and the paired difference
from distill_weight 0: F_paired_diff (mean), F_paired_diff_std, F_paired_diff_se (standard error);
details holds the settings, the same summary for the EMA heads (summary_ema_head), every run
(runs) and the wall time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from relate_anything.ram import RelationHeadConfig
from relate_anything.training import FeatureCache, TrainConfig, make_synthetic_feature_cache, train
from relate_anything.training.metrics import RECALL_KS, mean_predicate_recall, predicate_recall
from relate_anything.training.trainer import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402

# PSG predicate ids (psg_meta.json): (general, specific).
AMBIGUOUS_PAIRS = ((3, 14), (21, 22), (0, 17))  # on/standing on, holding/carrying, over/flying over
AMBIGUOUS = sorted(p for pair in AMBIGUOUS_PAIRS for p in pair)
HEAD = RelationHeadConfig(
    hidden_size=128,
    num_layers=2,
    num_heads=2,
    intermediate_size=256,
    projection_dim=64,
    vocab_size=2,
    max_position_embeddings=2,
    type_vocab_size=1,
)


def make_caches(root: Path, seed: int, args: argparse.Namespace) -> tuple[Path, Path]:
    """The seed's noisy training cache and clean held-out cache (one rule per seed)."""
    common = dict(
        feature_dim=args.feature_dim,
        active_predicates=4,
        ambiguous_pairs=AMBIGUOUS_PAIRS,
        specific_rate=args.specific_rate,
        rule_seed=seed,
    )
    train_dir, val_dir = root / f"train-{seed}", root / f"val-{seed}"
    make_synthetic_feature_cache(train_dir, images=args.train_images, seed=seed, label_noise=args.label_noise, **common)
    make_synthetic_feature_cache(val_dir, images=args.val_images, seed=10_000 + seed, **common)
    return train_dir, val_dir


def scores(head: torch.nn.Module, val: FeatureCache) -> dict[str, float]:
    """R@K, mR@K (predicates present) and mR@K of the ambiguous predicates only."""
    figures = evaluate(head, val)
    per_image = []
    with torch.no_grad():
        for image in val:
            logits = head.score(image.features)
            recall = predicate_recall(logits, image.relations, RECALL_KS)
            per_image.append({p: r for p, r in (recall or {}).items() if p in AMBIGUOUS})
    ambiguous = mean_predicate_recall(per_image, RECALL_KS)
    return figures | {f"ambiguous_{k}": v for k, v in ambiguous.items()}


def run_one(task: dict) -> dict:
    """Train one arm on one seed (in a worker process, one thread) and score it."""
    torch.set_num_threads(1)
    config = TrainConfig(
        lr=task["lr"],
        batch_size=task["batch_size"],
        epochs=task["epochs"],
        head=HEAD,
        distill_weight=task["distill_weight"],
        distill_temperature=task["distill_temperature"],
        loss=task["loss"],
        seed=task["seed"],
        log=False,
    )
    started = time.perf_counter()
    result = train(task["train_dir"], None, config=config)
    seconds = time.perf_counter() - started
    val = FeatureCache(task["val_dir"], drop_empty=True)
    return {
        "seed": task["seed"],
        "distill_weight": task["distill_weight"],
        "distill_temperature": task["distill_temperature"],
        "train_seconds": seconds,
        "final_loss": result.history[-1]["loss"],
        "head": scores(result.head, val),
        "ema_head": scores(result.ema_head, val),
    }


def arm_name(weight: float, temperature: float) -> str:
    return "distill_weight 0" if weight == 0 else f"distill_weight {weight:g}, T {temperature:g}"


def summarise(runs: list[dict], arms: list[tuple[float, float]], which: str) -> dict:
    """Per arm: mean and std over seeds of every figure, and the paired difference from arm 0."""
    baseline = {r["seed"]: r[which] for r in runs if r["distill_weight"] == 0}
    summary = {}
    for weight, temperature in arms:
        mine = [r for r in runs if (r["distill_weight"], r["distill_temperature"]) == (weight, temperature)]
        entry = {}
        for key in mine[0][which]:
            values = [r[which][key] for r in mine]
            diffs = [r[which][key] - baseline[r["seed"]][key] for r in mine]
            entry[key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "paired_diff_mean": statistics.fmean(diffs),
                "paired_diff_std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                "paired_diff_se": (statistics.stdev(diffs) / len(diffs) ** 0.5) if len(diffs) > 1 else 0.0,
            }
        summary[arm_name(weight, temperature)] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--arms", default="0.25:1,0.5:1,0.25:2,0.5:2", help="distill_weight:temperature, besides 0")
    parser.add_argument("--train-images", type=int, default=320)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--label-noise", type=float, default=0.25)
    parser.add_argument("--specific-rate", type=float, default=0.3)
    parser.add_argument("--feature-dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--loss", default="multi_label_ce", choices=["multi_label_ce", "bce"])
    parser.add_argument("--jobs", type=int, default=2, help="training processes at once (one thread each)")
    records.add_json_option(parser)
    args = parser.parse_args()

    arms = [(0.0, 1.0)] + [tuple(float(x) for x in arm.split(":")) for arm in args.arms.split(",") if arm]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = []
        for seed in range(1, args.seeds + 1):
            train_dir, val_dir = make_caches(Path(tmp), seed, args)
            for weight, temperature in arms:
                tasks.append(
                    dict(
                        seed=seed,
                        distill_weight=weight,
                        distill_temperature=temperature,
                        train_dir=str(train_dir),
                        val_dir=str(val_dir),
                        lr=args.lr,
                        batch_size=args.batch_size,
                        epochs=args.epochs,
                        loss=args.loss,
                    )
                )
        runs = []
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            for run in pool.map(run_one, tasks):
                runs.append(run)
                head = run["head"]
                print(
                    f"seed {run['seed']}  {arm_name(run['distill_weight'], run['distill_temperature']):28s}  "
                    f"mR@20 {head['mR@20']:.3f}  R@20 {head['R@20']:.3f}  ambiguous mR@20 "
                    f"{head['ambiguous_mR@20']:.3f}  ({run['train_seconds']:.0f} s)",
                    flush=True,
                )
    summary_head = summarise(runs, arms, "head")
    print(json.dumps(summary_head, indent=1))
    settings = vars(args) | {"json": None if args.json is None else str(args.json)}
    details = {
        "wall_seconds": time.perf_counter() - started,
        "settings": settings | {"ambiguous_pairs": AMBIGUOUS_PAIRS, "head": HEAD.to_dict()},
        "summary_ema_head": summarise(runs, arms, "ema_head"),
        "runs": runs,
    }
    common = {"loss": args.loss, "seeds": args.seeds, "train_images": args.train_images}
    figures = [
        figure_row(weight, temperature, summary_head[arm_name(weight, temperature)], common)
        for weight, temperature in arms
    ]
    tag = None if args.loss == "multi_label_ce" else args.loss
    records.save("self_distillation", figures, device="cpu", path=args.json, details=details, tag=tag)


def figure_row(weight: float, temperature: float, entry: dict, common: dict) -> dict:
    """One arm's flat figures row from its `summarise` entry (see the docstring for the names)."""
    row = common | {"arm": arm_name(weight, temperature), "distill_weight": weight, "distill_temperature": temperature}
    for key, stats in entry.items():
        row[key] = stats["mean"]
        row[f"{key}_std"] = stats["std"]
        for name in ("mean", "std", "se"):
            row[f"{key}_paired_diff" + ("" if name == "mean" else f"_{name}")] = stats[f"paired_diff_{name}"]
    return row


if __name__ == "__main__":
    main()
