"""`relate-anything distill` end to end with tiny random models: a teacher pair (SAM + RAM head)
teaches a head for a different student SAM on synthetic photos."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import RANDOM_WEIGHT_FLAGS
from relate_anything.cli import app
from relate_anything.ram import RelationHead
from relate_anything.training import FeatureCache
from relate_anything.training.trainer import evaluate_agreement


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from relate_anything.datasets.synthetic import make_synthetic_psg

    out = tmp_path_factory.mktemp("psg")
    make_synthetic_psg(out, images=12, seed=1, size=(128, 96))
    return out


@pytest.fixture(scope="module")
def student_sam(tmp_path_factory):
    """Another tiny random SAM (256-px inputs), different weights from the teacher's."""
    from sam_factory import TINY_ENCODER, random_sam

    folder = tmp_path_factory.mktemp("student_sam")
    random_sam(TINY_ENCODER, seed=5, image_size=256).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_distill_teaches_a_student_head_that_runs_in_the_pipeline(
    tmp_path, photos, small_sam, tiny_ram_pth, student_sam
):
    out = tmp_path / "run"
    args = ["distill", str(photos / "images"), "--out", str(out), "--student-sam", str(student_sam)]
    args += ["--teacher-sam", str(small_sam), "--teacher-ram", str(tiny_ram_pth), "--epochs", "4", "--lr", "1e-3"]
    args += ["--held-out", "0.25", "--batch-size", "2", *RANDOM_WEIGHT_FLAGS]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["student"] == str(student_sam) and report["images"]["held_out"] > 0
    assert {"teacher_R@20", "teacher_KL"} <= set(report["agreement"])
    assert report["speed"]["teacher_images_per_s"] > 0 and report["speed"]["student_images_per_s"] > 0
    head = RelationHead.from_checkpoint(out / "head.safetensors")
    assert head.config.segmenter == str(student_sam) and head.config.feature_dim == 256
    # The trained head is much closer to the teacher than an untrained one on the held-out images
    # (random tiny teachers rank thousands of near-equal triplets, so the tempered KL is the
    # measure here; tests/test_distillation.py checks the top-K agreement on a learnable teacher).
    held = FeatureCache(out / "cache-held-out")
    torch.manual_seed(0)
    untrained = RelationHead(head.config).eval()
    trained_agreement = evaluate_agreement(head, held, temperature=2.0)
    untrained_agreement = evaluate_agreement(untrained, held, temperature=2.0)
    assert trained_agreement["teacher_KL"] < 0.75 * untrained_agreement["teacher_KL"], (
        trained_agreement,
        untrained_agreement,
    )
    assert trained_agreement == pytest.approx(report["agreement"], abs=1e-5)
    # The student and its head run as a pipeline: `run --sam STUDENT --ram head.safetensors`.
    photo = sorted((photos / "images").glob("*.jpg"))[0]
    result = CliRunner().invoke(
        app,
        ["run", str(photo), "--out", str(tmp_path / "graphs"), "--sam", str(student_sam), "--ram", str(out / "head.safetensors"),
         *RANDOM_WEIGHT_FLAGS],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "graphs" / f"{photo.stem}.json").exists()
    # Run again: every image is in a committed shard already, nothing is collected twice.
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def test_distill_refuses_bad_input_before_loading_models(tmp_path):
    result = CliRunner().invoke(app, ["distill", str(tmp_path / "missing"), "--teacher-sam", str(tmp_path / "no-sam")])
    assert result.exit_code == 2 and "no such folder" in result.output and "SAM weights" not in result.output
    result = CliRunner().invoke(app, ["distill", str(tmp_path), "--temperature", "0"])
    assert result.exit_code == 2 and "temperature must be positive" in result.output


def test_distill_names_the_teachers_and_the_students_missing_weights_at_once(tmp_path, dog_jpg, monkeypatch):
    """Offline, nothing cached: teacher SAM, teacher RAM and the student in one message, before any
    model loads (the student's used to be looked for only once the teacher had loaded)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    for variable in ("RELATE_ANYTHING_SAM", "RELATE_ANYTHING_RAM"):
        monkeypatch.delenv(variable, raising=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / dog_jpg.name).write_bytes(dog_jpg.read_bytes())
    arguments = ["distill", str(photos), "--out", str(tmp_path / "out"), "--student-sam", "facebook/sam-vit-base"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 3, result.output
    assert result.output.startswith("error: 3 models' weights are missing:")
    for reference in ("facebook/sam-vit-huge", "ram_epoch12.pth", "facebook/sam-vit-base"):
        assert reference in result.output
    assert "loaded" not in result.output
