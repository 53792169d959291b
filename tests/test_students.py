"""Students for distillation: SAM, SAM-HQ and SAM 2 masks with their decoder tokens, on tiny random models.

Token parity: the decoder's inputs are recorded during `segment_prompts`, then the two-way
transformer is run directly on hand-built query tokens and the IoU head on its output; the
student's feature must be the query of the token the model's own choice rule picks, and the
returned IoU that token's IoU. For SAM (ViT), the student must equal `Segmenter` exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from relate_anything import weights
from relate_anything.errors import CheckpointError, WeightsNotFoundError
from relate_anything.sam import Segmenter
from relate_anything.sam.checkpoint import ORIGINAL_TWO_WAY_LAYER_NORM_EPS
from relate_anything.sam.students import Sam2Student, SamStudent, Student, load_student
from sam2_factory import random_sam2_image, random_sam2_video, random_sam_hq
from sam_factory import TINY_ENCODER, random_sam

HEIGHT, WIDTH = 60, 80
BOXES = [[5.0, 5.0, 40.0, 30.0], [20.0, 10.0, 70.0, 50.0], [0.0, 0.0, 79.0, 59.0]]
POINTS = [[30.0, 20.0], [60.0, 40.0]]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def masks() -> torch.Tensor:
    masks = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.bool)
    masks[0, 10:30, 10:40] = True
    masks[1, 30:55, 20:75] = True
    yy, xx = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    masks[2] = (yy - 30) ** 2 + (xx - 40) ** 2 < 15**2
    return masks


@pytest.fixture(scope="module")
def sam_model():
    return random_sam(TINY_ENCODER, image_size=256)


@pytest.fixture(scope="module")
def hq_model():
    return random_sam_hq()


@pytest.fixture(scope="module")
def sam2_model():
    return random_sam2_image()


PROMPT_CASES = {
    "boxes": lambda masks: {"boxes": BOXES},
    "masks": lambda masks: {"masks": masks},
    "boxes+masks": lambda masks: {"boxes": BOXES, "masks": masks},
    "points": lambda masks: {"points": POINTS, "point_labels": [1, 0]},
    "points+boxes": lambda masks: {"points": POINTS[:1], "boxes": BOXES},
    "points+masks": lambda masks: {"points": POINTS[:1], "masks": masks},
}


def record_decoder_inputs(model):
    """A pre-hook keeping the keyword inputs of each mask-decoder call."""
    calls = []
    handle = model.mask_decoder.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(kwargs), with_kwargs=True
    )
    return calls, handle


@pytest.mark.parametrize("multimask", [False, True])
def test_sam_student_equals_segmenter(sam_model, photo, multimask):
    """For SAM, the student is RAM's feature extractor: `Segmenter` (transformers decoder) exactly."""
    student = SamStudent(sam_model)
    segmenter = Segmenter(sam_model, decoder="transformers")
    student.set_image(photo)
    segmenter.set_image(photo)
    for prompts in (
        {"boxes": BOXES},
        {"points": POINTS, "point_labels": [1, 0]},
        {"points": POINTS[:1], "boxes": BOXES},
    ):
        mine = student.segment_prompts(multimask_output=multimask, **prompts)
        theirs = segmenter.segment_prompts(multimask_output=multimask, **prompts)
        for field in ("masks", "iou_predictions", "stability_scores", "boxes", "features"):
            assert torch.equal(getattr(mine, field), getattr(theirs, field)), field


