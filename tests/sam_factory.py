"""Tiny and ViT-B SAM models with random weights, saved in both supported layouts.

Weights are drawn so that every tensor matters (no zero-initialised relative positions or
absolute embeddings, LayerNorm gains away from 1) and activations keep unit scale, so mask logits
have both signs and the parity tests exercise the whole network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import SamConfig, SamModel

from relate_anything.sam.checkpoint import ORIGINAL_TWO_WAY_LAYER_NORM_EPS, hf_to_original_state_dict

# Image-encoder settings of the official builders (`_build_sam` takes exactly these four).
TINY_ENCODER = {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": [1]}
VIT_B_ENCODER = {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": [2, 5, 8, 11]}


@dataclass(frozen=True)
class SamFiles:
    """One random model written three ways."""

    encoder: dict  # the official builder's encoder arguments
    folder: Path  # save_pretrained folder (config.json + model.safetensors)
    original_pth: Path  # original segment-anything layout, torch.save
    original_safetensors: Path  # original layout, safetensors


def sam_config(encoder: dict, image_size: int = 1024) -> SamConfig:
    """A `SamConfig` equal to segment-anything's `_build_sam(**encoder)` (image size 1024).

    A smaller `image_size` (a multiple of 16) shrinks the embedding grid (image_size / 16 a side)
    and with it every later stage's cost: for tests that run many images.
    """
    vision = {
        "hidden_size": encoder["embed_dim"],
        "num_hidden_layers": encoder["depth"],
        "num_attention_heads": encoder["num_heads"],
        "global_attn_indexes": list(encoder["global_attn_indexes"]),
        "image_size": image_size,
    }
    prompt = {"image_size": image_size, "image_embedding_size": image_size // 16}
    decoder = {"layer_norm_eps": ORIGINAL_TWO_WAY_LAYER_NORM_EPS}
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def random_sam(encoder: dict, seed: int = 0, image_size: int = 1024) -> SamModel:
    """A `SamModel` for `encoder` with every parameter drawn from a seeded generator."""
    model = SamModel(sam_config(encoder, image_size)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                parameter.copy_(_draw(module, name, parameter, generator))
    return model


def _draw(module: nn.Module, name: str, parameter: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Unit-scale random values, so activations neither vanish nor saturate softmaxes.

    Linear/conv weights are fan-in scaled, LayerNorm gains near 1, biases and relative/absolute
    position tables small; learned embeddings, tokens and the positional Gaussian matrix unit normal.
    """
    noise = torch.randn(parameter.shape, generator=generator)
    if isinstance(module, nn.LayerNorm):
        return 1 + 0.1 * noise if name == "weight" else 0.1 * noise
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        if name == "bias":
            return 0.1 * noise
        fan_in = parameter.shape[1] * parameter[0, 0].numel()  # Linear [out, in], Conv [out, in, k, k]
        if isinstance(module, nn.ConvTranspose2d):  # [in, out, 2, 2] at stride 2: one tap per input channel
            fan_in = parameter.shape[0]
        return noise / math.sqrt(fan_in)
    if name in ("rel_pos_h", "rel_pos_w", "pos_embed"):
        return 0.1 * noise
    return noise  # nn.Embedding weights (tokens, point embeddings), positional Gaussian matrix


def write_original(model: SamModel, path: Path) -> Path:
    """Save `model`'s weights in segment-anything's layout (what its builders load)."""
    torch.save(hf_to_original_state_dict(model), path)
    return path


def write_sam_files(encoder: dict, directory: Path, seed: int = 0) -> SamFiles:
    """Save `random_sam(encoder, seed)` as a transformers folder and as original-layout files."""
    model = random_sam(encoder, seed)
    files = SamFiles(
        encoder=encoder,
        folder=directory / "hf",
        original_pth=directory / "sam_original.pth",
        original_safetensors=directory / "sam_original.safetensors",
    )
    model.save_pretrained(files.folder)
    original = hf_to_original_state_dict(model)
    torch.save(original, files.original_pth)
    save_file(original, str(files.original_safetensors))
    return files
