"""Parity with Meta's official segment-anything, run in a subprocess of the reference venv.

The same random weights are saved in the original layout by our converter (in reverse); the
official builder loads that file with a strict `load_state_dict`, so a wrong key mapping fails
there. Then the same photo and prompts go through both, and logits, IoU predictions and mask
tokens must agree to 1e-4 in float32, with either of our mask decoders ("fast", the default, and
transformers' forward).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relate_anything.sam import Segmenter, load_sam
from relate_anything.sam.segmenter import DECODERS
from relate_anything.sam.transforms import preprocess
from relate_anything.settings import SegmentSettings
from sam_factory import TINY_ENCODER, VIT_B_ENCODER, SamFiles, write_sam_files

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "reference" / "sam_reference.py"
TOLERANCE = 1e-4


def _case(name: str, points=None, labels=None, box=None, multimask: bool = True) -> dict:
    return {"name": name, "point_coords": points, "point_labels": labels, "box": box, "multimask_output": multimask}


THREE_POINTS = [[400, 250], [150, 400], [600, 100]]  # xy pixels of dog.jpg (640 x 427)
BOX = [120, 60, 600, 400]
CASES = [
    _case("points_multimask", THREE_POINTS, [1, 0, 1]),
    _case("points_single", THREE_POINTS, [1, 0, 1], multimask=False),
    _case("one_point", [[333, 222]], [1]),
    _case("box_single", box=BOX, multimask=False),
    _case("box_multimask", box=BOX),
    _case("box_and_points", [[400, 250], [100, 100]], [1, 0], BOX, multimask=False),
]
# SamAutomaticMaskGenerator settings, each run by both sides. With these random weights (seed 7)
# each filter removes some of the 27 masks, with margins far above float rounding. The masks are
# noise spread over the photo, so their boxes take only two distinct values: NMS at 0.999 keeps
# the best mask of each.
GENERATORS = {
    "amg_filters": {"points_per_side": 3, "pred_iou_thresh": 0.3, "stability_score_thresh": 5e-4, "box_nms_thresh": 1},
    "amg_nms": {"points_per_side": 3, "pred_iou_thresh": 0.3, "stability_score_thresh": 0, "box_nms_thresh": 0.999},
}


def reference_python() -> Path | None:
    """The interpreter with official segment-anything, or None when there is none."""
    configured = os.environ.get("RELATE_ANYTHING_REFERENCE_PYTHON")
    if configured:
        return Path(configured)
    default = REPO / ".venv-reference" / "bin" / "python"
    return default if default.exists() else None


def run_reference(
    files: SamFiles, image_path: Path, cases: list[dict], generators: dict[str, dict], directory: Path
) -> dict[str, np.ndarray]:
    """Outputs of tests/reference/sam_reference.py for these weights, photo and prompts."""
    python = reference_python()
    if python is None:
        pytest.skip(
            "official segment-anything not available: bash scripts/make_reference_env.sh (README's test command does)"
        )
    spec = {
        "encoder": files.encoder,
        "checkpoint": str(files.original_pth),
        "image": str(image_path),
        "cases": cases,
        "generators": generators,
    }
    (directory / "spec.json").write_text(json.dumps(spec))
    out = directory / "reference.npz"
    completed = subprocess.run(
        [str(python), str(SCRIPT), str(directory / "spec.json"), str(out)], capture_output=True, text=True, timeout=1800
    )
    assert completed.returncode == 0, f"reference run failed:\n{completed.stderr[-4000:]}"
    return dict(np.load(out))


@pytest.fixture(scope="module")
def image(dog_jpg: Path) -> np.ndarray:
    return np.asarray(Image.open(dog_jpg).convert("RGB"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, dog_jpg: Path) -> tuple[SamFiles, dict[str, np.ndarray]]:
    directory = tmp_path_factory.mktemp("sam_parity_tiny")
    files = write_sam_files(TINY_ENCODER, directory, seed=7)
    return files, run_reference(files, dog_jpg, CASES, GENERATORS, directory)


def _max_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    assert tuple(ours.shape) == theirs.shape, (tuple(ours.shape), theirs.shape)
    return float((ours.double().cpu() - torch.from_numpy(theirs).double()).abs().max()) if theirs.size else 0.0


def _decode_case(segmenter: Segmenter, case: dict):
    points = None if case["point_coords"] is None else torch.tensor([case["point_coords"]], dtype=torch.float64)
    labels = None if case["point_labels"] is None else torch.tensor([case["point_labels"]])
    boxes = None if case["box"] is None else torch.tensor([case["box"]], dtype=torch.float64)
    return segmenter.decode(points, labels, boxes, multimask_output=case["multimask_output"])


def compare_prompts(segmenter: Segmenter, image: np.ndarray, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs differences of every compared output, by name."""
    diffs = {"input": _max_diff(preprocess(image), reference["input"])}
    segmenter.set_image(image)
    diffs["embedding"] = _max_diff(segmenter._embedding, reference["embedding"])
    for case in CASES:
        name = case["name"]
        output = _decode_case(segmenter, case)
        official_tokens = reference[f"{name}/mask_tokens"]  # all 4; token 0 is the single-mask one
        official_tokens = official_tokens[1:] if case["multimask_output"] else official_tokens[:1]
        diffs[f"{name}/low_res_logits"] = _max_diff(output.low_res_logits[0], reference[f"{name}/low_res_logits"])
        logits = segmenter.upscale_logits(output.low_res_logits[0])
        diffs[f"{name}/logits"] = _max_diff(logits, reference[f"{name}/logits"])
        diffs[f"{name}/iou_predictions"] = _max_diff(output.iou_predictions[0], reference[f"{name}/iou_predictions"])
        diffs[f"{name}/mask_tokens"] = _max_diff(output.mask_tokens[0], official_tokens)
    return diffs


