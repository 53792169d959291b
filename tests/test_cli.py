"""The `relate-anything` command, end to end on real photos with tiny random models."""

import json
import os
import re
import subprocess
import sys

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from conftest import RANDOM_WEIGHT_FLAGS, TESTS
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


@pytest.mark.slow
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


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_missing_weights_without_network_are_one_clear_message(tmp_path, dog_jpg):
    """No HF_HUB_OFFLINE, and a hub that cannot be reached: both models named at once, no
    retries (huggingface_hub would retry each download for 23 s)."""
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    env |= {"HF_HUB_CACHE": str(tmp_path / "cache"), "RELATE_ANYTHING_SAM": "", "RELATE_ANYTHING_RAM": ""}
    done = _cli("run", str(dog_jpg), "--out", str(tmp_path), env=env)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "Retrying" not in done.stderr
    assert done.stderr.startswith("error: 2 models' weights are missing:")
    for name in (
        "facebook/sam-vit-huge",
        "--sam",
        "RELATE_ANYTHING_SAM",
        "ram_epoch12.pth",
        "--ram",
        "RELATE_ANYTHING_RAM",
    ):
        assert name in done.stderr
    assert done.stderr.count("cannot be reached (Connection refused)") == 2


def test_bad_input_and_missing_weights_are_refused_before_torch_loads(tmp_path, dog_jpg):
    """The commands check flags, inputs and weights before importing torch, transformers, Gradio
    or FastAPI (seconds each), so a newcomer's first mistake is answered in about two seconds."""
    code = (
        "import sys\nfrom relate_anything.cli import main\ntry:\n    main()\nexcept SystemExit as done:\n"
        "    print(done.code, *sorted(m for m in ('torch', 'transformers', 'gradio', 'fastapi') if m in sys.modules))"
    )
    missing = ["--sam", str(tmp_path / "no-sam"), "--ram", str(tmp_path / "no-ram")]
    for args, code_expected in [
        (["run", str(dog_jpg), "--out", str(tmp_path), *missing], "3"),
        (["serve", *missing], "3"),
        (["ui", *missing], "3"),
        (["video", str(dog_jpg), *missing], "4"),  # an image given as a clip
        (["distill", str(dog_jpg.parent), "--out", str(tmp_path / "student"), "--student-sam", "x/none"], "3"),
    ]:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert done.stdout.split() == [code_expected], (args, done.stdout, done.stderr)


def test_every_missing_weight_is_named_within_seconds_offline(tmp_path, dog_jpg, monkeypatch):
    """Offline (tests run with HF_HUB_OFFLINE=1), nothing cached: SAM, the RAM head and the
    labeler are named in one message, each with its flag and variable, before anything loads."""
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    for variable in ("RELATE_ANYTHING_SAM", "RELATE_ANYTHING_RAM", "RELATE_ANYTHING_LABELER"):
        monkeypatch.delenv(variable, raising=False)
    started = time.perf_counter()
    result = runner.invoke(app, ["run", str(dog_jpg), "--out", str(tmp_path), "--vocab", "dog,bowl"])
    assert time.perf_counter() - started < 3.0
    assert result.exit_code == 3, result.output
    assert result.output.startswith("error: 3 models' weights are missing:")
    for flag, variable in (
        ("--sam", "RELATE_ANYTHING_SAM"),
        ("--ram", "RELATE_ANYTHING_RAM"),
        ("--labeler", "RELATE_ANYTHING_LABELER"),
    ):
        assert f"{flag} PATH" in result.output and variable in result.output
    assert "loaded" not in result.output  # nothing loaded first


def test_wrong_checkpoint_file_is_named(tmp_path, dog_jpg, tiny_sam):
    not_a_head = tmp_path / "ram_epoch12.pth"
    not_a_head.write_text("these are not weights")
    sam = str(tiny_sam.original_pth)
    result = runner.invoke(app, ["run", str(dog_jpg), "--out", str(tmp_path), "--sam", sam, "--ram", str(not_a_head)])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    assert "ram_epoch12.pth" in result.output and "weights_only" not in result.output


def test_sam_file_given_as_ram_head_is_reported(tmp_path, dog_jpg, tiny_sam):
    sam = str(tiny_sam.original_pth)
    result = runner.invoke(app, ["run", str(dog_jpg), "--out", str(tmp_path), "--sam", sam, "--ram", sam])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    assert "sam_original.pth" in result.output and "image_encoder" in result.output