@pytest.mark.parametrize("case", PROMPT_CASES)
@pytest.mark.parametrize("multimask", [False, True])
def test_sam_hq_token_is_the_returned_masks_token(hq_model, photo, masks, case, multimask):
    student = SamStudent(hq_model)
    student.set_image(photo)
    calls, handle = record_decoder_inputs(hq_model)
    try:
        result = student.segment_prompts(multimask_output=multimask, **PROMPT_CASES[case](masks))
    finally:
        handle.remove()
    decoder = hq_model.mask_decoder
    queries, iou = run_two_way_transformer(
        decoder, calls[0], [decoder.iou_token.weight, decoder.mask_tokens.weight, decoder.hq_token.weight], iou_query=0
    )
    # SAM-HQ's choice: token 0 for a single mask; else tokens 1..3, sorted by IoU, the first.
    token = 1 + iou[:, 1:4].argmax(dim=1) if multimask else torch.zeros(len(iou), dtype=torch.long)
    rows = torch.arange(len(iou))
    expected = queries[rows, 1 + token]  # query 0 is the IoU token
    assert result.features.shape == (len(expected), 64) and student.feature_dim == 64
    torch.testing.assert_close(result.features, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(result.iou_predictions, iou[rows, token], rtol=0, atol=1e-5)
    assert len({tuple(t.tolist()) for t in result.features}) == len(result)  # prompts differ


@pytest.mark.parametrize("case", PROMPT_CASES)
@pytest.mark.parametrize("multimask", [False, True])
def test_sam2_token_is_the_object_pointer_token(sam2_model, photo, masks, case, multimask):
    student = Sam2Student(sam2_model)
    student.set_image(photo)
    calls, handle = record_decoder_inputs(sam2_model)
    try:
        result = student.segment_prompts(multimask_output=multimask, **PROMPT_CASES[case](masks))
    finally:
        handle.remove()
    decoder = sam2_model.mask_decoder
    queries, iou = run_two_way_transformer(
        decoder, calls[0], [decoder.obj_score_token.weight, decoder.iou_token.weight, decoder.mask_tokens.weight], 1
    )
    rows = torch.arange(len(iou))
    if multimask:  # SAM 2 returns tokens 1..3 and points from the best-IoU one
        token = 1 + iou[:, 1:4].argmax(dim=1)
        torch.testing.assert_close(result.iou_predictions, iou[rows, token], rtol=0, atol=1e-5)
    else:  # the pointer token is token 0, whichever mask the dynamic fallback returns
        token = torch.zeros(len(iou), dtype=torch.long)
        assert all(value in iou[row].tolist() for row, value in enumerate(result.iou_predictions.tolist()))
    expected = queries[rows, 2 + token]  # queries 0 and 1 are the object-score and IoU tokens
    assert result.features.shape == (len(expected), 128) and student.feature_dim == 128
    torch.testing.assert_close(result.features, expected, rtol=0, atol=1e-5)


def run_two_way_transformer(decoder, inputs: dict, output_tokens: list[torch.Tensor], iou_query: int):
    """The decoder's queries and all IoU predictions, computed from its recorded inputs.

    Returns [N, T, D] queries (one row per prompt) and [N, num_mask_tokens] IoU predictions.
    """
    sparse = inputs["sparse_prompt_embeddings"]  # [B, P, S, D], None for SAM-HQ's mask-only prompts
    images = inputs["image_embeddings"].shape[0]
    per_image = 1 if sparse is None else sparse.shape[1]
    tokens = torch.cat(output_tokens).expand(images, per_image, -1, -1)
    if sparse is not None:
        tokens = torch.cat([tokens, sparse], dim=2)
    image = (inputs["image_embeddings"] + inputs["dense_prompt_embeddings"]).repeat_interleave(per_image, 0)
    position = inputs["image_positional_embeddings"].repeat_interleave(per_image, 0)
    with torch.inference_mode():
        queries = decoder.transformer(
            point_embeddings=tokens,
            image_embeddings=image,
            image_positional_embeddings=position,
            attention_similarity=None,
        )[0]
        iou = decoder.iou_prediction_head(queries[:, :, iou_query])
    return queries.flatten(0, 1), iou.flatten(0, 1)


@pytest.mark.parametrize("make", [lambda: SamStudent(random_sam_hq()), lambda: Sam2Student(random_sam2_image())])
def test_mask_prompts_steer_the_mask(make, photo, masks):
    """A mask prompt changes the result, and a box with its mask differs from the box alone."""
    student = make()
    student.set_image(photo)
    with_masks = student.segment_prompts(masks=masks)
    boxes = student.segment_prompts(boxes=BOXES)
    both = student.segment_prompts(boxes=BOXES, masks=masks)
    assert len(with_masks) == len(boxes) == len(both) == 3
    assert with_masks.masks.shape == (3, HEIGHT, WIDTH) and with_masks.masks.dtype == torch.bool
    assert not torch.equal(both.features, boxes.features)
    # Each prompt is decoded on its own: a prompt's result does not depend on the others.
    alone = student.segment_prompts(masks=masks[1:2], boxes=BOXES[1:2])
    torch.testing.assert_close(alone.features[0], both.features[1], rtol=0, atol=1e-5)


def test_students_follow_the_protocol(sam_model, hq_model, sam2_model):
    for student in (SamStudent(sam_model), SamStudent(hq_model), Sam2Student(sam2_model)):
        assert isinstance(student, Student)
    assert [s.feature_dim for s in (SamStudent(sam_model), SamStudent(hq_model), Sam2Student(sam2_model))] == [
        256,
        64,
        128,
    ]


def test_the_same_photo_is_embedded_once(sam2_model, photo):
    student = Sam2Student(sam2_model)
    calls = []
    handle = sam2_model.vision_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        student.set_image(photo)
        student.set_image(photo.copy())
        student.set_image(photo[::-1].copy())
    finally:
        handle.remove()
    assert len(calls) == 2


def test_bad_prompts(sam2_model, photo, masks):
    student = Sam2Student(sam2_model)
    with pytest.raises(RuntimeError, match="set_image"):
        student.segment_prompts(boxes=BOXES)
    student.set_image(photo)
    with pytest.raises(ValueError, match="give boxes, masks"):
        student.segment_prompts()
    with pytest.raises(ValueError, match="one box per mask"):
        student.segment_prompts(boxes=BOXES[:2], masks=masks)
    with pytest.raises(ValueError, match=r"\[M, 60, 80\]"):
        student.segment_prompts(masks=masks[:, :30])
    with pytest.raises(ValueError, match="bool"):
        student.segment_prompts(masks=masks.float())
    with pytest.raises(ValueError, match="xyxy"):
        student.segment_prompts(boxes=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="hq_token_only"):
        SamStudent(random_sam(TINY_ENCODER, image_size=256), hq_token_only=True)


# ----------------------------------------------------------------------------------------------
# Loading


def test_load_student_by_model_type(tmp_path, tiny_sam, sam_model, hq_model, sam2_model):
    sam_model.save_pretrained(tmp_path / "sam")
    hq_model.save_pretrained(tmp_path / "hq")
    sam2_model.save_pretrained(tmp_path / "sam2")
    assert isinstance(load_student(tmp_path / "sam"), SamStudent)
    assert isinstance(load_student(tiny_sam.original_pth), SamStudent)  # original segment-anything file
    hq = load_student(tmp_path / "hq")
    assert isinstance(hq, SamStudent) and hq.is_hq
    # SAM-HQ's decoder is segment-anything's: its LayerNorms get the original eps, as load_sam does.
    assert {layer.layer_norm1.eps for layer in hq.model.mask_decoder.transformer.layers} == {
        ORIGINAL_TWO_WAY_LAYER_NORM_EPS
    }
    sam2 = load_student(tmp_path / "sam2", dtype=torch.float32)
    assert isinstance(sam2, Sam2Student)
    state = sam2.model.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in sam2_model.state_dict().items())


