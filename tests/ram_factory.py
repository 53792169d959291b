"""Tiny random RAM relation heads and checkpoint files for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from relate_anything.ram import RelationHead, RelationHeadConfig

LEGACY_POSITION_IDS_KEY = "model.embeddings.position_ids"


def tiny_config() -> RelationHeadConfig:
    """A small head whose shapes still infer back to itself: 64-d heads and 512-d projections,
    as in the published checkpoint, so a tiny .pth needs no config to load."""
    return RelationHeadConfig(
        feature_dim=16,
        hidden_size=128,
        num_layers=2,
        num_heads=2,
        intermediate_size=48,
        num_predicates=3,
        projection_dim=512,
        vocab_size=10,
        max_position_embeddings=4,
        type_vocab_size=2,
    )


def random_state_dict(config: RelationHeadConfig, seed: int = 0) -> dict[str, Tensor]:
    """A published-layout state dict with random values. LayerNorm weights and biases are random
    too (not 1 and 0), so that a test notices a LayerNorm that is skipped or mixed up."""
    gen = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key, like in RelationHead(config).state_dict().items():
        noise = torch.randn(like.shape, generator=gen)
        if like.dim() == 2:
            state_dict[key] = noise / like.shape[1] ** 0.5
        elif key.endswith(".weight"):
            state_dict[key] = 1.0 + 0.2 * noise
        else:
            state_dict[key] = 0.2 * noise
    return state_dict


def head_from(
    state_dict: dict[str, Tensor], config: RelationHeadConfig, attn_implementation: str = "sdpa"
) -> RelationHead:
    """A head in eval mode holding `state_dict`."""
    head = RelationHead(config, attn_implementation=attn_implementation)
    head.load_state_dict(state_dict, strict=True)
    return head.eval()


def write_published_pth(path: Path, state_dict: dict[str, Tensor], *, with_position_ids: bool = False) -> Path:
    """Write `state_dict` as the authors do (`torch.save` of a plain dict); optionally with the
    `position_ids` buffer that older transformers versions stored."""
    state_dict = dict(state_dict)
    if with_position_ids:
        max_positions = state_dict["model.embeddings.position_embeddings.weight"].shape[0]
        state_dict[LEGACY_POSITION_IDS_KEY] = torch.arange(max_positions).unsqueeze(0)
    torch.save(state_dict, path)
    return path


def write_safetensors(path: Path, state_dict: dict[str, Tensor], config: RelationHeadConfig) -> Path:
    """Write `state_dict` in our format (`RelationHead.save`)."""
    head_from(state_dict, config).save(path)
    return path


#: A head small enough to train in seconds on two CPU cores (56 predicates; `replace` for fewer).
TRAINABLE_HEAD = RelationHeadConfig(
    hidden_size=64,
    num_heads=2,
    num_layers=1,
    intermediate_size=128,
    projection_dim=32,
    vocab_size=2,
    max_position_embeddings=2,
    type_vocab_size=1,
    dropout=0.0,
)
