"""Load Segment Anything weights into transformers' `SamModel`.

Two sources are accepted:

- a transformers folder (``config.json`` + weights, as written by ``save_pretrained``) or a
  Hugging Face hub id such as ``facebook/sam-vit-huge``;
- an original checkpoint file from facebookresearch/segment-anything (``sam_vit_b_01ec64.pth``,
  ``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``, or any ``.pth``/``.safetensors`` file with the
  same key layout). Its variant (width, depth, heads, global-attention blocks) is read from the
  tensor shapes, so tiny test models round-trip as well as the published ones.

Whatever the source, the two-way transformer's LayerNorms get the original epsilon (1e-5, plain
``nn.LayerNorm`` in segment-anything) instead of transformers' 1e-6, so that outputs equal the
original code's, not only approximately.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import SamConfig, SamModel

from relate_anything.errors import CheckpointError
from relate_anything.state_dicts import load_pretrained_folder, mismatches, read_torch_file

__all__ = [
    "ORIGINAL_TWO_WAY_LAYER_NORM_EPS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "config_from_original_state_dict",
    "load_sam",
    "match_original_layer_norm_eps",
    "original_to_hf_state_dict",
    "hf_to_original_key",
    "hf_to_original_state_dict",
]

# segment-anything builds its two-way transformer with plain `nn.LayerNorm` (eps 1e-5), while
# transformers' SamMaskDecoderConfig defaults to 1e-6; the ViT and LayerNorm2d use 1e-6 in both.
ORIGINAL_TWO_WAY_LAYER_NORM_EPS = 1e-5

# Normalisation constants of the original `Sam` (0-255 units, RGB). Published checkpoints may
# carry them as `pixel_mean` / `pixel_std` entries; we check and drop those.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_NORMALISATION_KEYS = {"pixel_mean": PIXEL_MEAN, "pixel_std": PIXEL_STD}

# transformers key -> original key, applied in order (each pattern is a full-key regex fragment).
_HF_TO_ORIGINAL_RULES: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.", "image_encoder."),
    (r"^image_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^image_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^image_encoder\.layers\.", "image_encoder.blocks."),
    (r"^image_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^image_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^image_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^image_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    (
        r"^(shared_image_embedding|prompt_encoder\.shared_embedding)\.positional_embedding$",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^(mask_decoder\.transformer\.layers\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
)
# Original `MLP` keeps all linears in `layers.{0..depth-1}`; transformers' `SamFeedForward` names
# the first `proj_in`, the last `proj_out` and the middle ones `layers.{0..depth-3}`.
_MLP_PREFIX = r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\."
_HYPERNETWORK_DEPTH = 3  # fixed in segment-anything's MaskDecoder


def load_sam(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: SamConfig | None = None,
) -> SamModel:
    """Load SAM weights into a transformers `SamModel`, in eval mode, on `device` in `dtype`.

    Args:
        name_or_path: an existing local folder (``save_pretrained`` layout), an existing local
            checkpoint file in the original segment-anything layout (``.pth`` or
            ``.safetensors``), or else a Hugging Face hub id passed to
            ``SamModel.from_pretrained`` (hub errors propagate unchanged).
        device: where the model lives.
        dtype: parameter dtype; float32 reproduces the original code to ~1e-5.
        config: for original files only, use this config instead of inferring it from shapes.

    Raises:
        CheckpointError: an original file that cannot be read or whose keys/shapes do not form
            a SAM model; the message names the file and the first offending keys.
    """
    path = Path(name_or_path)
    if path.is_file():
        model = _load_original_file(path, config)
    elif path.is_dir():
        model = load_pretrained_folder(path, {"sam": SamModel}, name="SAM")
    else:
        model = SamModel.from_pretrained(str(name_or_path))
    match_original_layer_norm_eps(model)
    return model.to(device=device, dtype=dtype).eval()


def match_original_layer_norm_eps(model: SamModel) -> None:
    """Set the two-way transformer's block LayerNorm eps to segment-anything's 1e-5, in place.

    Changes the built module instances and the config (so ``save_pretrained`` keeps it); the
    library's source is not touched. Other LayerNorms already match the original.
    """
    model.config.mask_decoder_config.layer_norm_eps = ORIGINAL_TWO_WAY_LAYER_NORM_EPS
    for block in model.mask_decoder.transformer.layers:
        for norm in (block.layer_norm1, block.layer_norm2, block.layer_norm3, block.layer_norm4):
            norm.eps = ORIGINAL_TWO_WAY_LAYER_NORM_EPS


# ----------------------------------------------------------------------------------------------
# Original checkpoint files


def _load_original_file(path: Path, config: SamConfig | None) -> SamModel:
    """Read an original-layout file, build a matching `SamModel` and load it strictly."""
    state_dict = _read_state_dict(path)
    state_dict = _drop_normalisation_entries(state_dict, path)
    if config is None:
        config = config_from_original_state_dict(state_dict, path)
    config.mask_decoder_config.layer_norm_eps = ORIGINAL_TWO_WAY_LAYER_NORM_EPS
    try:
        model = SamModel(config)
    except (ValueError, RuntimeError) as error:  # shapes that form no valid SAM (e.g. width % heads != 0)
        raise CheckpointError(f"{path}: tensor shapes do not form a SAM model ({error})") from error
    expected = hf_to_original_state_dict(model)
    _check_keys_and_shapes(expected, state_dict, path)
    model.load_state_dict(original_to_hf_state_dict(state_dict, model), strict=True)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save``d dict (weights-only unpickling)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state_dict = load_file(str(path), device="cpu")
        except Exception as error:  # format errors have several types; all mean "not a checkpoint"
            raise CheckpointError(f"{path}: not a readable SAM checkpoint ({type(error).__name__}: {error})") from error
    else:
        state_dict = read_torch_file(path, what="SAM checkpoint")
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        found = type(state_dict).__name__
        raise CheckpointError(f"{path}: not a SAM checkpoint (expected a dict of tensors, got {found})")
    return dict(state_dict)


def _drop_normalisation_entries(state_dict: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Remove ``pixel_mean``/``pixel_std`` entries after checking they hold SAM's constants.

    Our preprocessing uses the fixed constants, so a file with other values cannot be honoured.
    """
    for key, expected in _NORMALISATION_KEYS.items():
        value = state_dict.pop(key, None)
        if value is None:
            continue
        expected_values = torch.tensor(expected, dtype=torch.float64)
        if value.numel() != 3 or not torch.allclose(value.double().flatten(), expected_values):
            raise CheckpointError(f"{path}: {key} is {value.flatten().tolist()}, expected SAM's {list(expected)}")
    return state_dict


