"""Training the RAM relation head as RAM does: collect SAM features matched to the ground truth
into a resumable cache, then train on it (one GPU or many with torchrun).

    >>> stats = collect(PsgDataset("data/psg", split="train"), segmenter, "feats/train")
    >>> result = train("feats/train", "feats/test", config=TrainConfig(checkpoint_dir=Path("runs/ram")))
"""

from relate_anything.training.cache import CachedImage, CacheError, FeatureCache, ImageRecord, ShardWriter
from relate_anything.training.collect import CollectStats, collect
from relate_anything.training.matching import MaskMatch, mask_ious, match_masks, rewrite_relations
from relate_anything.training.synthetic_features import make_synthetic_feature_cache
from relate_anything.training.train import TrainConfig, TrainResult, evaluate, train

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
    "make_synthetic_feature_cache",
    "mask_ious",
    "match_masks",
    "rewrite_relations",
    "train",
]
