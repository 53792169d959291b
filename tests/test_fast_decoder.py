"""`FastMaskDecoder` computes what transformers' SamModel forward computes, from the same weights.

The mask decoder is the same size in every SAM variant, so the tiny test model exercises the
full-size decoder (256 channels, 8 heads, 256x256 masks).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relate_anything.sam import Segmenter, capture_mask_tokens, load_sam
from relate_anything.sam.fast_decoder import FastMaskDecoder
from relate_anything.sam.ops import build_point_grid
from relate_anything.settings import SegmentSettings
from sam_factory import SamFiles

TOLERANCE = 1e-5  # float32: only the order of the sums differs
GRID = 3  # points per side of the grid prompts: 9 prompts, 27 masks


@pytest.fixture(scope="module")
def image(dog_jpg: Path) -> np.ndarray:
    return np.asarray(Image.open(dog_jpg).convert("RGB"))


@pytest.fixture(scope="module")
def segmenter(tiny_sam: SamFiles, image: np.ndarray) -> Segmenter:
    segmenter = Segmenter(load_sam(tiny_sam.original_pth), decoder="transformers")
    segmenter.set_image(image)
    return segmenter


def _transformers_decode(segmenter: Segmenter, inputs: dict, multimask: bool):
    model = segmenter.model
    with capture_mask_tokens(model) as tokens, torch.inference_mode():
        output = model(image_embeddings=segmenter._embedding, multimask_output=multimask, **inputs)
    mask_tokens = tokens[0][0][:, 1:] if multimask else tokens[0][0][:, :1]
    return output.pred_masks[0], output.iou_scores[0], mask_tokens


def _prompts(segmenter: Segmenter, kind: str) -> dict[str, torch.Tensor]:
    """SamModel inputs in the model frame for a few kinds of prompt batches."""
    height, width = segmenter.original_size
    generator = torch.Generator().manual_seed(0)
    if kind == "grid":  # segment everything's single points
        points = build_point_grid(GRID) * torch.tensor([width, height], dtype=torch.float64)
        return segmenter.backend.prompt_inputs(
            points[:, None], torch.ones(len(points), 1, dtype=torch.int), None, segmenter.original_size
        )
    if kind == "points":  # 4 prompts of 3 points, foreground and background
        points = torch.rand(4, 3, 2, generator=generator, dtype=torch.float64) * torch.tensor([width, height])
        labels = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 1, 0], [1, 0, 0]])
        return segmenter.backend.prompt_inputs(points, labels, None, segmenter.original_size)
    corners = torch.rand(3, 2, 2, generator=generator, dtype=torch.float64) * torch.tensor([width, height])
    boxes = torch.cat([corners.amin(1), corners.amax(1)], dim=1)
    if kind == "boxes":
        return segmenter.backend.prompt_inputs(None, None, boxes, segmenter.original_size)
    points = torch.tensor([[[400.0, 250.0]], [[100.0, 100.0]], [[600.0, 300.0]]], dtype=torch.float64)
    return segmenter.backend.prompt_inputs(
        points, torch.tensor([[1], [0], [1]]), boxes, segmenter.original_size
    )  # boxes with points


@pytest.mark.parametrize("kind", ["grid", "points", "boxes", "boxes_and_points"])
@pytest.mark.parametrize("multimask", [True, False])
def test_fast_decoder_matches_transformers_forward(segmenter: Segmenter, kind: str, multimask: bool) -> None:
    inputs = _prompts(segmenter, kind)
    expected = _transformers_decode(segmenter, inputs, multimask)
    fast = FastMaskDecoder(segmenter.model, chunk_size=4)  # several chunks, the last one partial
    got = fast(segmenter._embedding, segmenter.backend.sparse_embeddings(inputs), multimask_output=multimask)
    for name, ours, theirs in zip(("low_res_logits", "iou_predictions", "mask_tokens"), got, expected):
        assert ours.shape == theirs.shape, name
        torch.testing.assert_close(ours, theirs, rtol=0, atol=TOLERANCE, msg=name)


def test_chunk_sizes_do_not_change_the_result(segmenter: Segmenter) -> None:
    inputs = _prompts(segmenter, "grid")
    sparse = segmenter.backend.sparse_embeddings(inputs)
    whole = FastMaskDecoder(segmenter.model, chunk_size=64, upscale_chunk_size=64)(segmenter._embedding, sparse)
    pieces = FastMaskDecoder(segmenter.model, chunk_size=2, upscale_chunk_size=1)(segmenter._embedding, sparse)
    for ours, theirs in zip(pieces, whole):  # matrix products blocked differently: rounding only
        torch.testing.assert_close(ours, theirs, rtol=0, atol=TOLERANCE)
    assert FastMaskDecoder(segmenter.model).chunk_size == 4  # a CPU model: small chunks (page faults)
    with pytest.raises(ValueError, match="positive"):
        FastMaskDecoder(segmenter.model, chunk_size=0)


def test_decode_above_equals_filtering_the_full_decode(segmenter: Segmenter) -> None:
    inputs = _prompts(segmenter, "grid")
    sparse = segmenter.backend.sparse_embeddings(inputs)
    fast = FastMaskDecoder(segmenter.model, chunk_size=8)
    logits, iou, tokens = fast(segmenter._embedding, sparse)
    shapes = []
    for threshold in (float(iou.median()), float(iou.max()), float(iou.min()) - 1):
        kept = (iou.flatten() > threshold).nonzero()[:, 0]
        got_logits, got_iou, got_tokens, index = fast.decode_above(segmenter._embedding, sparse, threshold)
        assert torch.equal(index, kept)
        torch.testing.assert_close(got_logits, logits.flatten(0, 1)[kept], rtol=0, atol=1e-6)
        torch.testing.assert_close(got_iou, iou.flatten()[kept], rtol=0, atol=1e-6)
        torch.testing.assert_close(got_tokens, tokens.flatten(0, 1)[kept], rtol=0, atol=1e-6)
        shapes.append(tuple(got_logits.shape))
    # About half, none (nothing is above the maximum; the result is empty but well-shaped), all.
    assert shapes[1:] == [(0, 256, 256), (3 * GRID**2, 256, 256)] and 0 < shapes[0][0] < 3 * GRID**2


@pytest.mark.parametrize("options", [{"pred_iou_thresh": 0.0}, {"pred_iou_thresh": 0.1}], ids=["all", "iou_filtered"])
def test_segment_everything_is_the_same_with_either_decoder(segmenter: Segmenter, options: dict) -> None:
    settings = SegmentSettings(points_per_side=GRID, stability_score_thresh=0.0, box_nms_thresh=1.0, **options)
    results = {}
    for decoder in ("transformers", "fast"):
        other = Segmenter(segmenter.model, decoder=decoder)
        other.set_embedding(segmenter._image)
        results[decoder] = other.segment_everything(settings=settings)
    slow, fast = results["transformers"], results["fast"]
    assert 0 < len(fast) == len(slow)
    if options["pred_iou_thresh"] > 0:
        assert len(fast) < 3 * GRID**2  # the filter removed masks
    assert torch.equal(fast.point_coords, slow.point_coords)
    torch.testing.assert_close(fast.iou_predictions, slow.iou_predictions, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(fast.features, slow.features, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(fast.stability_scores, slow.stability_scores, rtol=0, atol=1e-4)
    # Masks are logits thresholded at 0: only a pixel within rounding of 0 could flip.
    assert int((fast.masks != slow.masks).sum()) <= 3


@pytest.mark.slow
def test_bfloat16_fast_decoder_stays_close_to_float32(segmenter: Segmenter) -> None:
    """bf16 rounds every product to 8 mantissa bits: deviations are measured, not hidden."""
    inputs = _prompts(segmenter, "grid")
    fp32 = FastMaskDecoder(segmenter.model)(segmenter._embedding, segmenter.backend.sparse_embeddings(inputs))
    low = Segmenter(copy.deepcopy(segmenter.model).to(torch.bfloat16))
    low.set_embedding(replace(segmenter._image, embedding=segmenter._embedding.to(torch.bfloat16)))
    bf16 = low.backend.fast_decoder(low._embedding, low.backend.sparse_embeddings(inputs))
    for name, ours, exact in zip(("low_res_logits", "iou_predictions", "mask_tokens"), bf16, fp32):
        assert ours.dtype == torch.bfloat16
        relative = float((ours.float() - exact).norm() / exact.norm())
        assert relative < 0.05, (name, relative)


def test_unknown_decoder_is_refused(segmenter: Segmenter) -> None:
    with pytest.raises(ValueError, match="decoder must be one of"):
        Segmenter(segmenter.model, decoder="cuda-magic")