def config_from_original_state_dict(
    state_dict: Mapping[str, torch.Tensor], path: Path | str = "<state dict>"
) -> SamConfig:
    """Infer a `SamConfig` from the tensor shapes of an original-layout state dict.

    Read from shapes: ViT width, depth, patch size, image size (``pos_embed`` is
    [1, S, S, C] with S = image_size / patch), heads (``rel_pos_h`` is [2*w-1, head_dim]),
    window size and global-attention blocks (a global block's ``rel_pos_h`` spans the whole
    S x S grid, a windowed one spans the window), MLP widths, decoder depth, neck width.
    The decoder's head count (8) is not visible in shapes and is segment-anything's constant.

    Raises:
        CheckpointError: a key needed for inference is missing or has an impossible shape.
    """
    try:
        return _infer_config(state_dict)
    except KeyError as error:
        hint = ""
        if any(key.startswith("vision_encoder.") for key in state_dict):
            hint = " (its keys are transformers' SamModel names: pass the folder with config.json instead)"
        raise CheckpointError(f"{path}: not an original SAM checkpoint, missing key {error.args[0]!r}{hint}") from error
    except (ValueError, IndexError, TypeError) as error:
        raise CheckpointError(f"{path}: tensor shapes do not form a SAM model ({error})") from error


