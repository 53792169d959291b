"""The Relate-Anything-Model (RAM) relation head: mask features in, relation scores out.

RAM (MMLab@NTU, 2023) scores every (subject mask, predicate, object mask) triplet of an image
from the 256-d SAM mask-decoder token of each mask. The architecture follows the authors'
`RamModel` (ram_train_eval.py) so that their published `ram_epoch12.pth` loads unchanged:

    x = LayerNorm(Linear(f))                      fc_input   (256 -> 768, torch's default eps 1e-5)
    x = BERT embeddings(inputs_embeds=x)          every position id 1, token type 0
    x = BERT encoder, 2 layers                    12 heads, GELU, LayerNorm eps 1e-12
    x = LayerNorm(Linear(x))                      fc_output  (768 -> 768, eps 1e-5)
    s, o = cls_sub(x), cls_obj(x)                 one 512-d vector per predicate, each
    score[r, i, j] = s[i, r] . o[j, r] / sqrt(512)

The BERT part is transformers' `BertModel`, so the state-dict keys under `model.` are exactly
the published ones (word embeddings and pooler are stored but unused by the head).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import BertModel

from relate_anything.ram import checkpoint
from relate_anything.ram.checkpoint import LEGACY_POSITION_IDS_KEY
from relate_anything.ram.config import RelationHeadConfig


class RelationHead(nn.Module):
    """RAM's relation head: scores every (subject, predicate, object) triplet of an image's masks.

    Args:
        config: the head's shape; defaults to the published checkpoint's.
        attn_implementation: transformers attention backend, "sdpa" (default) or "eager"; both
            compute the same function.

    Weights are random until loaded, e.g. with `RelationHead.from_checkpoint(path)`, which also
    puts the head in eval mode (the authors' demo ran in train mode, with dropout active).
    """

    def __init__(self, config: RelationHeadConfig | None = None, *, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.config = config = config or RelationHeadConfig()
        # Attribute names and order give the published state-dict keys in the authors' order.
        self.fc_input = nn.Sequential(
            nn.Linear(config.feature_dim, config.hidden_size),
            nn.LayerNorm(config.hidden_size, eps=config.fc_layer_norm_eps),
        )
        self.fc_output = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.LayerNorm(config.hidden_size, eps=config.fc_layer_norm_eps),
        )
        self.model = BertModel(config.bert_config(attn_implementation))
        projected = config.num_predicates * config.projection_dim
        self.cls_sub = nn.Linear(config.hidden_size, projected)
        self.cls_obj = nn.Linear(config.hidden_size, projected)
        self.register_load_state_dict_pre_hook(_drop_legacy_position_ids)

    def forward(self, features: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Relation logits for a batch of images.

        Args:
            features: [B, N, feature_dim] float, one row per mask (N masks, padded per batch).
                Cast to the head's dtype.
            padding_mask: [B, N] bool, True for real masks, False for padding. Padded masks do not
                influence the scores of real ones. None means all masks are real.

        Returns:
            [B, num_predicates, N, N] raw logits; `[b, r, i, j]` scores "mask i <predicate r> mask j".
            Entries involving padded masks are finite but meaningless; self-pairs (i, i) are
            scored too and excluded later by `relate`.
        """
        batch, num_masks, _ = features.shape
        cfg = self.config
        if num_masks == 0:
            return features.new_zeros(batch, cfg.num_predicates, 0, 0, dtype=self.cls_sub.weight.dtype)
        x = self.fc_input(features.to(self.cls_sub.weight.dtype))
        x = self._encode(x, padding_mask)
        x = self.fc_output(x)
        subj = self.cls_sub(x).view(batch, num_masks, cfg.num_predicates, cfg.projection_dim)
        obj = self.cls_obj(x).view(batch, num_masks, cfg.num_predicates, cfg.projection_dim)
        return torch.einsum("bird,bjrd->brij", subj, obj) / math.sqrt(cfg.projection_dim)

    def score(self, features: Tensor) -> Tensor:
        """Relation logits for one image: features [N, feature_dim] -> [num_predicates, N, N]."""
        return self(features.unsqueeze(0))[0]

    def _encode(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        """BERT over the masks as an unordered set: [B, N, hidden] -> [B, N, hidden]."""
        batch, num_masks, _ = x.shape
        # The authors give every mask position id 1 (masks have no order) and token type 0.
        position_ids = torch.ones(1, num_masks, dtype=torch.long, device=x.device)
        token_type_ids = torch.zeros(1, num_masks, dtype=torch.long, device=x.device)
        attention_mask = None
        if padding_mask is not None:
            if padding_mask.shape != (batch, num_masks):
                raise ValueError(f"padding_mask must be [B, N] = {[batch, num_masks]}, got {list(padding_mask.shape)}")
            attention_mask = padding_mask.to(device=x.device, dtype=torch.bool)
        out = self.model(
            inputs_embeds=x,
            attention_mask=attention_mask,
            position_ids=position_ids.expand(batch, -1),
            token_type_ids=token_type_ids.expand(batch, -1),
        )
        return out.last_hidden_state

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        config: RelationHeadConfig | None = None,
        attn_implementation: str = "sdpa",
        device: str | torch.device = "cpu",
    ) -> RelationHead:
        """Load a head from the published `.pth` state dict or a `.safetensors` file from `save`.

        Args:
            path: the checkpoint file.
            config: the head's shape. By default read from the safetensors metadata, or inferred
                from the tensor shapes of a `.pth` (with 512-d projections and 64-d heads, as
                published).
            attn_implementation: see `RelationHead`.
            device: where the head is put once loaded (the file is always read on the CPU).

        Returns:
            The head, in eval mode.

        Raises:
            CheckpointError: the file is missing, unreadable, holds anything but tensors (a pickle
                is never allowed to run code), or its keys or shapes do not fit the config.
        """
        state_dict, stored_config = checkpoint.read(path)
        config = config or stored_config or checkpoint.infer_config(state_dict, path)
        head = cls(config, attn_implementation=attn_implementation)
        checkpoint.load_into(head, state_dict, path)
        return head.to(device).eval()

    def save(self, path: str | Path) -> None:
        """Write the weights as safetensors, with the config in the file's metadata."""
        checkpoint.save(self, path)


def _drop_legacy_position_ids(module: RelationHead, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: accept files that still hold BERT's `position_ids` buffer."""
    key = prefix + LEGACY_POSITION_IDS_KEY
    if key in state_dict and LEGACY_POSITION_IDS_KEY not in module.state_dict(keep_vars=True):
        del state_dict[key]
