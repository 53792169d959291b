"""Relation-head training throughput at PSG scale, on synthetic features.

PSG has ~46k training images with up to ~100 SAM masks each. This times the real training step
(the same collate, loss, AdamW, gradient clipping and EMA update as `relate_anything.training`)
of the full-size head (the published RAM shape) on random features and relations, and
extrapolates the time of one epoch. Images are drawn from a pool built once (features on the CPU,
as the cache gives them, padded per batch by `collate` and copied to the device), so the figures
include the host-side batching.

    python bench/train_throughput.py --device cuda --batch-sizes 4,16 --seconds 20
    python bench/train_throughput.py --device cpu --batch-sizes 2 --seconds 2 --warmup 1 --pool 8   # a smoke run

The record (bench/records.py; `--json`, default bench/results/train_throughput-<date>-<device>.json)
has one figures row per batch size: batch_size, amp_bf16, loss, masks_per_image ([min, max]),
relations_per_image, steps, seconds, images_per_s, ms_per_step, epoch_images, epoch_hours and,
on CUDA, peak_memory_gib.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from relate_anything.ram import RelationHead, RelationHeadConfig
from relate_anything.training.cache import CachedImage
from relate_anything.training.trainer import _Ema, collate, relation_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402


def make_pool(size: int, *, min_masks: int, max_masks: int, relations: int, seed: int) -> list[CachedImage]:
    gen = torch.Generator().manual_seed(seed)
    pool = []
    for k in range(size):
        n = int(torch.randint(min_masks, max_masks + 1, (1,), generator=gen))
        subjects = torch.randint(0, n, (relations,), generator=gen)
        objects = (subjects + torch.randint(1, n, (relations,), generator=gen)) % n  # never a self-pair
        predicates = torch.randint(0, 56, (relations,), generator=gen)
        features = torch.randn(n, 256, generator=gen).half().float()
        pool.append(CachedImage(f"bench-{k}", features, torch.stack([subjects, objects, predicates], 1), n))
    return pool


def time_config(
    pool, *, batch_size: int, device: torch.device, amp: bool, loss: str, seconds: float, warmup: int
) -> dict:
    torch.manual_seed(0)
    head = RelationHead(RelationHeadConfig()).to(device).train()
    head.model.embeddings.word_embeddings.requires_grad_(False)
    head.model.pooler.requires_grad_(False)
    trained = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.05, fused=device.type == "cuda")
    ema = _Ema(head, 0.999)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")

    def step(k: int) -> None:
        images = [pool[(k * batch_size + b) % len(pool)] for b in range(batch_size)]
        batch = collate(images).to(device)
        with autocast:
            logits = head(batch.features, batch.padding_mask)
        loss_value = relation_loss(logits, batch.targets(56), batch.valid_pairs(), loss)
        optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        torch.nn.utils.clip_grad_norm_(trained, 0.01)
        optimizer.step()
        ema.update(head, k)

    for k in range(warmup):
        step(k)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step(warmup + steps)
        steps += 1
        if steps % 10 == 0 and device.type == "cuda":
            torch.cuda.synchronize()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    result = {
        "batch_size": batch_size,
        "steps": steps,
        "seconds": elapsed,
        "images_per_s": steps * batch_size / elapsed,
        "ms_per_step": 1000 * elapsed / steps,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="4,16")
    parser.add_argument("--epoch-images", type=int, default=46_000, help="images per epoch to extrapolate to")
    parser.add_argument("--min-masks", type=int, default=20)
    parser.add_argument("--max-masks", type=int, default=100)
    parser.add_argument("--relations", type=int, default=20, help="relations per image")
    parser.add_argument("--pool", type=int, default=1024, help="distinct synthetic images, cycled")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per batch size")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--loss", default="multi_label_ce", choices=["multi_label_ce", "bce"])
    parser.add_argument("--no-amp", action="store_true")
    records.add_json_option(parser)
    args = parser.parse_args()

    device = torch.device(args.device)
    pool = make_pool(args.pool, min_masks=args.min_masks, max_masks=args.max_masks, relations=args.relations, seed=0)
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        result = time_config(
            pool,
            batch_size=batch_size,
            device=device,
            amp=not args.no_amp,
            loss=args.loss,
            seconds=args.seconds,
            warmup=args.warmup,
        )
        row = {
            "batch_size": batch_size,
            "amp_bf16": not args.no_amp and device.type == "cuda",
            "loss": args.loss,
            "masks_per_image": [args.min_masks, args.max_masks],
            "relations_per_image": args.relations,
            **{name: value for name, value in result.items() if name != "batch_size"},
            "epoch_images": args.epoch_images,
            "epoch_hours": args.epoch_images / result["images_per_s"] / 3600,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    details = {"pool": args.pool, "warmup": args.warmup}
    records.save("train_throughput", rows, device=device, path=args.json, details=details)


if __name__ == "__main__":
    main()