def test_cuda_requested_without_cuda(dog_jpg, tiny_sam):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["run", str(dog_jpg), "--device", "cuda", "--sam", str(tiny_sam.folder)])
    assert result.exit_code == 2 and "CUDA is not available" in result.output and "Traceback" not in result.output


def test_an_unknown_device_is_a_usage_error_before_any_weights(tmp_path, dog_jpg):
    result = runner.invoke(app, ["run", str(dog_jpg), "--device", "gpu", "--sam", str(tmp_path / "no-sam")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "device 'gpu': expected cpu, cuda" in result.output and "SAM weights" not in result.output


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
    "flag, value, message",
    [
        ("--pred-iou-thresh", "2", "less than or equal to 1"),
        ("--points-per-side", "0", "greater than or equal to 1"),
        ("--top-k", "0", "greater than or equal to 1"),
        ("--min-mask-area", "-1", "greater than or equal to 0"),
    ],
)
def test_out_of_range_settings_are_refused_before_models_load(tmp_path, dog_jpg, flag, value, message):
    result = runner.invoke(app, ["run", str(dog_jpg), flag, value, "--sam", str(tmp_path / "no-sam")])
    assert result.exit_code == 2 and "SAM weights" not in result.output
    assert f"Invalid value for '{flag}'" in result.output and message in result.output


# -- a run says what it did ------------------------------------------------------------------------


def test_the_sample_photo_runs_and_every_step_is_reported(tmp_path, tiny_sam, tiny_ram_pth):
    """README's first command, with tiny local weights: a line per model loaded, a line per image."""
    result = runner.invoke(app, ["run", "--sample", "--out", str(tmp_path), *_model_args(tiny_sam, tiny_ram_pth)])
    assert result.exit_code == 0, result.output
    graph = SceneGraph.load(tmp_path / "dog.json")
    assert (graph.file, graph.width, graph.height) == ("dog.jpg", 800, 534) and graph.relations
    lines = result.output.splitlines()
    assert re.fullmatch(
        rf"loaded SAM ViT 32x2 \({re.escape(str(tiny_sam.original_pth))}\) on cpu in \d+\.\d s", lines[0]
    )
    assert re.fullmatch(rf"loaded RAM relation head \({re.escape(str(tiny_ram_pth))}\) on cpu in \d+\.\d s", lines[1])
    expected = (
        f"dog.jpg: {len(graph.segments)} segments, {len(graph.relations)} relations -> "
        f"{tmp_path / 'dog.json'}, {tmp_path / 'dog.png'} ("
    )
    assert lines[2].startswith(expected) and re.search(r"\(\d+\.\d s\)$", lines[2]) and len(lines) == 3


def test_no_image_and_no_sample_is_a_usage_error():
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2 and "--sample" in result.output


def test_thresholds_that_keep_no_mask_say_which_flags_to_change(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth):
    args = [
        "run",
        str(dog_jpg),
        "--out",
        str(tmp_path),
        "--sam",
        str(tiny_sam.original_pth),
        "--ram",
        str(tiny_ram_pth),
    ]
    result = runner.invoke(app, [*args, "--points-per-side", "2", "--box-nms-thresh", "1"])  # SAM's default thresholds
    assert result.exit_code == 0, result.output
    assert "dog.jpg: 0 segments, 0 relations" in result.output
    assert (
        "warning: dog.jpg: no mask passed the segmentation thresholds: lower --pred-iou-thresh (now 0.88) or "
        "--stability-score-thresh (now 0.95)" in result.output
    )


def test_a_filter_that_keeps_no_relation_says_so(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth, tiny_clip_folder):
    args = ["run", str(dog_jpg), "--out", str(tmp_path), *_model_args(tiny_sam, tiny_ram_pth)]
    result = runner.invoke(
        app,
        [
            *args,
            "--labeler",
            str(tiny_clip_folder),
            "--vocab",
            "dog,bowl",
            "--label-threshold",
            "0",
            "--subject",
            "giraffe",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dog.jpg: " in result.output and " segments, 0 relations" in result.output
    warning = re.search(
        r"warning: dog\.jpg: no relation of the (\d+) ranked matches --subject 'giraffe' \((.*)\)", result.output
    )
    assert warning and int(warning.group(1)) > 0, result.output
    assert "the segments here are named" in warning.group(2) and "change or drop the filter" in result.output


def test_an_empty_prompted_subject_is_reported_for_that_image(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth):
    args = ["run", str(dog_jpg), "--out", str(tmp_path), *_model_args(tiny_sam, tiny_ram_pth)]
    result = runner.invoke(app, [*args, "--point", "400,300", "--mask-threshold", "1000000"])
    assert result.exit_code == 4, result.output  # that input failed
    assert "error: dog.jpg: SAM's mask for the point (400.0, 300.0) is empty" in result.output
    assert "1 of 1 images failed" in result.output


# -- help, version, python -m --------------------------------------------------------------------


def _commands(group, path=()) -> list[list[str]]:
    """Every command of the app, subcommands of groups included (a new one cannot be left out)."""
    found = []
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            found += _commands(command, (*path, name))
        else:
            found.append([*path, name])
    return found


COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_reads_well_at_80_columns(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    too_long = [line for line in result.output.splitlines() if len(line) > 80]
    assert not too_long, too_long
    for cut in ("…", "<list[", "<str>", "<int", "<float", "{"):  # no cut names, no Python types
        assert cut not in result.output, cut
    assert f"Usage: root {' '.join(command)} [OPTIONS]" in result.output
    assert "Examples:\n    relate-anything " + " ".join(command) in result.output
    assert "Exit codes: 0 done; 1 internal error; 2 usage" in result.output


def test_run_help_groups_its_options_and_names_values():
    output = runner.invoke(app, ["run", "--help"], terminal_width=80).output
    assert output.startswith("Usage: root run [OPTIONS] [IMAGE]...")
    for heading in ("Arguments:", "Options:", "Models:", "Naming and finding:", "Filters:", "Segment everything:"):
        assert f"\n{heading}\n" in output
    for option in ("--point X,Y", "--box X0,Y0,X1,Y1", "--sam WEIGHTS", "--stability-score-thresh NUMBER", "--top-k N"):
        assert option in output


def test_version_and_python_dash_m():
    from relate_anything import __version__

    assert runner.invoke(app, ["--version"]).output == f"relate-anything {__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "relate_anything", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout == f"relate-anything {__version__}\n", done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "relate_anything", "run", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.startswith("Usage: relate-anything run [OPTIONS] [IMAGE]...")


def test_readme_and_every_help_state_the_same_exit_codes():
    from relate_anything.console import EXIT_CODES_HELP

    readme = " ".join((TESTS.parent / "README.md").read_text().split())
    assert EXIT_CODES_HELP in readme
    for command in COMMANDS:
        output = " ".join(runner.invoke(app, [*command, "--help"], terminal_width=80).output.split())
        assert EXIT_CODES_HELP in output, command


def _readme_bash_blocks() -> list[str]:
    readme = (TESTS.parent / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)


def test_readme_quick_start_runs_offline_with_local_checkpoints(tmp_path, tiny_sam, tiny_ram_pth, monkeypatch):
    """README's first block ends with a scene graph of the packaged sample; the block right below
    runs the same command on checkpoint files (here tiny random ones under the published names)."""
    import shlex
    import shutil

    first, offline = _readme_bash_blocks()[:2]
    quick_start = first.strip().splitlines()[-1].split(" && ")[-1]
    assert quick_start == "relate-anything run --sample --out out/"
    [command] = offline.strip().splitlines()
    assert command.startswith(quick_start + " --sam sam_vit_h_4b8939.pth --ram ram_epoch12.pth")
    shutil.copy(tiny_sam.original_pth, tmp_path / "sam_vit_h_4b8939.pth")
    shutil.copy(tiny_ram_pth, tmp_path / "ram_epoch12.pth")
    monkeypatch.chdir(tmp_path)
    # A coarse grid: SAM's default 32 x 32 takes minutes on a test machine's CPU.
    args = shlex.split(command)[1:] + ["--points-per-side", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    graph = SceneGraph.load(tmp_path / "out" / "dog.json")
    assert graph.file == "dog.jpg" and (tmp_path / "out" / "dog.png").is_file()
    assert "loaded SAM ViT 32x2 (sam_vit_h_4b8939.pth)" in result.output
    assert "dog.jpg: 0 segments, 0 relations -> out/dog.json, out/dog.png" in result.output  # random weights


def test_ui_and_api_take_upload_limits_in_the_same_unit():
    for command in ("ui", "serve"):
        output = " ".join(runner.invoke(app, [command, "--help"], terminal_width=80).output.split())
        assert "--max-upload-mb MIB Largest image file accepted, in MiB (2^20 bytes)" in output, command
        assert "[default: 20.0; x>=0.001]" in output
