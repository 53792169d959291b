"""SAM's mask decoder for many prompts of one image, without a copy of the image per prompt.

transformers' `SamMaskDecoder` (like segment-anything's) repeats the 64x64x256 image embedding
for every prompt and projects each copy with full 256 -> 128 linear layers, then upsamples each
prompt's 256-channel features to 32 channels at 256x256. For "segment everything" (1,024 point
prompts) that is ~1.8 GMAC and tens of MiB of memory traffic per prompt. `FastMaskDecoder`
computes the same function from the same `SamModel` weights (it holds the model, copies nothing)
with less of both:

- In the first two-way block the image side is the same for every prompt (there is no mask
  input), so its key, value and query projections are computed once per image, and all prompts'
  tokens attend to them in one attention call.
- Where the image side differs per prompt, the projections are folded into the few tokens
  instead (7 tokens x 8 heads = 56 vectors against 128 projected channels for 4,096 pixels):
      scores = (W_k^T q) . (k + pe)        the q . b_k term is constant over pixels: softmax drops it
      out    = W_v (sum_n p_n k_n) + b_v   the probabilities sum to 1
      out_proj(sum_t p_t v_t) = sum_t p_t (W_o v_t)
  so no [prompts, 4096, 128] projection is ever formed.
- The two 2x2 stride-2 transposed convolutions are per-pixel matrix products on channels-last
  tensors (no permutes of the large feature maps), only the mask tokens that are returned are
  decoded, and prompts are processed in chunks so the 32-channel 256x256 features of a chunk are
  the largest transient.

Outputs equal transformers' forward up to float rounding (tests/test_fast_decoder.py checks
1e-5 in float32 on a tiny model, and the parity tests against segment-anything use this path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import SamModel

__all__ = ["FastMaskDecoder"]


# (prompts per chunk, prompts upscaled together). On CPUs, every fresh allocation of more than
# glibc's mmap threshold (at most 32 MiB) is paid again in page faults, which cost more than the
# arithmetic of the elementwise steps: chunks whose largest tensors stay well under 32 MiB (16 MiB
# here) decode faster. Decoding 256 prompts on 2 cores, alternating runs: 4/2 took 5.2 and 6.3 s
# on average where 8/4 (whose largest tensors are exactly 32 MiB) took 7.2 and 8.2 s.
# GPUs want large batches.
_DEFAULT_CHUNKS = {"cpu": (4, 2), "accelerator": (64, 64)}


@dataclass(frozen=True)
class _ImageSide:
    """Per-image tensors shared by every prompt, flattened to N = 64 * 64 pixels.

    keys: [N, C] image embedding plus the no-mask dense embedding (the first block's keys).
    positions: [N, C] the image-wide positional embedding.
    first_keys, first_values: [H, N, d] the first block's token->image key/value projections.
    first_queries: [H, N, d] the first block's image->token query projection, times its scaling.
    """

    source: Tensor
    keys: Tensor
    positions: Tensor
    first_keys: Tensor
    first_values: Tensor
    first_queries: Tensor


class FastMaskDecoder:
    """The mask decoder of a transformers `SamModel` for a batch of prompts of one image.

    Args:
        model: the `SamModel` whose prompt encoder and mask decoder weights are used (read at
            each call, so moving or casting the model is seen).
        chunk_size: prompts decoded together (the per-prompt image-side tensors take 4 MiB each
            in float32); default 4 on CPU, 64 on GPUs.
        upscale_chunk_size: prompts upscaled together (8 MiB of 32-channel 256x256 features
            each in float32); default 2 on CPU, 64 on GPUs.

    Example:
        >>> decoder = FastMaskDecoder(model)
        >>> sparse, _ = model.prompt_encoder(points, labels, None, None)   # [1, B, S, 256]
        >>> logits, iou, tokens = decoder(embedding, sparse[0], multimask_output=True)
    """

    def __init__(
        self, model: SamModel, *, chunk_size: int | None = None, upscale_chunk_size: int | None = None
    ) -> None:
        if (chunk_size is not None and chunk_size < 1) or (upscale_chunk_size is not None and upscale_chunk_size < 1):
            raise ValueError("chunk_size and upscale_chunk_size must be positive")
        self.model = model
        self._chunk_size = chunk_size
        self._upscale_chunk_size = upscale_chunk_size
        self._image_side: _ImageSide | None = None

    @property
    def _decoder(self):
        return self.model.mask_decoder

    @property
    def chunk_size(self) -> int:
        """Prompts per chunk: given, or by device (see `_DEFAULT_CHUNKS`)."""
        return self._chunk_size or _DEFAULT_CHUNKS[self._device_type][0]

    @property
    def upscale_chunk_size(self) -> int:
        """Prompts upscaled together: given, or by device (see `_DEFAULT_CHUNKS`)."""
        return self._upscale_chunk_size or _DEFAULT_CHUNKS[self._device_type][1]

    @property
    def _device_type(self) -> str:
        return "cpu" if self._decoder.iou_token.weight.device.type == "cpu" else "accelerator"

    @torch.inference_mode()
    def __call__(
        self, image_embedding: Tensor, sparse_embeddings: Tensor, *, multimask_output: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Decode B prompts against one image.

        Args:
            image_embedding: [1, C, 64, 64] from the image encoder.
            sparse_embeddings: [B, S, C] the prompt encoder's sparse embeddings of each prompt.
            multimask_output: return mask tokens 1..3 (three masks per prompt) instead of token 0.

        Returns:
            low_res_logits [B, M, 256, 256], iou_predictions [B, M] and mask_tokens [B, M, C]
            (the two-way transformer's output token of each returned mask), M = 3 or 1.
        """
        image = self._image(image_embedding)
        masks = self._mask_indices(multimask_output)
        parts = [self._decode_chunk(image, chunk, masks) for chunk in sparse_embeddings.split(self.chunk_size)]
        logits, iou, tokens = (torch.cat(values) for values in zip(*parts))
        return logits, iou, tokens

    @torch.inference_mode()
    def decode_above(
        self, image_embedding: Tensor, sparse_embeddings: Tensor, min_iou: float, *, multimask_output: bool = True
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Decode only the masks whose predicted IoU is > `min_iou`.

        The predicted IoU comes from the IoU token, before any mask is formed: the other masks
        are never upscaled, and a prompt none of whose masks is kept is never upscaled at all.

        Returns:
            low_res_logits [K, 256, 256], iou_predictions [K], mask_tokens [K, C] of the kept
            masks, and their flat indices [K] int64 (prompt * M + mask) in increasing order: the
            rows of ``__call__``'s outputs flattened over (B, M) and filtered, in that order.
        """
        image = self._image(image_embedding)
        masks = self._mask_indices(multimask_output)
        parts, offset = [], 0
        for chunk in sparse_embeddings.split(self.chunk_size):
            logits, iou, tokens, index = self._decode_chunk(image, chunk, masks, min_iou)
            parts.append((logits, iou, tokens, index + offset * len(masks)))
            offset += chunk.shape[0]
        logits, iou, tokens, index = (torch.cat(values) for values in zip(*parts))
        return logits, iou, tokens, index

    def _mask_indices(self, multimask_output: bool) -> range:
        """Mask tokens returned: 1..3 (multimask) or 0."""
        return range(1, self._decoder.num_mask_tokens) if multimask_output else range(0, 1)

    # ------------------------------------------------------------------------------------------

    def _image(self, image_embedding: Tensor) -> _ImageSide:
        """The image-side tensors of `image_embedding`, computed once per embedding."""
        cached = self._image_side
        if cached is not None and cached.source is image_embedding:
            return cached
        model, decoder = self.model, self._decoder
        channels = image_embedding.shape[1]
        dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, channels, 1, 1)
        keys = (image_embedding + dense).flatten(2)[0].T  # [N, C], pixel n = y * 64 + x
        positions = model.get_image_wide_positional_embeddings().flatten(2)[0].T.to(keys.dtype)
        block = decoder.transformer.layers[0]
        to_image, to_token = block.cross_attn_token_to_image, block.cross_attn_image_to_token
        heads = to_image.num_attention_heads
        key_input = keys + positions
        side = _ImageSide(
            source=image_embedding,
            keys=keys,
            positions=positions,
            first_keys=_heads_first(to_image.k_proj(key_input), heads),
            first_values=_heads_first(to_image.v_proj(keys), heads),
            first_queries=_heads_first(to_token.q_proj(key_input), to_token.num_attention_heads) * to_token.scaling,
        )
        self._image_side = side
        return side

    def _decode_chunk(self, image: _ImageSide, sparse: Tensor, mask_indices: range, min_iou: float | None = None):
        """One chunk of prompts: all their masks, or (with `min_iou`) the kept ones flattened."""
        decoder = self._decoder
        transformer = decoder.transformer
        prompts = sparse.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])
        tokens = torch.cat([output_tokens.expand(prompts, -1, -1), sparse.to(output_tokens.dtype)], dim=1)

        queries, keys = self._first_block(image, tokens)
        for block in transformer.layers[1:]:
            queries, keys = self._block(block, queries, keys, tokens, image.positions)
        # The final attention only matters for the tokens read afterwards: the IoU token and the
        # returned mask tokens (each query row attends independently).
        rows = [0, *(1 + i for i in mask_indices)]
        queries, tokens = queries[:, rows], tokens[:, rows]
        attention = transformer.final_attn_token_to_image
        queries = queries + _token_to_image(attention, queries + tokens, keys + image.positions, keys)
        queries = transformer.layer_norm_final_attn(queries)

        masks = slice(mask_indices.start, mask_indices.stop)
        iou = decoder.iou_prediction_head(queries[:, 0])[:, masks]  # [B, M]
        mask_tokens = queries[:, 1:]  # [B, M, C]
        if min_iou is None:
            return self._upscaled_masks(keys, self._hyper(mask_tokens, mask_indices)), iou, mask_tokens
        keep = iou > min_iou
        index = keep.flatten().nonzero()[:, 0]
        if len(index) == 0:
            return (
                keys.new_zeros(0, *self._mask_size(keys)),
                iou.flatten()[index],
                mask_tokens.flatten(0, 1)[index],
                index,
            )
        prompts_kept = keep.any(dim=1)
        if len(index) < keep.numel():  # upscale only the prompts with a kept mask
            keys, mask_tokens, keep = keys[prompts_kept], mask_tokens[prompts_kept], keep[prompts_kept]
        logits = self._upscaled_masks(keys, self._hyper(mask_tokens, mask_indices))[keep]
        return logits, iou.flatten()[index], mask_tokens[keep], index

    @staticmethod
    def _mask_size(keys: Tensor) -> tuple[int, int]:
        """(h, w) of the low-resolution masks of [B, N, C] keys: 4x the embedding's side."""
        side = int(round(keys.shape[1] ** 0.5))
        return 4 * side, 4 * side

    def _hyper(self, mask_tokens: Tensor, mask_indices: range) -> Tensor:
        """[B, M, C/8] hypernetwork outputs of the [B, M, C] returned mask tokens."""
        mlps = self._decoder.output_hypernetworks_mlps
        return torch.stack([mlps[i](mask_tokens[:, k]) for k, i in enumerate(mask_indices)], dim=1)

    def _first_block(self, image: _ImageSide, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The first two-way block, whose image side (keys, no positional skip) is shared."""
        block = self._decoder.transformer.layers[0]
        prompts, num_tokens, _ = tokens.shape
        # skip_first_layer_pe: the tokens attend to themselves without positional embedding and
        # replace (not add to) the queries.
        queries = _self_attention(block.self_attn, tokens, tokens, tokens)
        queries = block.layer_norm1(queries)

        # Tokens -> image: every prompt's tokens attend to the same keys, so all B x T queries
        # form one attention over the image's 4,096 shared keys.
        attention = block.cross_attn_token_to_image
        heads = attention.num_attention_heads
        query = attention.q_proj(queries + tokens)  # [B, T, D]
        query = query.unflatten(-1, (heads, -1)).permute(2, 0, 1, 3).reshape(1, heads, prompts * num_tokens, -1)
        context = F.scaled_dot_product_attention(
            query, image.first_keys[None], image.first_values[None], scale=attention.scaling
        )  # [1, H, B*T, d]
        context = context[0].unflatten(1, (prompts, num_tokens)).permute(1, 2, 0, 3).flatten(2)
        queries = block.layer_norm2(queries + attention.out_proj(context))

        queries = block.layer_norm3(queries + block.mlp(queries))

        # Image -> tokens: the pixels' query projection is shared; the tokens' side is per prompt.
        attention = block.cross_attn_image_to_token
        heads = attention.num_attention_heads
        keys_t, values_t = _project_tokens(attention, queries + tokens, queries)  # [B, H, T, d]
        # [H, N, d] @ [H, d, B*T] -> [H, N, B*T]; scores laid out [B, H, T, N] so that the softmax
        # over the T tokens runs along a long inner axis (a softmax over 7 contiguous values is slow).
        scores = image.first_queries @ keys_t.permute(1, 3, 0, 2).flatten(2)
        scores = scores.unflatten(2, (prompts, num_tokens)).permute(2, 0, 3, 1)  # [B, H, T, N]
        probs = scores.softmax(dim=2, dtype=torch.float32).to(values_t.dtype).flatten(1, 2)  # [B, H*T, N]
        keys = torch.baddbmm(image.keys, probs.transpose(1, 2), _absorb_output(attention, values_t))
        keys = block.layer_norm4(keys)  # [B, N, C]
        return queries, keys

    def _block(self, block, queries: Tensor, keys: Tensor, tokens: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """A later two-way block: the image side is per prompt."""
        query = queries + tokens
        queries = block.layer_norm1(queries + _self_attention(block.self_attn, query, query, queries))

        keys_with_positions = keys + positions  # used by both cross attentions of the block
        attended = _token_to_image(block.cross_attn_token_to_image, queries + tokens, keys_with_positions, keys)
        queries = block.layer_norm2(queries + attended)

        queries = block.layer_norm3(queries + block.mlp(queries))

        keys = _image_to_token(block.cross_attn_image_to_token, keys_with_positions, queries + tokens, queries, keys)
        keys = block.layer_norm4(keys)
        return queries, keys

    def _upscaled_masks(self, keys: Tensor, hyper: Tensor) -> Tensor:
        """`_masks` in sub-chunks of `upscale_chunk_size` prompts (the 32-channel features of one
        prompt take 8 MiB in float32)."""
        parts = [
            self._masks(k, h) for k, h in zip(keys.split(self.upscale_chunk_size), hyper.split(self.upscale_chunk_size))
        ]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _masks(self, keys: Tensor, hyper: Tensor) -> Tensor:
        """Upscale [B, N, C] keys by 4 and take the product with [B, M, C/8] hypernetwork outputs.

        Each ConvTranspose2d(kernel 2, stride 2) maps a pixel's channels to a 2x2 block:
        a matrix product on channels-last features, whose sub-pixel axes are kept apart until
        the M-channel result is put back into [B, M, 256, 256] order.
        """
        decoder = self._decoder
        prompts = keys.shape[0]
        side = self._mask_size(keys)[0] // 4
        conv1, conv2, norm = decoder.upscale_conv1, decoder.upscale_conv2, decoder.upscale_layer_norm
        mid, low = conv1.out_channels, conv2.out_channels
        # ConvTranspose weights [in, out, 2, 2] as [in, 2*2*out]: sub-pixel outer, channels inner,
        # so every result is channels-last and the bias joins the matrix product.
        weight1 = conv1.weight.permute(0, 2, 3, 1).flatten(1)
        weight2 = conv2.weight.permute(0, 2, 3, 1).flatten(1)
        x = torch.addmm(conv1.bias.repeat(4), keys.flatten(0, 1), weight1)  # [B*N, (dy, dx, mid)]
        x = F.layer_norm(x.view(-1, mid), (mid,), norm.weight, norm.bias, norm.eps)
        x = decoder.activation(x)  # [B*N*4, mid]
        x = decoder.activation(torch.addmm(conv2.bias.repeat(4), x, weight2))  # [B*N*4, (ey, ex, low)]
        # Each mask is its hypernetwork vector dotted with the low channels of every pixel.
        masks = x.view(prompts, -1, low) @ hyper.transpose(1, 2)  # [B, N*16, M]
        # pixel (4*gy + 2*dy + ey, 4*gx + 2*dx + ex), with n = gy * side + gx
        masks = masks.view(prompts, side, side, 2, 2, 2, 2, -1)  # [B, gy, gx, dy, dx, ey, ex, M]
        masks = masks.permute(0, 7, 1, 3, 5, 2, 4, 6)  # [B, M, gy, dy, ey, gx, dx, ex]
        return masks.reshape(prompts, hyper.shape[1], 4 * side, 4 * side)


def _heads_first(projected: Tensor, heads: int) -> Tensor:
    """[N, H*d] -> [H, N, d]."""
    return projected.unflatten(-1, (heads, -1)).transpose(0, 1)


def _self_attention(attention, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """transformers' `SamAttention` on [B, T, C] tokens (it expects [batch, point_batch, T, C])."""
    out, _ = attention(query=query[None], key=key[None], value=value[None])
    return out[0]


def _project_tokens(attention, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Key and value projections of [B, T, C] tokens, as [B, H, T, d]."""
    heads = attention.num_attention_heads
    keys = attention.k_proj(key).unflatten(-1, (heads, -1)).transpose(1, 2)
    values = attention.v_proj(value).unflatten(-1, (heads, -1)).transpose(1, 2)
    return keys, values


def _absorb_output(attention, values: Tensor) -> Tensor:
    """[B, H, T, d] values through each head's slice of out_proj: [B, H*T, C].

    out_proj(concat_h sum_t p_ht v_ht) + b = sum_{h,t} p_ht (W_o,h v_ht + b / H), because each
    head's probabilities over the tokens sum to 1: the bias is folded in as well.
    """
    heads = attention.num_attention_heads
    weight = attention.out_proj.weight.unflatten(1, (heads, -1))  # [C, H, d]
    absorbed = torch.einsum("bhtd,chd->bhtc", values, weight) + attention.out_proj.bias / heads
    return absorbed.flatten(1, 2)


def _token_to_image(attention, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Tokens [B, T, C] attend to per-prompt pixels (key, value [B, N, C]); returns [B, T, C].

    The key and value projections are folded into the queries and the attended pixels, so the
    pixels are never projected: scores = (W_k^T q) . key (the q . b_k term is the same for every
    pixel and cancels in the softmax), output = W_v (probs @ value) + b_v.
    """
    heads = attention.num_attention_heads
    num_tokens = query.shape[1]
    q = attention.q_proj(query).unflatten(-1, (heads, -1)).transpose(1, 2)  # [B, H, T, d]
    weight = attention.k_proj.weight.unflatten(0, (heads, -1))  # [H, d, C]
    folded = torch.einsum("bhtd,hdc->bhtc", q, weight * attention.scaling).flatten(1, 2)  # [B, H*T, C]
    scores = folded @ key.transpose(1, 2)  # [B, H*T, N]
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(value.dtype)
    pooled = (probs @ value).unflatten(1, (heads, num_tokens))  # [B, H, T, C]
    v_weight = attention.v_proj.weight.unflatten(0, (heads, -1))  # [H, d, C]
    context = torch.einsum("bhtc,hdc->bthd", pooled, v_weight).flatten(2) + attention.v_proj.bias
    return attention.out_proj(context)


def _image_to_token(attention, query: Tensor, key: Tensor, value: Tensor, residual: Tensor) -> Tensor:
    """`residual` plus the attention of per-prompt pixels (query [B, N, C]) to tokens (key, value
    [B, T, C]); returns [B, N, C].

    The query projection is folded into the tokens' keys (plus a per-token constant, which does
    not cancel here: the softmax runs over tokens) and out_proj into the tokens' values.
    """
    heads = attention.num_attention_heads
    keys_t, values_t = _project_tokens(attention, key, value)  # [B, H, T, d]
    q_weight = attention.q_proj.weight.unflatten(0, (heads, -1)) * attention.scaling  # [H, d, C]
    q_bias = attention.q_proj.bias.unflatten(0, (heads, -1)) * attention.scaling  # [H, d]
    folded = torch.einsum("bhtd,hdc->bhtc", keys_t, q_weight).flatten(1, 2)  # [B, H*T, C]
    offsets = torch.einsum("bhtd,hd->bht", keys_t, q_bias).flatten(1)  # [B, H*T]
    # Laid out [B, H, T, N]: the softmax over tokens then runs along the long pixel axis.
    scores = torch.baddbmm(offsets[:, :, None], folded, query.transpose(1, 2)).unflatten(1, (heads, -1))
    probs = scores.softmax(dim=2, dtype=torch.float32).to(values_t.dtype).flatten(1, 2)  # [B, H*T, N]
    return torch.baddbmm(residual, probs.transpose(1, 2), _absorb_output(attention, values_t))
