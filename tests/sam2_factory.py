"""Tiny SAM 2 (video and image) and SAM-HQ models with random weights, for tests.

Constraints met (see shared/docs/video.md): the memory cross-attention expects 64-channel
memories (``memory_encoder_output_channels=64``), the model width must be a multiple of that (object
pointers are split into 64-wide tokens), and a global-attention block must not open a Hiera stage.
Frames are S = 128 pixels a side (the published models: 1024), so the mask decoder works on
8 x 8 image embeddings and returns 32 x 32 logits.

Weights are unit-scale random draws (as in ``sam_factory``), so mask logits, IoU predictions and
tokens vary with the inputs. `object_score_bias` sets the object-score head's output bias: a
large positive value makes SAM 2 call every tracked object present, a large negative one absent,
so tracking tests can rely on either.
"""

from __future__ import annotations

import torch
from transformers import Sam2Config, Sam2Model, Sam2VideoConfig, Sam2VideoModel, SamHQConfig, SamHQModel

from sam_factory import _draw

IMAGE_SIZE = 128
WIDTH = 128  # decoder and FPN width: a multiple of the 64-channel memories


def _vision_config(image_size: int) -> dict:
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 16,
        "num_attention_heads": 1,
        "image_size": [image_size, image_size],
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [16, 32, 64, 128],
        "num_attention_heads_per_stage": [1, 1, 2, 2],
        "window_size_per_stage": [4, 4, 4, 4],
        "global_attention_blocks": [3],  # the second block of stage 3, not its first
        "window_positional_embedding_background_size": [2, 2],
    }
    return {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": [128, 64, 32, 16],
        "backbone_feature_sizes": [[image_size // s, image_size // s] for s in (4, 8, 16)],
        "fpn_hidden_size": WIDTH,
    }


def _decoder_configs(image_size: int) -> tuple[dict, dict]:
    prompt = {"hidden_size": WIDTH, "image_size": image_size, "patch_size": 16}
    decoder = {"hidden_size": WIDTH, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    decoder["iou_head_hidden_dim"] = 32
    return prompt, decoder


def sam2_video_config(
    image_size: int = IMAGE_SIZE, *, num_maskmem: int = 7, max_object_pointers: int = 16
) -> Sam2VideoConfig:
    """A tiny `Sam2VideoConfig` (~1.4M parameters); memory window sizes as given."""
    prompt, decoder = _decoder_configs(image_size)
    return Sam2VideoConfig(
        vision_config=_vision_config(image_size),
        prompt_encoder_config=prompt,
        mask_decoder_config=decoder,
        image_size=image_size,
        num_maskmem=num_maskmem,
        max_object_pointers_in_encoder=max_object_pointers,
        memory_attention_hidden_size=WIDTH,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[image_size // 16, image_size // 16],
        memory_attention_dropout=0.0,
        memory_attention_rope_dropout=0.0,
        memory_encoder_hidden_size=WIDTH,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=WIDTH,
        memory_fuser_embed_dim=WIDTH,
        memory_fuser_intermediate_dim=128,
    )


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter drawn from a seeded generator at unit scale (`sam_factory._draw`)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                parameter.copy_(_draw(module, name, parameter, generator))


def random_sam2_video(
    *,
    seed: int = 0,
    object_score_bias: float | None = 8.0,
    image_size: int = IMAGE_SIZE,
    num_maskmem: int = 7,
    max_object_pointers: int = 16,
) -> Sam2VideoModel:
    """A tiny random `Sam2VideoModel` in eval mode; see the module docstring for the bias."""
    model = Sam2VideoModel(
        sam2_video_config(image_size, num_maskmem=num_maskmem, max_object_pointers=max_object_pointers)
    ).eval()
    randomize(model, seed)
    if object_score_bias is not None:
        with torch.no_grad():
            model.mask_decoder.pred_obj_score_head.proj_out.weight.mul_(0.01)
            model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_score_bias)
    return model


def random_sam2_image(*, seed: int = 0, image_size: int = IMAGE_SIZE) -> Sam2Model:
    """A tiny random `Sam2Model` (SAM 2's image model) in eval mode."""
    prompt, decoder = _decoder_configs(image_size)
    config = Sam2Config(
        vision_config=_vision_config(image_size), prompt_encoder_config=prompt, mask_decoder_config=decoder
    )
    model = Sam2Model(config).eval()
    randomize(model, seed)
    return model


def random_sam_hq(*, seed: int = 0, image_size: int = 256) -> SamHQModel:
    """A tiny random `SamHQModel` (ViT of width 32, 2 blocks, the second global) in eval mode."""
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "global_attn_indexes": [1],
        "image_size": image_size,
        "output_channels": 64,
        "mlp_dim": 64,
        "num_pos_feats": 32,  # positional encodings as wide as the decoder (2 x 32)
    }
    prompt = {"hidden_size": 64, "image_size": image_size}
    decoder = {
        "hidden_size": 64,
        "mlp_dim": 64,
        "num_attention_heads": 2,
        "iou_head_hidden_dim": 32,
        "vit_dim": 32,
    }
    model = SamHQModel(SamHQConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))
    model.eval()
    randomize(model, seed)
    return model
