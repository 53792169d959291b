"""The Relate-Anything-Model (RAM) relation head and its post-processing.

head = RelationHead.from_checkpoint("ram_epoch12.pth")   # or our .safetensors
logits = head.score(features)                            # [N, 256] -> [56, N, N]
triplets = relate(logits, top_k=20)                      # best (subject, predicate, object)
"""

from relate_anything.ram.checkpoint import infer_config
from relate_anything.ram.config import RelationHeadConfig
from relate_anything.ram.head import RelationHead
from relate_anything.ram.relate import RankedTriplets, relate

__all__ = ["RankedTriplets", "RelationHead", "RelationHeadConfig", "infer_config", "relate"]