def test_load_student_takes_the_image_parts_of_a_sam2_video_folder(tmp_path, photo):
    video = random_sam2_video(object_score_bias=None)
    video.save_pretrained(tmp_path / "video")
    student = load_student(tmp_path / "video")
    assert isinstance(student, Sam2Student)
    state = video.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in student.model.state_dict().items())
    student.set_image(photo)
    assert student.segment_prompts(boxes=BOXES).features.shape == (3, 128)


def test_load_student_rejects_other_models(tmp_path, tiny_seggpt_folder):
    with pytest.raises(CheckpointError, match="seggpt.*sam, sam_hq, sam2, sam2_video"):
        load_student(tiny_seggpt_folder)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        load_student(tmp_path / "broken")
    (tmp_path / "empty_sam2").mkdir()
    (tmp_path / "empty_sam2" / "config.json").write_text(json.dumps({"model_type": "sam2"}))
    with pytest.raises(CheckpointError):
        load_student(tmp_path / "empty_sam2")


def test_missing_student_offline_names_flag_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        load_student("syscv-community/sam-hq-vit-base")
    message = str(info.value)
    assert "syscv-community/sam-hq-vit-base" in message and "HF_HUB_OFFLINE" in message
    assert "--student-sam" in message and weights.STUDENT_WEIGHTS.env_var in message
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_student(tmp_path / "nowhere" / "sam2")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", [random_sam_hq, random_sam2_image])
def test_cuda_students_match_cpu(make, photo, masks):
    """float32 on CUDA (TF32 off): features and IoU within 1e-3 of the CPU's, < 1% of mask pixels differ."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = make()
        students = [SamStudent(model) if make is random_sam_hq else Sam2Student(model)]
        gpu_model = make().cuda()
        students.append(SamStudent(gpu_model) if make is random_sam_hq else Sam2Student(gpu_model))
        results = []
        for student in students:
            student.set_image(photo)
            results.append(student.segment_prompts(boxes=BOXES, masks=masks, multimask_output=True))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    cpu, gpu = results[0], results[1].to("cpu")
    assert results[1].masks.device.type == "cuda"
    torch.testing.assert_close(gpu.features, cpu.features, rtol=0, atol=1e-3)
    torch.testing.assert_close(gpu.iou_predictions, cpu.iou_predictions, rtol=0, atol=1e-3)
    assert (gpu.masks != cpu.masks).float().mean() < 0.01