@pytest.mark.parametrize("decoder", DECODERS)
def test_prompted_outputs_match_official(tiny, image: np.ndarray, decoder: str) -> None:
    files, reference = tiny
    diffs = compare_prompts(Segmenter(load_sam(files.original_pth), decoder=decoder), image, reference)
    print(json.dumps(diffs, indent=1))
    assert diffs["input"] == 0.0  # preprocessing is bit-exact
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_segment_prompts_masks_and_features_match_official(tiny, image: np.ndarray) -> None:
    files, reference = tiny
    segmenter = Segmenter(load_sam(files.original_pth))
    segmenter.set_image(image)
    case = CASES[0]
    result = segmenter.segment_prompts(points=case["point_coords"], point_labels=case["point_labels"])
    best = int(np.argmax(reference["points_multimask/iou_predictions"]))
    official_logits = reference["points_multimask/logits"][best]
    decided = np.abs(official_logits) > 1e-3  # pixels whose side of the threshold is not rounding noise
    assert np.array_equal(result.masks[0].numpy()[decided], (official_logits > 0)[decided])
    assert _max_diff(result.features[0], reference["points_multimask/mask_tokens"][1 + best]) <= TOLERANCE


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("generator", GENERATORS)
def test_segment_everything_matches_official_generator(tiny, image: np.ndarray, generator: str, decoder: str) -> None:
    """Our grid, filters and NMS against SamAutomaticMaskGenerator (RAM's de-duplication off)."""
    files, reference = tiny
    settings = SegmentSettings(duplicate_iou_thresh=1.01, **GENERATORS[generator])
    segmenter = Segmenter(load_sam(files.original_pth), settings=settings, decoder=decoder)
    segmenter.set_image(image)
    ours = segmenter.segment_everything()
    keys = ("masks", "predicted_iou", "stability_score", "point_coords", "bbox")
    official = {key: reference[f"{generator}/{key}"] for key in keys}
    assert len(ours) == len(official["predicted_iou"])
    assert 1 < len(ours) < 3 * 3 * 3  # the filters did something, and left something
    # Both orders are deterministic but different (area vs NMS score): align by grid point and IoU.
    ours_points = ours.point_coords.numpy()
    ours_order = np.lexsort((ours.iou_predictions.numpy(), ours_points[:, 1], ours_points[:, 0]))
    theirs = np.lexsort((official["predicted_iou"], official["point_coords"][:, 1], official["point_coords"][:, 0]))
    ours = ours[torch.from_numpy(ours_order)]
    assert _max_diff(ours.point_coords, official["point_coords"][theirs].astype(np.float32)) <= 1e-3
    assert _max_diff(ours.iou_predictions, official["predicted_iou"][theirs]) <= TOLERANCE
    assert _max_diff(ours.stability_scores, official["stability_score"][theirs]) <= 1e-3
    mismatch = (ours.masks.numpy() != official["masks"][theirs]).mean()
    assert mismatch < 1e-4, mismatch  # only pixels whose logit is within rounding of 0 may flip
    x, y, w, h = official["bbox"][theirs].T
    assert np.abs(ours.boxes.numpy() - np.stack([x, y, x + w, y + h], axis=1)).max() <= 1


@pytest.mark.slow
def test_vit_b_prompted_outputs_match_official(
    request: pytest.FixtureRequest, tmp_path: Path, dog_jpg: Path, image: np.ndarray
) -> None:
    """Full-size ViT-B with random weights (minutes on 2 CPU cores; run with -m slow)."""
    files = write_sam_files(VIT_B_ENCODER, tmp_path, seed=11)
    reference = run_reference(files, dog_jpg, CASES, {}, tmp_path)
    diffs = compare_prompts(Segmenter(load_sam(files.original_pth)), image, reference)
    print(json.dumps(diffs, indent=1), file=sys.stderr)
    assert diffs["input"] == 0.0
    assert max(diffs.values()) <= TOLERANCE, diffs
