"""The CUDA paths compute what the CPU path computes (skipped without a GPU).

Tolerances (documented in docs/benchmarks.md):

- float32 on CUDA (TF32 off) against float32 on the CPU: features and IoU predictions within
  1e-3 absolute, masks differ on < 0.1% of pixels (only logits within rounding of 0 flip), the
  same top relations.
- bfloat16 on CUDA against float32 on the CPU: bf16 keeps 8 mantissa bits, so values are compared
  by relative L2 error (||bf16 - fp32|| / ||fp32||): image embedding < 2%, decoder logits and mask
  tokens < 5%, IoU predictions < 5%; the sign of the mask logits agrees on > 97% of pixels.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import RANDOM_WEIGHT_SETTINGS
from relate_anything import RelateAnything
from relate_anything.sam import Segmenter, load_sam
from relate_anything.sam.ops import build_point_grid

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(scope="module")
def photo(dog_jpg) -> np.ndarray:
    return np.asarray(Image.open(dog_jpg).convert("RGB"))


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
def test_pipeline_on_cuda_matches_cpu(tiny_sam, tiny_ram_pth, dog_jpg, decoder):
    graphs = {
        device: RelateAnything.from_pretrained(
            tiny_sam.original_pth, tiny_ram_pth, device=device, decoder=decoder, settings=RANDOM_WEIGHT_SETTINGS
        )(dog_jpg)
        for device in ("cpu", "cuda")
    }
    cpu, cuda = graphs["cpu"], graphs["cuda"]
    assert len(cpu.segments) == len(cuda.segments)
    # Masks are thresholded logits: a pixel whose logit is within rounding of 0 may flip.
    disagreement = (cpu.masks() != cuda.masks()).mean()
    assert disagreement < 1e-3
    np.testing.assert_allclose(cpu.features(), cuda.features(), atol=1e-3)
    np.testing.assert_allclose([s.score for s in cpu.segments], [s.score for s in cuda.segments], atol=1e-4)
    assert [(r.subject, r.predicate_id, r.object) for r in cpu.relations[:5]] == [
        (r.subject, r.predicate_id, r.object) for r in cuda.relations[:5]
    ]


def _grid_outputs(segmenter: Segmenter, photo: np.ndarray):
    segmenter.set_image(photo)
    height, width = photo.shape[:2]
    points = build_point_grid(4) * torch.tensor([width, height], dtype=torch.float64)
    output = segmenter.decode(points[:, None], torch.ones(len(points), 1, dtype=torch.int))
    return (
        segmenter._embedding.float().cpu(),
        output.low_res_logits.float().cpu(),
        output.iou_predictions.float().cpu(),
        output.mask_tokens.float().cpu(),
    )


def _relative(ours: torch.Tensor, exact: torch.Tensor) -> float:
    return float((ours - exact).norm() / exact.norm())


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
def test_bfloat16_on_cuda_stays_close_to_float32_on_cpu(tiny_sam, photo, decoder):
    exact = _grid_outputs(Segmenter(load_sam(tiny_sam.original_pth), decoder=decoder), photo)
    bf16 = _grid_outputs(
        Segmenter(load_sam(tiny_sam.original_pth, device="cuda", dtype=torch.bfloat16), decoder=decoder), photo
    )
    errors = {
        name: _relative(low, high) for name, low, high in zip(("embedding", "logits", "iou", "tokens"), bf16, exact)
    }
    print(errors)
    assert errors["embedding"] < 0.02
    assert errors["logits"] < 0.05 and errors["iou"] < 0.05 and errors["tokens"] < 0.05, errors
    sign_agreement = ((bf16[1] > 0) == (exact[1] > 0)).float().mean()
    assert sign_agreement > 0.97


def test_fast_decoder_on_cuda_matches_transformers_on_cuda(tiny_sam, photo):
    model = load_sam(tiny_sam.original_pth, device="cuda")
    fast = _grid_outputs(Segmenter(model, decoder="fast"), photo)
    slow = _grid_outputs(Segmenter(model, decoder="transformers"), photo)
    for name, ours, theirs in zip(("embedding", "logits", "iou", "tokens"), fast, slow):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4, msg=name)


def test_bfloat16_pipeline_runs_on_cuda(tiny_sam, tiny_ram_pth, dog_jpg):
    pipeline = RelateAnything.from_pretrained(
        tiny_sam.original_pth, tiny_ram_pth, device="cuda", dtype=torch.bfloat16, settings=RANDOM_WEIGHT_SETTINGS
    )
    graph = pipeline(dog_jpg)
    assert len(graph.segments) >= 2 and graph.relations
    assert np.isfinite(graph.features()).all()


def test_postprocess_crop_is_exact_on_cuda():
    """The upsampling of only the kept rows/columns gives the full upsampling's values on CUDA too."""
    from relate_anything.sam.transforms import postprocess_logits, preprocess_shape

    low = torch.randn(3, 1, 256, 256, device="cuda") * 4
    for size in ((534, 800), (800, 534), (1500, 2250), (480, 640)):
        input_h, input_w = preprocess_shape(*size)
        full = torch.nn.functional.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)
        expected = torch.nn.functional.interpolate(
            full[..., :input_h, :input_w], size, mode="bilinear", align_corners=False
        )
        assert torch.equal(postprocess_logits(low, size), expected)


def test_nms_rounds_on_cuda_equal_the_greedy_loop():
    from relate_anything.sam import ops

    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(3000, 2, generator=generator) * 800
    boxes = torch.cat([xy, xy + torch.rand(3000, 2, generator=generator) * 300 + 5], dim=1)
    scores = torch.rand(3000, generator=generator)
    for threshold in (0.3, 0.7, 0.95):
        assert torch.equal(ops.nms(boxes.cuda(), scores.cuda(), threshold).cpu(), ops.nms(boxes, scores, threshold))


def test_masks_on_cuda_encode_like_masks_on_the_cpu():
    """RLE of CUDA masks: run boundaries found on the GPU, the same strings as pycocotools'."""
    from relate_anything.scene_graph import encode_masks

    masks = torch.rand(40, 534, 800, device="cuda") > 0.5
    masks[0] = False
    masks[1] = True
    masks[2, 100:300, 200:500] = True
    assert encode_masks(masks) == encode_masks(masks.cpu().numpy())
