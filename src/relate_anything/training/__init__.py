"""Training the RAM relation head as RAM does: collect SAM features matched to the ground truth
into a resumable cache, then train on it (one GPU or many with torchrun). Or distil: a cache whose
images also hold a teacher's relation logits trains a head for another segmenter's tokens.

    >>> stats = collect(PsgDataset("data/psg", split="train"), segmenter, "feats/train")
    >>> result = train("feats/train", "feats/test", config=TrainConfig(checkpoint_dir=Path("runs/ram")))
    >>> student = train("distill/train", "distill/val", config=TrainConfig(teacher_weight=1.0, teacher_temperature=2.0))
"""

import importlib
from typing import Any

# Exports load on first use (PEP 562): the CLI imports training.cli, which must not pay for torch
# and transformers before `relate-anything --help` can answer.
_EXPORTS = {
    "CacheError": "cache",
    "CachedImage": "cache",
    "FeatureCache": "cache",
    "ImageRecord": "cache",
    "ShardWriter": "cache",
    "CollectStats": "collection",
    "collect": "collection",
    "MaskMatch": "matching",
    "match_masks": "matching",
    "rewrite_relations": "matching",
    "make_synthetic_distillation_cache": "synthetic_features",
    "make_synthetic_feature_cache": "synthetic_features",
    "synthetic_teacher": "synthetic_features",
    "teacher_distillation_loss": "losses",
    "TrainConfig": "trainer",
    "TrainResult": "trainer",
    "evaluate": "trainer",
    "evaluate_agreement": "trainer",
    "train": "trainer",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "CacheError",
    "CachedImage",
    "CollectStats",
    "FeatureCache",
    "ImageRecord",
    "MaskMatch",
    "ShardWriter",
    "TrainConfig",
    "TrainResult",
    "collect",
    "evaluate",
    "evaluate_agreement",
    "make_synthetic_distillation_cache",
    "make_synthetic_feature_cache",
    "match_masks",
    "rewrite_relations",
    "synthetic_teacher",
    "teacher_distillation_loss",
    "train",
]
