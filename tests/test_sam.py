"""Fast CPU tests of the SAM stage: loading, operations, segmentation, feature capture."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SamModel

from relate_anything import masks as masks_module
from relate_anything.boxes import box_iou, masks_to_xyxy_inclusive
from relate_anything.errors import CheckpointError
from relate_anything.masks import mask_areas, mask_intersections, mask_ious
from relate_anything.sam import SegmentationResult, Segmenter, SegmentSettings, capture_mask_tokens, load_sam, ops
from relate_anything.sam.checkpoint import config_from_original_state_dict, hf_to_original_key
from relate_anything.sam.transforms import (
    apply_coords,
    normalize_and_pad,
    preprocess,
    preprocess_shape,
    resize_longest_side,
)
from sam_factory import SamFiles, sam_config

# Random weights predict IoU around 0 and unstable masks, so the score filters are off by default.
NO_FILTERS = SegmentSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def files(tiny_sam: SamFiles) -> SamFiles:
    return tiny_sam  # conftest: sam_factory's tiny model, written once per session


@pytest.fixture(scope="module")
def image(dog_jpg: Path) -> np.ndarray:
    return np.asarray(Image.open(dog_jpg).convert("RGB"))


@pytest.fixture(scope="module")
def segmenter(files: SamFiles, image: np.ndarray) -> Segmenter:
    segmenter = Segmenter.from_pretrained(files.original_pth, settings=NO_FILTERS)
    segmenter.set_image(image)
    return segmenter


def _everything(segmenter: Segmenter, **changes: float) -> SegmentationResult:
    """`segment_everything` with NO_FILTERS changed by `changes`, for this call only."""
    return segmenter.segment_everything(settings=replace(NO_FILTERS, **changes))


# ---------------------------------------------------------------------------------------------
# Loading


def test_folder_and_original_files_load_identical_weights_and_outputs(files: SamFiles, image: np.ndarray) -> None:
    models = [load_sam(path) for path in (files.folder, files.original_pth, files.original_safetensors)]
    reference = models[0].state_dict()
    for model in models[1:]:
        assert reference.keys() == model.state_dict().keys()
        assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())
    outputs = []
    for model in models:
        segmenter = Segmenter(model)
        segmenter.set_image(image)
        outputs.append(segmenter.decode(torch.tensor([[[300.0, 200.0]]]), torch.tensor([[1]])))
    # Equal weights; outputs agree to float rounding only, because from_pretrained memory-maps
    # tensors at unaligned offsets and CPU kernels then sum in another order (~1e-6).
    for output in outputs[1:]:
        torch.testing.assert_close(output.low_res_logits, outputs[0].low_res_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(output.mask_tokens, outputs[0].mask_tokens, rtol=0, atol=1e-5)


def test_loaded_model_uses_original_layer_norm_eps(files: SamFiles) -> None:
    for path in (files.folder, files.original_pth):
        model = load_sam(path)
        for block in model.mask_decoder.transformer.layers:
            norms = (block.layer_norm1, block.layer_norm2, block.layer_norm3, block.layer_norm4)
            assert {norm.eps for norm in norms} == {1e-5}
        assert model.mask_decoder.transformer.layer_norm_final_attn.eps == 1e-5
        assert all(layer.layer_norm1.eps == 1e-6 for layer in model.vision_encoder.layers)


def test_load_sam_device_dtype_and_eval(files: SamFiles) -> None:
    model = load_sam(files.original_pth, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and not model.training and model.device.type == "cpu"


@pytest.mark.parametrize(
    ("width", "depth", "heads", "global_blocks"),
    [(768, 12, 12, [2, 5, 8, 11]), (1024, 24, 16, [5, 11, 17, 23]), (1280, 32, 16, [7, 15, 23, 31]), (32, 2, 2, [1])],
    ids=["vit_b", "vit_l", "vit_h", "tiny"],
)
def test_variant_is_inferred_from_shapes(width: int, depth: int, heads: int, global_blocks: list[int]) -> None:
    encoder = {"embed_dim": width, "depth": depth, "num_heads": heads, "global_attn_indexes": global_blocks}
    with torch.device("meta"):  # shapes only, no memory
        model = SamModel(sam_config(encoder))
    original = {hf_to_original_key(k, 3): v for k, v in model.state_dict().items()}
    vision = config_from_original_state_dict(original).vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (width, depth, heads)
    assert list(vision.global_attn_indexes) == global_blocks
    assert (vision.window_size, vision.image_size, vision.patch_size, vision.mlp_dim) == (14, 1024, 16, 4 * width)


def _original_state_dict(files: SamFiles) -> dict[str, torch.Tensor]:
    return torch.load(files.original_pth, map_location="cpu", weights_only=True)


def _assert_checkpoint_error(path: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_sam(path)
    for fragment in (str(path), *fragments):
        assert fragment in str(info.value)


def test_missing_key_is_named(files: SamFiles, tmp_path: Path) -> None:
    state = _original_state_dict(files)
    del state["mask_decoder.iou_prediction_head.layers.1.bias"]
    torch.save(state, tmp_path / "missing.pth")
    _assert_checkpoint_error(tmp_path / "missing.pth", "missing keys", "mask_decoder.iou_prediction_head.layers.1.bias")


def test_unexpected_key_is_named(files: SamFiles, tmp_path: Path) -> None:
    state = _original_state_dict(files) | {"mask_decoder.extra_head.weight": torch.zeros(2)}
    torch.save(state, tmp_path / "unexpected.pth")
    _assert_checkpoint_error(tmp_path / "unexpected.pth", "unexpected keys", "mask_decoder.extra_head.weight")


def test_wrong_shape_is_named(files: SamFiles, tmp_path: Path) -> None:
    state = _original_state_dict(files)
    state["mask_decoder.transformer.layers.0.mlp.lin2.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "shape.pth")
    _assert_checkpoint_error(
        tmp_path / "shape.pth", "wrong shapes", "mask_decoder.transformer.layers.0.mlp.lin2.bias [7] (expected [256])"
    )


def test_other_model_is_rejected(tmp_path: Path) -> None:
    torch.save({"backbone.conv.weight": torch.zeros(3, 3)}, tmp_path / "resnet.pth")
    _assert_checkpoint_error(tmp_path / "resnet.pth", "image_encoder.patch_embed.proj.weight")


def test_transformers_state_dict_file_gets_a_hint(files: SamFiles) -> None:
    _assert_checkpoint_error(files.folder / "model.safetensors", "pass the folder with config.json")


@pytest.mark.parametrize(
    ("name", "content"),
    [("garbage.pth", b"\x00not a checkpoint" * 10), ("garbage.safetensors", b"{{{{ nope")],
)
def test_garbage_file_is_rejected(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    _assert_checkpoint_error(tmp_path / name, "not a readable SAM checkpoint")


def test_non_dict_checkpoint_is_rejected(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    _assert_checkpoint_error(tmp_path / "list.pth", "expected a dict of tensors")


def test_normalisation_entries_of_published_files_are_accepted(files: SamFiles, tmp_path: Path) -> None:
    state = _original_state_dict(files)
    state["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    torch.save(state, tmp_path / "with_norm.pth")
    load_sam(tmp_path / "with_norm.pth")
    state["pixel_std"] = torch.ones(3, 1, 1)
    torch.save(state, tmp_path / "other_norm.pth")
    _assert_checkpoint_error(tmp_path / "other_norm.pth", "pixel_std")


# ---------------------------------------------------------------------------------------------
# Transforms


def test_preprocess_shape_and_padding(image: np.ndarray) -> None:
    assert preprocess_shape(534, 800) == (684, 1024)
    assert preprocess_shape(427, 640) == (683, 1024)  # the photo: 427 * 1.6 = 683.2
    pixels = preprocess(image)
    assert pixels.shape == (1, 3, 1024, 1024) and pixels.dtype == torch.float32
    assert torch.all(pixels[..., 683:, :] == 0) and pixels[..., :683, :].abs().sum() > 0


def test_apply_coords_scales_to_the_resized_frame() -> None:
    coords = apply_coords(torch.tensor([[800.0, 534.0], [0.0, 0.0]]), (534, 800))
    assert torch.allclose(coords, torch.tensor([[1024.0, 684.0], [0.0, 0.0]]))


# ---------------------------------------------------------------------------------------------
# Operations against direct Python loops


def _loop_box_iou(a: list[float], b: list[float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _loop_greedy(order: list[int], overlaps: callable) -> list[int]:
    kept: list[int] = []
    for i in order:
        if not any(overlaps(k, i) for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_nms_matches_python_loop(threshold: float) -> None:
    generator = torch.Generator().manual_seed(1)
    xy = torch.rand(60, 2, generator=generator) * 80
    wh = torch.rand(60, 2, generator=generator) * 40 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(60, generator=generator)
    b = boxes.tolist()
    order = sorted(range(60), key=lambda i: -scores[i].item())
    expected = _loop_greedy(order, lambda k, i: _loop_box_iou(b[k], b[i]) > threshold)
    assert ops.nms(boxes, scores, threshold).tolist() == expected


def _loop_suppression(suppresses: torch.Tensor) -> list[bool]:
    """The greedy definition, one candidate at a time in rank order."""
    kept: list[int] = []
    for j in range(len(suppresses)):
        if not any(bool(suppresses[i, j]) for i in kept):
            kept.append(j)
    return [j in kept for j in range(len(suppresses))]


@pytest.mark.parametrize("density", [0.0, 0.02, 0.1, 0.5, 1.0])
def test_greedy_suppression_equals_the_sequential_definition(density: float) -> None:
    generator = torch.Generator().manual_seed(int(density * 100))
    suppresses = torch.rand(150, 150, generator=generator) < density  # not symmetric: any relation
    expected = _loop_suppression(suppresses)
    assert ops.greedy_suppression(suppresses).tolist() == expected
    upper = suppresses & torch.ones(150, 150, dtype=torch.bool).triu(1)
    assert ops._suppression_rounds(upper, max_rounds=64).tolist() == expected  # the GPU path


@pytest.mark.parametrize("max_rounds", [64, 3])
def test_suppression_rounds_on_a_long_chain(max_rounds: int) -> None:
    """Each candidate can only suppress the next: kept, removed, kept, ... A chain longer than
    max_rounds is finished one candidate at a time, with the same answer."""
    n = 101
    chain = torch.zeros(n, n, dtype=torch.bool)
    chain[torch.arange(n - 1), torch.arange(1, n)] = True
    expected = [i % 2 == 0 for i in range(n)]
    assert ops._suppression_rounds(chain, max_rounds=max_rounds).tolist() == expected == _loop_suppression(chain)
    assert ops.greedy_suppression(chain).tolist() == expected


def test_remove_duplicate_masks_matches_python_loop() -> None:
    generator = torch.Generator().manual_seed(2)
    base = torch.rand(12, 20, 30, generator=generator) > 0.5
    noisy = base ^ (torch.rand(12, 20, 30, generator=generator) > 0.9)  # IoU with base around 0.8
    masks = torch.cat([base, noisy, torch.zeros(2, 20, 30, dtype=torch.bool)])
    m = masks.flatten(1).numpy()

    def iou(i: int, j: int) -> float:
        union = np.logical_or(m[i], m[j]).sum()
        return np.logical_and(m[i], m[j]).sum() / union if union else 1.0

    order = sorted(range(len(m)), key=lambda i: -m[i].sum())  # stable: ties keep index order
    for threshold in (0.5, 0.8, 0.85):
        expected = _loop_greedy(order, lambda k, i: iou(k, i) >= threshold)
        assert ops.remove_duplicate_masks(masks, threshold).tolist() == expected
    assert 0 < len(ops.remove_duplicate_masks(masks, 0.8)) < len(masks)


def test_mask_intersections_exact_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(3)
    masks = torch.rand(5, 17, 13, generator=generator) > 0.4
    others = masks[:3].flip(0)
    expected = torch.tensor([[int((a & b).sum()) for b in masks] for a in masks])
    expected_pairs = torch.tensor([[int((a & b).sum()) for b in others] for a in masks])
    ious = expected.double() / (expected.diagonal()[:, None] + expected.diagonal()[None, :] - expected)
    for chunk in (1 << 24, 5 * 7):  # whole, then 7-pixel chunks
        monkeypatch.setattr(masks_module, "_INTERSECTION_CHUNK_ELEMENTS", chunk)
        assert torch.equal(mask_intersections(masks), expected)
        assert torch.equal(mask_intersections(masks, others), expected_pairs)
        torch.testing.assert_close(mask_ious(masks), ious, rtol=0, atol=1e-12)


def test_masks_to_boxes_matches_python_loop() -> None:
    generator = torch.Generator().manual_seed(4)
    masks = torch.rand(6, 9, 11, generator=generator) > 0.97
    masks[0] = False
    expected = []
    for mask in masks:
        ys, xs = np.nonzero(mask.numpy())
        expected.append([xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0])
    assert masks_to_xyxy_inclusive(masks).tolist() == np.array(expected, dtype=np.float32).tolist()


def test_stability_score_definition() -> None:
    logits = torch.tensor([[[-2.0, -0.5], [0.5, 2.0]], [[3.0, 3.0], [3.0, -3.0]]])
    # mask 0: > 1 -> 1 pixel, > -1 -> 3 pixels; mask 1: 3 and 3
    assert ops.stability_score(logits, 0.0, 1.0).tolist() == pytest.approx([1 / 3, 1.0])


def test_stability_score_counts_like_a_plain_sum() -> None:
    logits = torch.randn(3, 37, 53, generator=torch.Generator().manual_seed(5)) * 2
    high = (logits > 0.5).sum((1, 2), dtype=torch.int64)
    low = (logits > -1.5).sum((1, 2), dtype=torch.int64)
    assert torch.equal(ops.stability_score(logits, -0.5, 1.0), high.float() / low.float())
    wide = torch.randn(2, 2, 40_000, generator=torch.Generator().manual_seed(8))  # rows too wide for int16
    assert torch.equal(
        ops.stability_score(wide, 0.0, 1.0), (wide > 1).sum((1, 2)).float() / (wide > -1).sum((1, 2)).float()
    )


def test_mask_areas_count_pixels() -> None:
    masks = torch.rand(4, 3, 19, 23, generator=torch.Generator().manual_seed(9)) > 0.4
    assert torch.equal(mask_areas(masks).long(), masks.sum((-1, -2)))
    wide = torch.rand(2, 2, 40_000, generator=torch.Generator().manual_seed(10)) > 0.5
    assert torch.equal(mask_areas(wide).long(), wide.sum((-1, -2)))


def test_boxes_from_logits_equal_boxes_of_thresholded_masks() -> None:
    logits = torch.randn(8, 23, 31, generator=torch.Generator().manual_seed(6)) - 2.5  # sparse masks
    logits[0] = -5  # an empty mask
    for threshold in (0.0, 0.7):
        assert torch.equal(ops.boxes_from_logits(logits, threshold), masks_to_xyxy_inclusive(logits > threshold))
    assert ops.boxes_from_logits(logits[:0], 0.0).shape == (0, 4)


@pytest.mark.parametrize(
    "size", [(427, 640), (800, 534), (1500, 2250), (480, 640), (1024, 1024), (7, 1999), (333, 1024)]
)
def test_postprocess_computes_only_the_kept_rows_bit_for_bit(size: tuple[int, int]) -> None:
    """Upsampling only the un-padded corner equals upsampling everything and cropping."""
    from relate_anything.sam.transforms import postprocess_logits

    low = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(7)) * 4
    input_h, input_w = preprocess_shape(*size)
    full = torch.nn.functional.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.interpolate(
        full[..., :input_h, :input_w], size, mode="bilinear", align_corners=False
    )
    assert torch.equal(postprocess_logits(low, size), expected)


def test_point_grid_matches_segment_anything_formula() -> None:
    n = 5
    offset = 1 / (2 * n)
    side = np.linspace(offset, 1 - offset, n)
    expected = np.stack([np.tile(side[None, :], (n, 1)), np.tile(side[:, None], (1, n))], axis=-1).reshape(-1, 2)
    assert np.array_equal(ops.build_point_grid(n).numpy(), expected)


# ---------------------------------------------------------------------------------------------
# Feature capture


def test_captured_tokens_are_the_decoders_own_tokens(segmenter: Segmenter) -> None:
    """The IoU head applied to query 0 and the hypernetworks applied to queries 1..4 give back
    exactly the decoder's IoU predictions and mask logits: the ordering is the one we assume."""
    model = segmenter.model
    decoder = model.mask_decoder
    queries, keys = [], []

    def record(module: torch.nn.Module, args: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        queries.append(output[0])
        keys.append(output[1])

    handle = decoder.transformer.register_forward_hook(record)
    try:
        with capture_mask_tokens(model) as tokens, torch.inference_mode():
            points = torch.tensor([[[[200.0, 150.0]], [[500.0, 400.0]]]])
            output = model(image_embeddings=segmenter._embedding, input_points=points, multimask_output=True)
    finally:
        handle.remove()
    mask_tokens = tokens[0][0]  # [2 prompts, 4, 256]
    assert torch.equal(mask_tokens, queries[0][0, :, 1:5])
    with torch.inference_mode():
        iou_all = decoder.iou_prediction_head(queries[0][0, :, 0])  # [2, 4]
        side = segmenter._embedding.shape[-1]
        image = keys[0][:, 0].transpose(1, 2).reshape(2, -1, side, side)  # keys: [prompts, 1, HW, D]
        upscaled = decoder.activation(decoder.upscale_layer_norm(decoder.upscale_conv1(image)))
        upscaled = decoder.activation(decoder.upscale_conv2(upscaled)).flatten(2)  # [2, 32, 256*256]
        hyper = torch.stack([mlp(mask_tokens[:, k]) for k, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
        logits = (hyper @ upscaled).reshape(2, 4, 4 * side, 4 * side)
    torch.testing.assert_close(iou_all[:, 1:], output.iou_scores[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits[:, 1:], output.pred_masks[0], rtol=0, atol=1e-4)


def test_decode_picks_the_token_of_each_returned_mask(segmenter: Segmenter, image: np.ndarray) -> None:
    # The path that reads tokens by hook.
    segmenter = Segmenter(segmenter.model, settings=NO_FILTERS, decoder="transformers")
    segmenter.set_image(image)
    points, labels = torch.tensor([[[300.0, 250.0]]]), torch.tensor([[1]])
    with capture_mask_tokens(segmenter.model) as tokens:
        multi = segmenter.decode(points, labels, multimask_output=True)
        single = segmenter.decode(points, labels, multimask_output=False)
    assert torch.equal(multi.mask_tokens[0], tokens[0][0, 0, 1:4])
    assert torch.equal(single.mask_tokens[0], tokens[1][0, 0, 0:1])
    assert multi.low_res_logits.shape == (1, 3, 256, 256) and single.low_res_logits.shape == (1, 1, 256, 256)


def test_no_hooks_are_left_behind(segmenter: Segmenter) -> None:
    transformer = segmenter.model.mask_decoder.transformer
    before = len(transformer._forward_hooks)
    segmenter.segment_prompts(points=[[100, 100]])
    with pytest.raises(RuntimeError, match="boom"), capture_mask_tokens(segmenter.model):
        raise RuntimeError("boom")
    assert len(transformer._forward_hooks) == before == 0


# ---------------------------------------------------------------------------------------------
# Segmentation


def _assert_consistent(result: SegmentationResult, image: np.ndarray) -> None:
    n = len(result)
    assert result.masks.shape == (n, *image.shape[:2]) and result.masks.dtype == torch.bool
    assert result.iou_predictions.shape == (n,) and result.iou_predictions.dtype == torch.float32
    assert result.stability_scores.shape == (n,) and result.stability_scores.dtype == torch.float32
    assert result.features.shape == (n, 256) and result.features.dtype == torch.float32
    assert torch.equal(result.boxes, masks_to_xyxy_inclusive(result.masks))


def test_segment_everything_on_a_photo(segmenter: Segmenter, image: np.ndarray) -> None:
    # Random weights give noisy masks spread over the whole photo, so their boxes all nearly
    # cover it: box NMS is opened here to keep several masks for the checks below.
    result = _everything(segmenter, box_nms_thresh=1.0, duplicate_iou_thresh=0.6)
    _assert_consistent(result, image)
    assert len(result) > 1
    assert result.point_coords is not None and result.point_coords.shape == (len(result), 2)
    areas = result.masks.flatten(1).sum(1)
    assert torch.all(areas[:-1] >= areas[1:])  # ordered by decreasing area
    iou = mask_ious(result.masks)
    off_diagonal = ~torch.eye(len(result), dtype=torch.bool)
    assert torch.all(iou[off_diagonal] < 0.6)  # no duplicates left


def test_segment_everything_respects_box_nms(segmenter: Segmenter) -> None:
    result = _everything(segmenter, box_nms_thresh=0.99)
    assert len(result) >= 1
    ious = box_iou(result.boxes, result.boxes)
    assert torch.all(ious[~torch.eye(len(result), dtype=torch.bool)] <= 0.99)


# NMS and de-duplication opened, on a 2 x 2 grid: 12 masks, fast.
OPEN = {"box_nms_thresh": 1.0, "duplicate_iou_thresh": 1.01, "points_per_side": 2}


@pytest.fixture(scope="module")
def unfiltered(segmenter: Segmenter) -> SegmentationResult:
    return _everything(segmenter, **OPEN)


def test_each_stage_removes_masks(segmenter: Segmenter, unfiltered: SegmentationResult) -> None:
    assert len(unfiltered) == 2 * 2 * 3  # nothing filtered: every grid point's three masks
    assert len(_everything(segmenter, **(OPEN | {"box_nms_thresh": 0.9}))) < len(unfiltered)
    assert len(_everything(segmenter, **(OPEN | {"duplicate_iou_thresh": 0.6}))) < len(unfiltered)
    median_area = int(unfiltered.masks.flatten(1).sum(1).median())
    small_removed = _everything(segmenter, **(OPEN | {"min_mask_area": median_area}))
    assert 0 < len(small_removed) < len(unfiltered)
    assert torch.all(small_removed.masks.flatten(1).sum(1) >= median_area)


def test_empty_masks_never_become_segments(segmenter: Segmenter, unfiltered: SegmentationResult) -> None:
    """With no pixel above the mask threshold every grid mask is empty: none is kept, even with
    min_mask_area 0 (an empty mask has a box of zeros and no place in a graph)."""
    assert len(unfiltered) == 12 and bool((unfiltered.masks.flatten(1).sum(1) > 0).all())
    assert len(_everything(segmenter, **(OPEN | {"mask_threshold": 1e6, "min_mask_area": 0}))) == 0


def test_duplicate_removal_above_one_keeps_every_mask_in_area_order(unfiltered: SegmentationResult) -> None:
    """A mask IoU is at most 1: with a threshold above 1 the pairwise intersections are skipped,
    and the result is what computing them gives."""
    assert ops.remove_duplicate_masks(unfiltered.masks, 1.01).tolist() == list(range(len(unfiltered)))
    areas = unfiltered.masks.flatten(1).sum(1)
    assert torch.all(areas[:-1] >= areas[1:])


def _keys(result: SegmentationResult) -> set[tuple[float, ...]]:
    return {tuple(p) + (round(s, 6),) for p, s in zip(result.point_coords.tolist(), result.iou_predictions.tolist())}


@pytest.mark.parametrize("name", ["pred_iou_thresh", "stability_score_thresh"])
def test_raising_score_thresholds_never_adds_masks(
    segmenter: Segmenter, unfiltered: SegmentationResult, name: str
) -> None:
    """Monotone for the score filters themselves (NMS and de-duplication are greedy, so a removed
    mask can stop suppressing another; they are opened here to test the filters alone)."""
    scores = unfiltered.iou_predictions if name == "pred_iou_thresh" else unfiltered.stability_scores
    # A threshold <= 0 disables the filter, as in SAM; settings stay in [0, 1] (random weights
    # predict IoUs a little above 1 too).
    positive = scores[(scores > 0) & (scores <= 1)].sort().values
    assert len(positive) >= 4
    previous = _keys(unfiltered)
    for quantile in (0.25, 0.75):
        threshold = float(positive[int(quantile * len(positive))])
        current = _keys(_everything(segmenter, **(OPEN | {name: threshold})))
        assert current < previous
        previous = current


def test_segment_prompts_points_boxes_and_both(segmenter: Segmenter, image: np.ndarray) -> None:
    points = np.array([[300.0, 250.0], [600.0, 100.0]])
    labels = np.array([1, 0])
    boxes = torch.tensor([[100.0, 80.0, 500.0, 400.0], [0.0, 0.0, 639.0, 426.0], [350.0, 200.0, 420.0, 300.0]])
    for result, expected in (
        (segmenter.segment_prompts(points=points, point_labels=labels), 1),
        (segmenter.segment_prompts(boxes=boxes), 3),
        (segmenter.segment_prompts(points=points, point_labels=labels, boxes=boxes, multimask_output=False), 3),
    ):
        _assert_consistent(result, image)
        assert len(result) == expected and result.point_coords is None


def test_segment_prompts_returns_the_best_mask_and_its_token(segmenter: Segmenter) -> None:
    points, labels = torch.tensor([[420.0, 260.0]]), torch.tensor([1])
    decoded = segmenter.decode(points[None], labels[None], multimask_output=True)
    best = int(decoded.iou_predictions[0].argmax())
    result = segmenter.segment_prompts(points=points, point_labels=labels)
    assert torch.equal(result.features[0], decoded.mask_tokens[0, best])
    assert result.iou_predictions[0] == decoded.iou_predictions[0, best]
    full = segmenter.upscale_logits(decoded.low_res_logits[0, best : best + 1])
    assert torch.equal(result.masks, full > 0)


def test_prompt_validation(segmenter: Segmenter, files: SamFiles) -> None:
    with pytest.raises(ValueError, match="points and/or boxes"):
        segmenter.segment_prompts()
    with pytest.raises(ValueError, match=r"\[P, 2\]"):
        segmenter.segment_prompts(points=[1.0, 2.0])
    with pytest.raises(ValueError, match="point_labels"):
        segmenter.segment_prompts(points=[[1.0, 2.0]], point_labels=[1, 0])
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        segmenter.segment_prompts(boxes=[[1.0, 2.0, 3.0]])
    with pytest.raises(RuntimeError, match="set_image"):
        Segmenter(segmenter.model).segment_everything()


def test_from_pretrained_passes_settings(files: SamFiles) -> None:
    settings = SegmentSettings(points_per_side=7, pred_iou_thresh=0.5, min_mask_area=9)
    segmenter = Segmenter.from_pretrained(files.folder, settings=settings, points_per_batch=64)
    assert segmenter.settings is settings and segmenter.points_per_batch == 64
    assert Segmenter(segmenter.model).settings == SegmentSettings()  # the defaults
    assert (SegmentSettings().box_nms_thresh, SegmentSettings().duplicate_iou_thresh) == (0.7, 0.8)


def test_set_image_accepts_pil(segmenter: Segmenter, image: np.ndarray) -> None:
    other = Segmenter(segmenter.model)
    other.set_image(Image.fromarray(image))
    assert torch.equal(other._embedding, segmenter._embedding) and other.original_size == (427, 640)


def _count_encodings(segmenter: Segmenter) -> list[int]:
    """A list that grows by the batch size every time the image encoder runs."""
    calls: list[int] = []
    segmenter.model.vision_encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    return calls


def test_embedding_cache_skips_encoding_a_photo_seen_recently(files: SamFiles, image: np.ndarray) -> None:
    segmenter = Segmenter.from_pretrained(files.folder, embedding_cache_size=2)
    calls = _count_encodings(segmenter)
    other = np.ascontiguousarray(image[::-1])
    segmenter.set_image(image)
    first = segmenter._embedding
    segmenter.set_image(other)
    segmenter.set_image(image.copy())  # equal pixels, another array: still cached
    assert calls == [1, 1] and segmenter._embedding is first and segmenter.original_size == (427, 640)
    segmenter.set_image(np.ascontiguousarray(image[:, ::-1]))  # a third photo evicts the oldest (other)
    segmenter.set_image(other)
    assert calls == [1, 1, 1, 1]
    segmenter.reset_image()
    segmenter.set_image(image)
    assert calls == [1, 1, 1, 1, 1]


def test_segment_everything_is_computed_once_per_photo_and_settings(segmenter: Segmenter) -> None:
    first = segmenter.segment_everything()
    assert segmenter.segment_everything() is first
    assert segmenter.segment_everything(settings=NO_FILTERS) is first  # equal settings share the result
    other = segmenter.segment_everything(settings=replace(NO_FILTERS, box_nms_thresh=0.5))
    assert other is not first
    assert segmenter.settings == NO_FILTERS  # a call's settings never change the segmenter's


def test_embed_images_batches_photos_of_different_sizes(files: SamFiles, image: np.ndarray) -> None:
    segmenter = Segmenter.from_pretrained(files.folder, settings=NO_FILTERS, embedding_cache_size=0)
    small = np.ascontiguousarray(image[:300, :200])
    calls = _count_encodings(segmenter)
    batched = segmenter.embed_images([image, small])
    assert calls == [2] and [e.original_size for e in batched] == [(427, 640), (300, 200)]
    for photo, embedding in zip([image, small], batched):
        segmenter.set_image(photo)
        torch.testing.assert_close(embedding.embedding, segmenter._embedding, atol=1e-5, rtol=1e-5)
        alone = segmenter.segment_everything()
        segmenter.reset_image()
        segmenter.set_embedding(embedding)
        together = segmenter.segment_everything()
        assert torch.equal(alone.masks, together.masks)


def test_prepared_photos_embed_like_raw_photos(files: SamFiles, image: np.ndarray) -> None:
    """`prepare` is the CPU half of embedding (resize, fingerprint): the same inputs and result."""
    segmenter = Segmenter.from_pretrained(files.folder, embedding_cache_size=0)
    small = np.ascontiguousarray(image[:300, :200])
    raw = segmenter.embed_images([image, small])
    prepared = segmenter.embed_images([segmenter.prepare(image), small])
    for a, b in zip(raw, prepared):
        assert torch.equal(a.embedding, b.embedding)
        assert (a.original_size, a.fingerprint) == (b.original_size, b.fingerprint)
    assert torch.equal(
        normalize_and_pad(resize_longest_side(image)), preprocess(image)
    )  # the two halves make the whole


# ---------------------------------------------------------------------------------------------
# SegmentationResult


def _result(n: int, with_points: bool = True) -> SegmentationResult:
    masks = torch.zeros(n, 4, 5, dtype=torch.bool)
    for i in range(n):
        masks[i, : i + 1, : i + 1] = True
    return SegmentationResult(
        masks=masks,
        iou_predictions=torch.arange(n, dtype=torch.float32),
        stability_scores=torch.ones(n),
        boxes=masks_to_xyxy_inclusive(masks),
        features=torch.arange(n, dtype=torch.float32)[:, None].expand(n, 256).clone(),
        point_coords=torch.arange(2 * n, dtype=torch.float32).reshape(n, 2) if with_points else None,
    )


def test_result_indexing_keeps_fields_together() -> None:
    result = _result(4)
    for index in (2, -1, slice(1, 3), [3, 0], np.array([True, False, True, False]), result.iou_predictions > 1):
        part = result[index]
        expected = torch.arange(4)[torch.as_tensor(index) if not isinstance(index, (int, slice)) else index].reshape(-1)
        assert part.iou_predictions.tolist() == expected.float().tolist()
        assert part.features[:, 0].tolist() == expected.float().tolist()
        assert torch.equal(part.masks, result.masks[expected])
        assert torch.equal(part.point_coords, result.point_coords[expected])


def test_result_concatenate_and_validation() -> None:
    joined = SegmentationResult.concatenate([_result(2, with_points=False), _result(3)])
    assert len(joined) == 5
    assert torch.isnan(joined.point_coords[:2]).all() and not torch.isnan(joined.point_coords[2:]).any()
    assert len(SegmentationResult.empty((4, 5))) == 0
    with pytest.raises(ValueError, match="boxes"):
        SegmentationResult(
            masks=torch.zeros(2, 4, 5, dtype=torch.bool),
            iou_predictions=torch.zeros(2),
            stability_scores=torch.zeros(2),
            boxes=torch.zeros(3, 4),
            features=torch.zeros(2, 256),
        )


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu(files: SamFiles, image: np.ndarray, segmenter: Segmenter) -> None:
    gpu = Segmenter.from_pretrained(files.original_pth, device="cuda", settings=NO_FILTERS)
    gpu.set_image(image)
    result = gpu.segment_everything()
    assert result.masks.device.type == "cuda" and result.features.device.type == "cuda"
    cpu = segmenter.segment_everything()
    assert len(result) == len(cpu)
    torch.testing.assert_close(result.features.cpu(), cpu.features, rtol=0, atol=1e-3)


def test_folder_that_is_not_sam_is_reported(tmp_path, tiny_sam):
    import json
    import shutil

    from relate_anything.errors import CheckpointError
    from relate_anything.sam import load_sam

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="empty: not a transformers SAM folder"):
        load_sam(empty)
    # SAM config, weights of another shape: refused, not silently re-initialised.
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_sam.folder, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["vision_config"]["hidden_size"] = 64
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="wrong: "):
        load_sam(wrong)
