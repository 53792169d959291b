"""Fast CPU tests of segment-by-example (SegGPT) with a tiny random model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relate_anything.errors import CheckpointError, ImageError, WeightsNotFoundError
from relate_anything.seggpt import (
    ExampleError,
    ExampleSegmenter,
    connected_components,
    example_segments,
    load_example,
    read_mask,
)
from relate_anything.seggpt.transforms import preprocess_image, preprocess_mask
from relate_anything.weights import SEGGPT_WEIGHTS
from sam_factory import SamFiles
from seggpt_factory import random_seggpt


@pytest.fixture(scope="module")
def seggpt_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_seggpt")
    random_seggpt().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def finder(seggpt_folder: Path) -> ExampleSegmenter:
    return ExampleSegmenter.from_pretrained(seggpt_folder)


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def box_mask(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture(scope="module")
def examples() -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (random_image(40, 30, seed=1), box_mask(40, 30, 5, 20, 5, 15)),
        (random_image(33, 44, seed=2), box_mask(33, 44, 10, 33, 20, 44)),
    ]


@pytest.fixture(scope="module")
def target() -> np.ndarray:
    return random_image(50, 70, seed=0)


def seggpt_processor():
    """transformers' processor on its PIL backend (the default one needs torchvision)."""
    import transformers

    processor_class = getattr(transformers, "SegGptImageProcessorPil", None) or transformers.SegGptImageProcessor
    return processor_class()


# ------------------------------------------------------------------------------------------------
# Pre- and post-processing equal transformers'


@pytest.mark.parametrize("size", [(448, 448), (32, 32)])
def test_preprocessing_equals_transformers_processor(size, examples, target) -> None:
    processor = seggpt_processor()
    (image_a, mask_a), (image_b, mask_b) = examples
    expected = processor(
        images=[target, target],
        prompt_images=[image_a, image_b],
        prompt_masks=[mask_a.astype(np.uint8), mask_b.astype(np.uint8)],
        num_labels=1,
        size={"height": size[0], "width": size[1]},
        return_tensors="pt",
    )
    images = torch.stack([preprocess_image(image_a, size), preprocess_image(image_b, size)])
    masks = torch.stack([preprocess_mask(mask_a, size), preprocess_mask(mask_b, size)])
    assert torch.equal(torch.stack([preprocess_image(target, size)] * 2), expected["pixel_values"])
    assert torch.equal(images, expected["prompt_pixel_values"])
    assert torch.equal(masks, expected["prompt_masks"])


def test_painted_mask_by_hand() -> None:
    mask = np.array([[True, False], [False, True]])
    painted = preprocess_mask(mask, (4, 4))  # nearest: each pixel becomes a 2 x 2 block
    white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    black = -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(painted[:, 0, 0], white) and torch.allclose(painted[:, 3, 3], white)
    assert torch.allclose(painted[:, 0, 3], black) and torch.allclose(painted[:, 3, 0], black)


def test_mask_equals_transformers_post_processing(finder, examples, target) -> None:
    inputs = finder.pixel_inputs(target, examples[:1])
    with torch.inference_mode():
        outputs = finder.model(**inputs)
    processor = seggpt_processor()
    expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[target.shape[:2]], num_labels=1)[0]
    mask = finder.segment(target, examples[:1])
    assert 0 < mask.sum() < mask.numel()  # the random model paints both colours
    assert torch.equal(mask, expected == 1)


# ------------------------------------------------------------------------------------------------
# Segmenting


@pytest.mark.parametrize("height, width", [(50, 70), (17, 9), (120, 64)])
def test_mask_has_the_target_size(finder, examples, height, width) -> None:
    mask = finder.segment(random_image(height, width, seed=3), examples[:1])
    assert mask.shape == (height, width) and mask.dtype == torch.bool


def test_several_examples_are_combined_by_feature_ensemble(finder, examples, target) -> None:
    one = finder.predict(target, examples[:1])
    both = finder.predict(target, examples)
    assert both.shape == one.shape == target.shape[:2]
    assert not torch.allclose(one, both)
    # The same as transformers' own call with feature_ensemble=True, first batch entry.
    with torch.inference_mode():
        outputs = finder.model(**finder.pixel_inputs(target, examples), feature_ensemble=True)
    sizes = [target.shape[:2]] * 2
    processed = seggpt_processor().post_process_semantic_segmentation(outputs, target_sizes=sizes, num_labels=1)
    assert torch.equal(finder.segment(target, examples), processed[0] == 1)


def test_examples_are_checked(finder, examples, target) -> None:
    image, mask = examples[0]
    with pytest.raises(ExampleError, match="at least one example"):
        finder.segment(target, [])
    with pytest.raises(ExampleError, match=r"mask is 29x40 but example 1's image is 30x40"):
        finder.segment(target, [(image, mask[:, :29])])
    with pytest.raises(ExampleError, match="empty"):
        finder.segment(target, [(image, np.zeros_like(mask))])


# ------------------------------------------------------------------------------------------------
# Loading weights


def test_from_pretrained_default_comes_from_the_environment(seggpt_folder, monkeypatch) -> None:
    monkeypatch.setenv(SEGGPT_WEIGHTS.env_var, str(seggpt_folder))
    finder = ExampleSegmenter.from_pretrained()
    assert finder.input_size == (32, 32)


