"""SAM-HQ and SAM 2's image model as the pipeline's segmenter, on tiny random models.

"Segment everything" is checked against an oracle built from the transformers models' own
forward (all grid points in one call), the upscaling each model's predictor uses and the
automatic mask generator's filters applied one by one; prompted features against the
distillation students (`load_student`), which are what a distilled head was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from conftest import RANDOM_WEIGHT_FLAGS
from ram_factory import random_state_dict, write_safetensors
from relate_anything.boxes import box_iou, masks_to_xyxy_inclusive
from relate_anything.cli import app
from relate_anything.errors import CheckpointError
from relate_anything.masks import mask_areas, mask_ious
from relate_anything.pipeline import PipelineSpec
from relate_anything.ram import RelationHeadConfig
from relate_anything.sam import Segmenter, SegmentSettings, load_segmentation_model
from relate_anything.sam.backends import Sam2Backend, SamBackend, SamHQBackend
from relate_anything.sam.ops import build_point_grid, nms, remove_duplicate_masks, stability_score
from relate_anything.sam.sam2_ops import as_frame_tensor, preprocess_square
from relate_anything.sam.students import load_student
from relate_anything.sam.transforms import apply_coords, postprocess_logits, preprocess
from sam2_factory import random_sam2_image, random_sam2_video, random_sam_hq

# Seeds whose random masks differ enough (in boxes and overlaps) for every filter of "segment
# everything" to remove some masks and keep others on the photo of the oracle test.
SEEDS = {"sam_hq": 1, "sam2": 1}
WIDTHS = {"sam_hq": 64, "sam2": 128}
POINT = (300.0, 200.0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    return {"sam_hq": random_sam_hq(seed=SEEDS["sam_hq"]), "sam2": random_sam2_image(seed=SEEDS["sam2"])}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, models) -> dict[str, Path]:
    """Each model saved with save_pretrained, and a head of its token width recording it."""
    root = tmp_path_factory.mktemp("students")
    paths = {}
    for kind, model in models.items():
        model.save_pretrained(root / kind)
        paths[kind] = root / kind
    return paths


@pytest.fixture(scope="module")
def heads(folders) -> dict[str, Path]:
    paths = {}
    for kind, folder in folders.items():
        config = RelationHeadConfig(
            feature_dim=WIDTHS[kind],
            hidden_size=128,
            num_heads=2,
            intermediate_size=64,
            vocab_size=10,
            max_position_embeddings=4,
            segmenter=str(folder),
        )
        paths[kind] = write_safetensors(folder.parent / f"{kind}-head.safetensors", random_state_dict(config), config)
    return paths


@pytest.fixture(scope="module")
def photo(images_dir) -> np.ndarray:
    return np.array(Image.open(images_dir / "two_dogs_stick.jpg").convert("RGB"))


# ----------------------------------------------------------------------------------------------
# Choosing the segmenter


def test_segmenter_is_chosen_by_model_type(tmp_path, folders, tiny_sam):
    video = tmp_path / "sam2_video"
    random_sam2_video(object_score_bias=None).save_pretrained(video)
    expected = {
        folders["sam_hq"]: SamHQBackend,
        folders["sam2"]: Sam2Backend,
        video: Sam2Backend,  # a SAM 2 video folder: its image model
        tiny_sam.folder: SamBackend,
        tiny_sam.original_pth: SamBackend,  # original segment-anything files stay SAM
    }
    for path, backend in expected.items():
        segmenter = PipelineSpec(sam=str(path)).build_segmenter("cpu")
        assert type(segmenter.backend) is backend, path
        assert segmenter.name == str(path)
    assert PipelineSpec(sam=str(folders["sam_hq"])).build_segmenter("cpu").feature_dim == 64
    assert PipelineSpec(sam=str(video)).build_segmenter("cpu").feature_dim == 128


def test_other_models_are_refused_naming_the_model_types(tiny_seggpt_folder):
    with pytest.raises(CheckpointError, match="seggpt.*sam, sam_hq, sam2, sam2_video"):
        load_segmentation_model(tiny_seggpt_folder)


# ----------------------------------------------------------------------------------------------
# Segment everything: the automatic mask generator of each model, by hand


def grid_oracle(kind: str, model, photo: np.ndarray, points: torch.Tensor):
    """Every grid point's masks as the model's own automatic mask generator makes them.

    SAM-HQ (SysCV's ``MaskDecoderHQ``): with multimask output, the best of SAM's masks 1..3 by
    predicted IoU plus the HQ mask, one per point; its token is SAM's mask token of that mask.
    SAM 2: masks 1..3 of every point, each with its own mask token (``sam_tokens_out``).

    Returns full-resolution logits [K, H, W], IoU [K], tokens [K, D], point index [K].
    """
    height, width = photo.shape[:2]
    count = len(points)
    labels = torch.ones(1, count, 1, dtype=torch.int)
    captured = []
    with torch.inference_mode():
        if kind == "sam_hq":
            size = model.config.vision_config.image_size
            embedding, intermediate = model.get_image_embeddings(preprocess(photo, image_size=size))
            coords = apply_coords(points, (height, width), size)[None, :, None, :]
            decoder = model.mask_decoder
            hooks = [decoder.transformer, decoder.iou_prediction_head]
            handles = [m.register_forward_hook(lambda m, a, out: captured.append(out)) for m in hooks]
            output = model(
                image_embeddings=embedding,
                intermediate_embeddings=intermediate,
                input_points=coords,
                input_labels=labels,
                multimask_output=True,
            )
            for handle in handles:
                handle.remove()
            queries, all_iou = captured[0][0][0], captured[1][0]  # [P, T, D], [P, 4]
            token = 1 + all_iou[:, 1:4].argmax(dim=1)  # the best of masks 1..3
            tokens = queries[torch.arange(count), 1 + token]  # query 0 is the IoU token
            low_res, iou = output.pred_masks[0][:, 0], output.iou_scores[0][:, 0]
            torch.testing.assert_close(iou, all_iou[torch.arange(count), token], rtol=0, atol=1e-6)
            logits = postprocess_logits(low_res[:, None], (height, width), size)[:, 0]
            return logits, iou, tokens, torch.arange(count)
        size = model.config.prompt_encoder_config.image_size
        levels = model.get_image_embeddings(preprocess_square(photo, image_size=size))
        scale = torch.tensor([size / width, size / height], dtype=torch.float32)
        handle = model.mask_decoder.register_forward_hook(lambda m, a, out: captured.append(out[2]))
        output = model(
            image_embeddings=levels,
            input_points=(points.float() * scale)[None, :, None, :],
            input_labels=labels,
            multimask_output=True,
        )
        handle.remove()
        low_res, iou, tokens = output.pred_masks[0], output.iou_scores[0], captured[0][0]  # [P, 3, ...]
        logits = F.interpolate(low_res.flatten(0, 1)[:, None], (height, width), mode="bilinear")[:, 0]
        return logits, iou.flatten(), tokens.flatten(0, 1), torch.arange(count).repeat_interleave(3)


def _between(values: torch.Tensor, drop: int) -> float:
    """A threshold between sorted `values`, at least `drop` (>= 1) of them below it."""
    ordered = values.sort().values
    k = next(k for k in range(max(drop, 1), len(ordered)) if ordered[k - 1] < ordered[k])
    return float((ordered[k - 1] + ordered[k]) / 2)


def _below_the_top(pairs: torch.Tensor) -> float:
    """A threshold between the two highest distinct values of a pairwise [N, N] matrix's upper
    triangle: suppression at it removes the masks of the most similar pair(s), and only those."""
    upper = pairs[torch.ones_like(pairs, dtype=torch.bool).triu(1)]
    return _between(upper, len(upper) - int((upper == upper.max()).sum()))


@pytest.mark.parametrize("kind", ["sam_hq", "sam2"])
def test_segment_everything_is_the_models_own_generator(kind, models, photo):
    """Every filter removes masks, and what is left equals the oracle mask for mask.

    Thresholds are placed between the oracle's own values (random weights amplify float rounding,
    so fixed thresholds could fall elsewhere on another machine); the filters run in the order of
    segment-anything's automatic mask generator, then RAM's duplicate removal and the area limit.
    """
    height, width = photo.shape[:2]
    points = build_point_grid(4) * torch.tensor([width, height], dtype=torch.float64)
    logits, iou, tokens, index = grid_oracle(kind, models[kind], photo, points)
    masks = logits > 0.0
    counts = [len(iou)]
    pred_iou_thresh = _between(iou, len(iou) // 5)
    keep = iou > pred_iou_thresh
    counts.append(int(keep.sum()))
    stability = stability_score(logits, 0.0, 1.0)
    stability_score_thresh = _between(stability[keep], int(keep.sum()) // 3)
    keep &= stability >= stability_score_thresh
    counts.append(int(keep.sum()))
    kept = keep.nonzero()[:, 0]
    boxes = masks_to_xyxy_inclusive(masks[kept])
    # SAM-HQ's random masks all span the photo: boxes cannot tell them apart, NMS stays off.
    box_nms_thresh = 1.0 if kind == "sam_hq" else _below_the_top(box_iou(boxes, boxes))
    kept = kept[nms(boxes, iou[kept], box_nms_thresh)]
    counts.append(len(kept))
    duplicate_iou_thresh = _below_the_top(mask_ious(masks[kept]))
    kept = kept[remove_duplicate_masks(masks[kept], duplicate_iou_thresh)]
    counts.append(len(kept))
    min_mask_area = int(mask_areas(masks[kept]).min()) + 1
    kept = kept[mask_areas(masks[kept]) >= min_mask_area]
    counts.append(len(kept))
    if kind == "sam_hq":  # one mask a point: the best of three, as SAM-HQ's decoder returns
        assert counts[0] == 16 and counts[3] == counts[2]
        counts.pop(3)
    else:
        assert counts[0] == 3 * 16
    assert all(a > b for a, b in zip(counts, counts[1:])) and counts[-1] >= 2, counts

    settings = SegmentSettings(
        points_per_side=4,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
        box_nms_thresh=box_nms_thresh,
        duplicate_iou_thresh=duplicate_iou_thresh,
        min_mask_area=min_mask_area,
    )
    segmenter = Segmenter(models[kind], settings=settings, points_per_batch=7)  # several grid batches
    segmenter.set_image(photo)
    result = segmenter.segment_everything()
    assert torch.equal(result.masks, masks[kept])
    assert torch.equal(result.point_coords, points[index[kept]].float())
    torch.testing.assert_close(result.iou_predictions, iou[kept], rtol=0, atol=1e-6)
    torch.testing.assert_close(result.stability_scores, stability[kept], rtol=0, atol=1e-6)
    torch.testing.assert_close(result.features, tokens[kept], rtol=0, atol=1e-5)
    assert torch.equal(result.boxes, masks_to_xyxy_inclusive(masks[kept]))
    assert result.features.shape[1] == segmenter.feature_dim == WIDTHS[kind]


@pytest.mark.parametrize("kind", ["sam_hq", "sam2"])
def test_grid_masks_are_the_students_masks(kind, models, folders, photo):
    """The best grid mask of each point is what the distillation student gives for that point."""
    settings = SegmentSettings(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    height, width = photo.shape[:2]
    points = build_point_grid(2) * torch.tensor([width, height], dtype=torch.float64)
    segmenter = Segmenter(models[kind], settings=settings)
    segmenter.set_image(photo)
    logits, iou, tokens, point_coords = segmenter._decode_grid(points, 0.0)
    assert len(iou) == 4 * (1 if kind == "sam_hq" else 3)
    student = load_student(folders[kind])
    student.set_image(photo)
    for point in points:
        mine = (point_coords == point).all(dim=1)
        best = iou[mine].argmax()
        theirs = student.segment_prompts(points=point[None], multimask_output=True)
        torch.testing.assert_close(tokens[mine][best][None], theirs.features, rtol=0, atol=1e-4)
        torch.testing.assert_close(iou[mine][best][None], theirs.iou_predictions, rtol=0, atol=1e-4)
        masks = segmenter.upscale_masks(logits[mine][best][None])
        assert int((masks != theirs.masks).sum()) <= 3  # batch of 4 vs 1 prompt: rounding only


# ----------------------------------------------------------------------------------------------
# The pipeline


@pytest.mark.parametrize("kind", ["sam_hq", "sam2"])
def test_pipeline_relates_a_photo_with_a_student_and_its_head(kind, folders, heads, dog_jpg):
    settings = SegmentSettings(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    pipeline = PipelineSpec(sam=str(folders[kind]), ram=str(heads[kind]), settings=settings).build("cpu")
    assert pipeline.warnings == []  # the head was trained for this segmenter
    graph = pipeline(dog_jpg, point=POINT, top_k=10)
    assert len(graph.segments) >= 2 and 0 < len(graph.relations) <= 10
    assert {relation.subject for relation in graph.relations} == {0}
    # Segment 0 is the click's mask, with the student's token for that click: the head's input.
    student = load_student(folders[kind])
    student.set_image(np.array(Image.open(dog_jpg).convert("RGB")))
    expected = student.segment_prompts(points=[POINT])
    assert np.array_equal(graph.segments[0].feature, expected.features[0].numpy())
    assert np.array_equal(graph.segments[0].decode(), expected.masks[0].numpy())
    assert graph.segments[0].feature.shape == (WIDTHS[kind],)


def test_batched_photos_equal_photos_one_at_a_time(folders, heads, images_dir):
    """The encoder takes several photos (of different sizes) in one batch: the same graphs."""
    settings = SegmentSettings(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    pipeline = PipelineSpec(sam=str(folders["sam2"]), ram=str(heads["sam2"]), settings=settings).build("cpu")
    photos = [images_dir / "dog.jpg", images_dir / "lighthouse.jpg"]
    calls = []
    handle = pipeline.segmenter.model.vision_encoder.register_forward_hook(lambda m, a, out: calls.append(1))
    try:
        together = pipeline.batch(photos, top_k=5)
    finally:
        handle.remove()
    assert calls == [1]
    for photo, graph in zip(photos, together):
        alone = pipeline(photo, top_k=5)
        assert [s.mask for s in graph.segments] == [s.mask for s in alone.segments]
        assert [(r.subject, r.predicate, r.object) for r in graph.relations] == [
            (r.subject, r.predicate, r.object) for r in alone.relations
        ]


def test_run_with_a_student_and_its_head(tmp_path, folders, heads, dog_jpg):
    args = ["run", str(dog_jpg), "--out", str(tmp_path), "--sam", str(folders["sam_hq"])]
    result = CliRunner().invoke(app, [*args, "--ram", str(heads["sam_hq"]), "--features", *RANDOM_WEIGHT_FLAGS])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "dog.json").read_text())
    assert data["segments"] and data["relations"]
    assert all(len(segment["feature"]) == 64 for segment in data["segments"])


def test_a_head_for_another_token_width_is_refused_naming_both(tmp_path, folders, heads, dog_jpg):
    with pytest.raises(CheckpointError) as info:
        PipelineSpec(sam=str(folders["sam_hq"]), ram=str(heads["sam2"])).build("cpu")
    message = str(info.value)
    assert f"128-d mask tokens of {folders['sam2']}" in message and f"{folders['sam_hq']} gives 64-d" in message
    args = ["run", str(dog_jpg), "--out", str(tmp_path), "--sam", str(folders["sam_hq"]), "--ram", str(heads["sam2"])]
    result = CliRunner().invoke(app, [*args, *RANDOM_WEIGHT_FLAGS])
    assert result.exit_code == 3, result.output
    assert f"128-d mask tokens of {folders['sam2']}, but {folders['sam_hq']} gives 64-d tokens" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "dog.json").exists()


def test_a_read_only_frame_is_taken_as_is_without_a_warning():
    """np.asarray of a PIL image is read-only; torch.from_numpy would warn on it."""
    import warnings

    frame = np.asarray(Image.fromarray(np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)))
    assert not frame.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = as_frame_tensor(frame, "cpu")
    assert np.array_equal(tensor.numpy(), frame)
