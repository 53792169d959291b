"""A tiny SegGPT with random weights, for tests."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import SegGptConfig, SegGptForImageSegmentation

# One input half is 32 x 32 (the published model: 448 x 448); 4 x 4 patches of 8 pixels.
TINY_SEGGPT = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "mlp_dim": 64,
    "image_size": [64, 32],
    "patch_size": 8,
    "pretrain_image_size": 32,
    "decoder_hidden_size": 16,
    "merge_index": 1,
    "intermediate_hidden_state_indices": [1, 3],
    "drop_path_rate": 0.0,
}


def random_seggpt(seed: int = 0) -> SegGptForImageSegmentation:
    """Unit-scale random weights (transformers' 0.02-std init paints a uniform grey), so the
    painted mask varies over the image and depends on the examples."""
    model = SegGptForImageSegmentation(SegGptConfig(**TINY_SEGGPT)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                noise = torch.randn(parameter.shape, generator=generator)
                if isinstance(module, nn.LayerNorm):
                    value = 1 + 0.1 * noise if name == "weight" else 0.1 * noise
                elif isinstance(module, (nn.Linear, nn.Conv2d)):
                    value = 0.1 * noise if name == "bias" else noise / math.sqrt(parameter[0].numel())
                else:
                    value = noise
                parameter.copy_(value)
    return model