def test_missing_weights_name_the_flag(tmp_path) -> None:
    with pytest.raises(WeightsNotFoundError, match="--seggpt"):
        ExampleSegmenter.from_pretrained(tmp_path / "nowhere")


def test_a_sam_folder_is_not_seggpt(tiny_sam: SamFiles) -> None:
    with pytest.raises(CheckpointError, match="'sam' model, not SegGPT"):
        ExampleSegmenter.from_pretrained(tiny_sam.folder)
    with pytest.raises(CheckpointError, match="transformers folder"):
        ExampleSegmenter.from_pretrained(tiny_sam.original_pth)


# ------------------------------------------------------------------------------------------------
# Example files


def save(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.fixture
def example_image(tmp_path) -> Path:
    return save(random_image(20, 30, seed=4), tmp_path / "example.png")


def test_load_example_white_on_black(tmp_path, example_image) -> None:
    mask = box_mask(20, 30, 2, 8, 3, 9)
    image, loaded = load_example(example_image, save(mask.astype(np.uint8) * 255, tmp_path / "mask.png"))
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert np.array_equal(loaded, mask)


def test_mask_formats(tmp_path) -> None:
    mask = box_mask(20, 30, 2, 8, 3, 9)
    coloured = np.zeros((20, 30, 3), np.uint8)
    coloured[mask] = (200, 0, 0)
    assert np.array_equal(read_mask(save(coloured, tmp_path / "rgb.png")), mask)
    # A cut-out: colour everywhere, alpha marks the thing.
    cutout = np.dstack([np.full((20, 30, 3), 90, np.uint8), mask.astype(np.uint8) * 255])
    assert np.array_equal(read_mask(save(cutout, tmp_path / "rgba.png")), mask)
    # Opaque RGBA: the colour decides.
    opaque = np.dstack([coloured, np.full((20, 30), 255, np.uint8)])
    assert np.array_equal(read_mask(save(opaque, tmp_path / "opaque.png")), mask)
    # A palette label map whose index 0 is not black: indices decide.
    palette = Image.fromarray(mask.astype(np.uint8) * 3, mode="P")
    palette.putpalette([255, 255, 255] + [0, 0, 0] * 255)
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_mask(tmp_path / "palette.png"), mask)


def test_wrong_size_mask_names_both_sizes(tmp_path, example_image) -> None:
    mask_path = save(np.full((21, 30), 255, np.uint8), tmp_path / "mask.png")
    with pytest.raises(ExampleError, match=r"mask\.png is 30x21 but example image .*example\.png is 30x20"):
        load_example(example_image, mask_path)


def test_unreadable_example_files(tmp_path, example_image) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good_mask = save(np.full((20, 30), 255, np.uint8), tmp_path / "mask.png")
    with pytest.raises(ImageError, match="corrupt.png"):
        load_example(example_image, corrupt)
    with pytest.raises(ImageError, match="corrupt.png"):
        load_example(corrupt, good_mask)
    with pytest.raises(ImageError, match="no such file"):
        load_example(example_image, tmp_path / "missing.png")


def test_empty_mask_is_refused(tmp_path, example_image) -> None:
    with pytest.raises(ExampleError, match="empty"):
        load_example(example_image, save(np.zeros((20, 30), np.uint8), tmp_path / "mask.png"))


# ------------------------------------------------------------------------------------------------
# Segments for the scene graph


def test_connected_components_known_answer() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[0:3, 0:3] = True  # 9 pixels
    mask[3, 3] = True  # touches the square diagonally: same 8-connected region (10 pixels)
    mask[6:10, 6:12] = True  # 24 pixels
    mask[0, 11] = True  # a 1-pixel speck
    components = connected_components(torch.from_numpy(mask), min_area=2)
    assert components.shape == (2, 10, 12)
    assert components[0].sum() == 24 and components[0, 6:10, 6:12].all()
    assert components[1].sum() == 10 and components[1, 3, 3] and components[1, 0:3, 0:3].all()
    assert len(connected_components(mask)) == 3
    assert connected_components(np.zeros((4, 4), bool)).shape == (0, 4, 4)


def test_example_segments_are_seggpts_components(finder, examples, target) -> None:
    segments = example_segments(finder, target, examples, min_area=20)
    expected = connected_components(finder.segment(target, examples), min_area=20)
    assert len(segments) == len(expected) > 0
    assert torch.equal(segments.masks, expected)  # SegGPT's masks; SAM's tokens are the pipeline's to add
    assert segments.features.shape == (len(segments), 0)
    probability = finder.predict(target, examples)
    for index, mask in enumerate(segments.masks):
        assert segments.iou_predictions[index] == pytest.approx(probability[mask].mean().item(), abs=1e-6)
        assert 0.5 < segments.iou_predictions[index] <= 1.0
        assert 0.0 <= segments.stability_scores[index] <= 1.0
    ys, xs = torch.nonzero(segments.masks[0], as_tuple=True)
    assert segments.boxes[0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    # Nothing found: an empty result.
    assert example_segments(finder, target, examples, threshold=1.0).masks.shape == (0, *target.shape[:2])
