"""The `relate-anything` command, end to end on real photos with tiny random models."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import RANDOM_WEIGHT_FLAGS
from relate_anything import SceneGraph
from relate_anything.cli import app

runner = CliRunner()


def _model_args(tiny_sam, tiny_ram_pth, sam=None):
    return ["--sam", str(sam or tiny_sam.original_pth), "--ram", str(tiny_ram_pth), *RANDOM_WEIGHT_FLAGS]


def test_run_writes_json_and_png_per_image(tmp_path, images_dir, tiny_sam, tiny_ram_pth):
    photos = [images_dir / "dog.jpg", images_dir / "two_men_talking.jpg"]
    result = runner.invoke(
        app, ["run", *map(str, photos), "--out", str(tmp_path), "--top-k", "5", *_model_args(tiny_sam, tiny_ram_pth)]
    )
    assert result.exit_code == 0, result.output
    for photo in photos:
        graph = SceneGraph.load(tmp_path / f"{photo.stem}.json")
        width, height = Image.open(photo).size
        assert (graph.width, graph.height, graph.file) == (width, height, photo.name)
        assert 0 < len(graph.relations) <= 5 and graph.features() is None
        picture = Image.open(tmp_path / f"{photo.stem}.png")
        assert picture.width == width and picture.height > height  # the photo plus a legend below


def test_run_with_point_and_features(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth):
    result = runner.invoke(
        app,
        [
            "run",
            str(dog_jpg),
            "--out",
            str(tmp_path),
            "--point",
            "400,300",
            "--features",
            *_model_args(tiny_sam, tiny_ram_pth, sam=tiny_sam.folder),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "dog.json").read_text())
    assert {r["subject"] for r in data["relations"]} == {0}
    assert all(len(s["feature"]) == 256 for s in data["segments"])


def test_run_in_bfloat16(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth, monkeypatch):
    import torch

    from relate_anything.pipeline import PipelineSpec

    dtypes = []
    build = PipelineSpec.build

    def recording(spec, *args, **kwargs):
        pipeline = build(spec, *args, **kwargs)
        dtypes.append(pipeline.segmenter.model.dtype)
        return pipeline

    monkeypatch.setattr(PipelineSpec, "build", recording)
    result = runner.invoke(
        app, ["run", str(dog_jpg), "--out", str(tmp_path), "--dtype", "bf16", *_model_args(tiny_sam, tiny_ram_pth)]
    )
    assert result.exit_code == 0, result.output
    assert dtypes == [torch.bfloat16]
    assert SceneGraph.load(tmp_path / "dog.json").relations


def test_unknown_dtype_is_one_clear_message(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth):
    result = runner.invoke(
        app, ["run", str(dog_jpg), "--out", str(tmp_path), "--dtype", "int8", *_model_args(tiny_sam, tiny_ram_pth)]
    )
    assert result.exit_code == 2
    assert "dtype must be float32, bfloat16 or float16 (or fp32, bf16, fp16), got 'int8'" in result.output


def test_unreadable_image_is_reported_and_others_still_run(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(dog_jpg.read_bytes()[:3000])
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", str(broken), str(dog_jpg), "--out", str(out), *_model_args(tiny_sam, tiny_ram_pth)]
    )
    assert result.exit_code == 4  # some inputs failed
    assert "broken.jpg: cannot read image" in result.output
    assert (out / "dog.json").exists() and not (out / "broken.json").exists()


@pytest.mark.parametrize("option, value", [("--point", "1,2,3"), ("--box", "a,b,c,d")])
def test_malformed_prompt_option(dog_jpg, option, value):
    result = runner.invoke(app, ["run", str(dog_jpg), option, value])
    assert result.exit_code == 2 and "comma-separated" in result.output


def test_help_lists_the_options():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for option in [
        "--point",
        "--box",
        "--top-k",
        "--out",
        "--device",
        "--sam",
        "--ram",
        "--points-per-side",
        "--features",
    ]:
        assert option in result.output


def _cli(*args, env=None):
    """The installed entry point in a subprocess: exit code and what the user sees."""
    command = [sys.executable, "-c", "from relate_anything.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_missing_weights_offline_is_one_clear_message(tmp_path, dog_jpg):
    done = _cli(
        "run",
        str(dog_jpg),
        "--out",
        str(tmp_path),
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert "facebook/sam-vit-huge" in done.stderr and "--sam" in done.stderr and "RELATE_ANYTHING_SAM" in done.stderr


def test_wrong_checkpoint_file_is_named(tmp_path, dog_jpg, tiny_sam):
    not_a_head = tmp_path / "ram_epoch12.pth"
    not_a_head.write_text("these are not weights")
    done = _cli(
        "run", str(dog_jpg), "--out", str(tmp_path), "--sam", str(tiny_sam.original_pth), "--ram", str(not_a_head)
    )
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert "ram_epoch12.pth" in done.stderr


def test_sam_file_given_as_ram_head_is_reported(tmp_path, dog_jpg, tiny_sam):
    done = _cli(
        "run",
        str(dog_jpg),
        "--out",
        str(tmp_path),
        "--sam",
        str(tiny_sam.original_pth),
        "--ram",
        str(tiny_sam.original_pth),
    )
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert "sam_original.pth" in done.stderr and "image_encoder" in done.stderr


def test_cuda_requested_without_cuda(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = _cli("run", str(dog_jpg), "--device", "cuda", "--sam", str(tiny_sam.folder), "--ram", str(tiny_ram_pth))
    assert done.returncode == 2 and "CUDA is not available" in done.stderr and "Traceback" not in done.stderr


def test_missing_image_is_refused_before_models_load(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nothing.jpg"), "--sam", str(tmp_path / "no-sam")])
    assert result.exit_code == 2 and "does not exist" in result.output and "SAM weights" not in result.output


def test_settings_flags_are_generated_from_the_dataclass():
    """Every SegmentSettings field is a flag of every command that segments, with its default."""
    from dataclasses import fields

    import typer

    from relate_anything.settings import SegmentSettings

    commands = typer.main.get_command(app).commands
    for name in ("run", "batch", "serve", "ui", "collect", "video", "distill"):
        options = {param.name: param for param in commands[name].params}
        for field in fields(SegmentSettings):
            assert field.name in options, (name, field.name)
            assert options[field.name].default == field.default
            assert f"--{field.name.replace('_', '-')}" in options[field.name].opts


@pytest.mark.parametrize(
    "flag, value", [("--pred-iou-thresh", "2"), ("--points-per-side", "0"), ("--top-k", "0"), ("--min-mask-area", "-1")]
)
def test_out_of_range_settings_are_refused_before_models_load(tmp_path, dog_jpg, flag, value):
    result = runner.invoke(app, ["run", str(dog_jpg), flag, value, "--sam", str(tmp_path / "no-sam")])
    assert result.exit_code == 2 and flag in result.output and "SAM weights" not in result.output