def _infer_config(sd: Mapping[str, torch.Tensor]) -> SamConfig:
    """`config_from_original_state_dict` without the error translation."""
    patch_weight = sd["image_encoder.patch_embed.proj.weight"]  # [C, 3, p, p]
    hidden, _, patch_size, _ = patch_weight.shape
    grid = sd["image_encoder.pos_embed"].shape[1]  # [1, S, S, C]
    depth = _count_indices(sd, r"image_encoder\.blocks\.(\d+)\.")
    rel_pos_lengths = [sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
    head_dim = sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    global_blocks = [i for i, length in enumerate(rel_pos_lengths) if length == 2 * grid - 1]
    windowed = [length for length in rel_pos_lengths if length != 2 * grid - 1]
    window_size = (windowed[0] + 1) // 2 if windowed else 14
    decoder_hidden = sd["mask_decoder.iou_token.weight"].shape[1]
    cross_attn_dim = sd["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"].shape[0]
    vision = dict(
        hidden_size=hidden,
        output_channels=sd["image_encoder.neck.0.weight"].shape[0],
        num_hidden_layers=depth,
        num_attention_heads=hidden // head_dim,
        image_size=grid * patch_size,
        patch_size=patch_size,
        mlp_dim=sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0],
        window_size=window_size,
        global_attn_indexes=global_blocks,
        num_pos_feats=sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape[1],
    )
    prompt_encoder = dict(
        hidden_size=decoder_hidden,
        image_size=grid * patch_size,
        patch_size=patch_size,
        mask_input_channels=sd["prompt_encoder.mask_downscaling.3.weight"].shape[0],
    )
    mask_decoder = dict(
        hidden_size=decoder_hidden,
        mlp_dim=sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        num_hidden_layers=_count_indices(sd, r"mask_decoder\.transformer\.layers\.(\d+)\."),
        attention_downsample_rate=decoder_hidden // cross_attn_dim,
        num_multimask_outputs=sd["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        iou_head_depth=_count_indices(sd, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.weight"),
        iou_head_hidden_dim=sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        layer_norm_eps=ORIGINAL_TWO_WAY_LAYER_NORM_EPS,
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt_encoder, mask_decoder_config=mask_decoder)


def _count_indices(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    """1 + the largest integer captured by `pattern` over the keys (e.g. the ViT depth)."""
    indices = {int(m.group(1)) for key in sd if (m := re.match(pattern, key))}
    if not indices:
        raise KeyError(pattern.replace("\\", "").replace("(d+)", "<n>"))
    return max(indices) + 1


def _iou_head_depth(config: SamConfig) -> int:
    """Linear layers in the IoU head (3 in every published SAM)."""
    return config.mask_decoder_config.iou_head_depth


def hf_to_original_key(key: str, iou_head_depth: int) -> str:
    """Name of a transformers `SamModel` state-dict key in segment-anything's layout."""
    for pattern, replacement in _HF_TO_ORIGINAL_RULES:
        key = re.sub(pattern, replacement, key)
    match = re.match(_MLP_PREFIX + r"(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$", key)
    if match:
        prefix, part, middle, param = match.groups()
        depth = iou_head_depth if prefix.endswith("iou_prediction_head") else _HYPERNETWORK_DEPTH
        index = 0 if part == "proj_in" else depth - 1 if part == "proj_out" else int(middle) + 1
        key = f"{prefix}.layers.{index}.{param}"
    return key


def original_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor], model: SamModel) -> dict[str, torch.Tensor]:
    """Rename an original-layout state dict to the keys of `model` (a transformers `SamModel`).

    The map is `hf_to_original_key` over the model's own keys, inverted, so one rule table
    serves both directions. The positional-encoding matrix feeds both of `SamModel`'s tied
    copies. Keys outside the map are dropped: check them first with `_check_keys_and_shapes`.
    """
    depth = _iou_head_depth(model.config)
    converted: dict[str, torch.Tensor] = {}
    for hf_key in model.state_dict():
        original_key = hf_to_original_key(hf_key, depth)
        if original_key in state_dict:
            converted[hf_key] = state_dict[original_key]
    return converted


def hf_to_original_state_dict(model: SamModel) -> dict[str, torch.Tensor]:
    """State dict of `model` in segment-anything's layout (what ``Sam.load_state_dict`` takes).

    The tied positional matrix appears once; tensors are detached CPU copies in their dtype.
    """
    depth = _iou_head_depth(model.config)
    return {hf_to_original_key(k, depth): v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _check_keys_and_shapes(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise `CheckpointError` naming the first missing, unexpected or mis-shaped keys.

    Both mappings use original key names, so the message names keys as they are in the file.
    """
    problems = mismatches(expected, found)
    if problems:
        raise CheckpointError(f"{path}: does not match a SAM model; " + "; ".join(problems))
