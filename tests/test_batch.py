"""`relate-anything batch`: inputs, atomic shards, exactly-once resume after SIGKILL, CPU workers,
Ray — with the small random SAM (256-px inputs) and the tiny RAM head."""

import collections
import functools
import http.server
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from relate_anything import RelateAnything, SceneGraph
from relate_anything.batch import (
    ErrorLog,
    InputError,
    InputItem,
    ShardWriter,
    finished_files,
    list_inputs,
    load_input,
    read_errors,
    read_scene_graphs,
    run_batch,
    shard_paths,
)
from relate_anything.cli import app
from relate_anything.errors import ImageError
from relate_anything.image_io import load_image
from relate_anything.pipeline import PipelineSpec
from relate_anything.settings import SegmentSettings

runner = CliRunner()

# Few points and no score filters: random weights keep a handful of masks, quickly.
SETTINGS = SegmentSettings(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def _model_args(small_sam, tiny_ram_pth):
    return [
        "--sam", str(small_sam), "--ram", str(tiny_ram_pth), "--top-k", "5",
        "--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1",
    ]  # fmt: skip


def _photos(folder: Path, count: int, *, broken: bool = True) -> list[str]:
    """`count` small JPEGs (some in a subfolder) and a file that is not an image; their ids."""
    rng = np.random.default_rng(0)
    names = []
    for k in range(count):
        name = f"sub/p{k:02d}.jpg" if k % 4 == 0 else f"p{k:02d}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        gradient = np.linspace(0, 255, 56 + k, dtype=np.float32)[None, :, None]
        pixels = np.clip(gradient + rng.normal(0, 40, (40 + k, 56 + k, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)
        names.append(name)
    if broken:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
        names.append("broken.jpg")
    return sorted(names)


def _assert_same_graph(graph: SceneGraph, expected: SceneGraph) -> None:
    """Same masks and relations; scores equal up to float noise (batched encodings, other thread
    counts sum in another order)."""
    assert (graph.file, graph.width, graph.height) == (expected.file, expected.width, expected.height)
    assert [s.mask for s in graph.segments] == [s.mask for s in expected.segments]
    assert [(r.subject, r.predicate_id, r.object) for r in graph.relations] == [
        (r.subject, r.predicate_id, r.object) for r in expected.relations
    ]
    assert [r.score for r in graph.relations] == pytest.approx([r.score for r in expected.relations], abs=1e-5)


def _output_counts(out: Path) -> collections.Counter:
    """How often each file appears in the committed shards plus errors.jsonl (every line parsed)."""
    counts = collections.Counter(graph.file for graph in read_scene_graphs(out))
    counts.update(record["file"] for record in read_errors(out))
    return counts


# -- inputs ------------------------------------------------------------------------------------


def test_folder_glob_and_manifests(tmp_path):
    names = _photos(tmp_path / "photos", 5)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    folder = list_inputs(tmp_path / "photos")
    assert [item.file for item in folder] == names  # relative to the folder, sorted, images only
    assert all(Path(item.location) == tmp_path / "photos" / item.file for item in folder)

    matched = list_inputs(f"{tmp_path}/photos/**/p*.jpg")
    assert sorted(Path(item.file) for item in matched) == sorted(
        tmp_path / "photos" / n for n in names if n != "broken.jpg"
    )

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "m.txt").write_text(
        "# my photos\n../photos/p01.jpg\n\n./../photos/p01.jpg\nhttps://example.org/a.jpg\n/abs/b.png\n"
    )
    assert list_inputs(lists / "m.txt") == [
        InputItem("../photos/p01.jpg", str(lists / "../photos/p01.jpg")),  # listed twice: once
        InputItem("https://example.org/a.jpg", "https://example.org/a.jpg"),
        InputItem("/abs/b.png", "/abs/b.png"),
    ]
    (lists / "m.csv").write_text("id,path\n1,a.jpg\n2,b/c.jpg\n")
    assert [item.file for item in list_inputs(lists / "m.csv")] == ["a.jpg", "b/c.jpg"]
    (lists / "plain.csv").write_text("a.jpg,1\nb.jpg,2\n")  # no header: the first column
    assert [item.file for item in list_inputs(lists / "plain.csv")] == ["a.jpg", "b.jpg"]
    (lists / "m.jsonl").write_text('"a.jpg"\n{"url": "https://example.org/x.jpg", "label": 3}\n')
    assert [item.file for item in list_inputs(lists / "m.jsonl")] == ["a.jpg", "https://example.org/x.jpg"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "no such folder"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "no image files"),
        (lambda root: f"{root}/*.png", "matches no file"),
        (lambda root: (root / "m.txt").write_text("# nothing\n") and root / "m.txt", "lists no image"),
        (lambda root: (root / "m.jsonl").write_text('{"label": 1}\n') and root / "m.jsonl", "line 1"),
        (lambda root: (root / "m.txt").write_text("nope://bucket/a.jpg\n") and root / "m.txt", "nope"),
    ],
)
def test_bad_inputs_are_named(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        list_inputs(make(tmp_path))


@pytest.mark.parametrize(
    "extra, message", [([], "no such folder"), (["--format", "xml"], "--format must be jsonl or parquet")]
)
def test_batch_command_refuses_bad_input_before_loading_models(tmp_path, extra, message):
    result = runner.invoke(
        app,
        ["batch", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--sam", str(tmp_path / "no-sam"), *extra],
    )
    assert result.exit_code == 2 and message in result.output and "SAM weights" not in result.output


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 serving `tmp_path / "www"`; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_manifest_and_images_over_http(http_root, dog_jpg):
    root, base = http_root
    (root / "imgs").mkdir()
    (root / "imgs" / "dog.jpg").write_bytes(dog_jpg.read_bytes())
    (root / "list.txt").write_text("imgs/dog.jpg\nimgs/gone.jpg\n")
    items = list_inputs(f"{base}/list.txt")
    assert items == [
        InputItem("imgs/dog.jpg", f"{base}/imgs/dog.jpg"),
        InputItem("imgs/gone.jpg", f"{base}/imgs/gone.jpg"),
    ]
    np.testing.assert_array_equal(load_input(items[0].location), load_image(dog_jpg))
    with pytest.raises(ImageError, match="HTTP 404"):
        load_input(items[1].location)


# -- shards and the error log ------------------------------------------------------------------


def _graph_json(file: str) -> str:
    return SceneGraph(width=4, height=3, file=file).to_json()


def test_only_committed_shards_count(tmp_path):
    with ShardWriter(tmp_path, shard_size=2) as writer:
        for k in range(3):
            writer.add(f"img{k}", _graph_json(f"img{k}"))
    assert [p.name for p in shard_paths(tmp_path)] == ["scene_graphs-000000.jsonl", "scene_graphs-000001.jsonl"]
    assert finished_files(tmp_path) == {"img0", "img1", "img2"}

    # A writer killed mid-write leaves a temporary file (a truncated line included): invisible.
    (tmp_path / "scene_graphs-000002.jsonl.tmp").write_text(_graph_json("img3") + "\n" + _graph_json("img4")[:40])
    # Killed between committing a shard and writing its index: the shard itself says what it holds.
    (tmp_path / "scene_graphs-000002.jsonl").write_text(_graph_json("img5") + "\n")
    assert finished_files(tmp_path) == {"img0", "img1", "img2", "img5"}
    assert [g.file for g in read_scene_graphs(tmp_path)] == ["img0", "img1", "img2", "img5"]

    writer = ShardWriter(tmp_path, shard_size=5)  # the restart: leftovers gone, numbering goes on
    assert not list(tmp_path.glob("*.tmp"))
    writer.add("img3", _graph_json("img3"))
    assert writer.flush().name == "scene_graphs-000003.jsonl"
    assert finished_files(tmp_path) == {"img0", "img1", "img2", "img3", "img5"}


def test_parquet_shards(tmp_path):
    pytest.importorskip("pyarrow")
    with ShardWriter(tmp_path, output_format="parquet", shard_size=2) as writer:
        for k in range(3):
            writer.add(f"img{k}", _graph_json(f"img{k}"))
    assert [p.suffix for p in shard_paths(tmp_path)] == [".parquet", ".parquet"]
    assert finished_files(tmp_path) == {"img0", "img1", "img2"}
    assert [(g.file, g.width) for g in read_scene_graphs(tmp_path)] == [("img0", 4), ("img1", 4), ("img2", 4)]


def test_error_log_survives_a_torn_line(tmp_path):
    log = ErrorLog(tmp_path)
    log.add("a.jpg", "ImageError", "a.jpg: cannot read image")
    with open(tmp_path / "errors.jsonl", "a") as handle:
        handle.write('{"file": "b.jpg", "err')  # killed mid-line
    assert [r["file"] for r in read_errors(tmp_path)] == ["a.jpg"]
    ErrorLog(tmp_path).add("c.jpg", "ValueError", "boom")
    assert [(r["file"], r["reason"]) for r in read_errors(tmp_path)] == [
        ("a.jpg", "a.jpg: cannot read image"),
        ("c.jpg", "boom"),
    ]
    assert (tmp_path / "errors.jsonl").read_text().count("\n") == 2


# -- the job -----------------------------------------------------------------------------------


def test_batch_command_end_to_end(tmp_path, small_sam, tiny_ram_pth, dog_jpg):
    photos = tmp_path / "photos"
    names = _photos(photos, 5)
    (photos / "dog.jpg").write_bytes(dog_jpg.read_bytes())
    names = sorted([*names, "dog.jpg"])
    out = tmp_path / "out"
    command = [
        "batch",
        str(photos),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--shard-size",
        "3",
        *_model_args(small_sam, tiny_ram_pth),
    ]

    result = runner.invoke(app, command)
    assert result.exit_code == 4, result.output  # one image failed
    assert "7 images: 6 done (6 in this run), 1 failed" in result.output
    assert _output_counts(out) == collections.Counter(names)
    [error] = read_errors(out)
    assert error["file"] == "broken.jpg" and "cannot read image" in error["reason"]

    # Each graph is what the pipeline gives for that photo alone.
    pipeline = RelateAnything.from_pretrained(small_sam, tiny_ram_pth, top_k=5, settings=SETTINGS)
    graphs = {graph.file: graph for graph in read_scene_graphs(out)}
    for name in ("dog.jpg", "sub/p00.jpg"):
        _assert_same_graph(graphs[name], pipeline(load_image(photos / name), file=name))
    assert graphs["dog.jpg"].relations and graphs["dog.jpg"].features() is None

    # The same command again: nothing is redone.
    shards = {p: p.read_bytes() for p in shard_paths(out)}
    result = runner.invoke(app, command)
    assert result.exit_code == 4 and "6 done (0 in this run), 1 failed" in result.output
    assert {p: p.read_bytes() for p in shard_paths(out)} == shards

    # Other settings into the same folder are refused; fixing the bad file and retrying clears the failure.
    result = runner.invoke(app, [*command, "--top-k", "7"])
    assert result.exit_code == 2 and "top_k: 5 before, 7 now" in result.output
    (photos / "broken.jpg").write_bytes((photos / "p01.jpg").read_bytes())
    result = runner.invoke(app, [*command, "--retry-errors"])
    assert result.exit_code == 0, result.output
    assert "7 done (1 in this run), 0 failed" in result.output
    assert _output_counts(out) == collections.Counter(names) and not read_errors(out)


def test_job_json_records_each_model_by_its_content(tmp_path, small_sam, tiny_ram_pth, monkeypatch):
    """The same weights given another way (flag or environment variable, relative or absolute
    path, a copy) are the same job; other weights are refused, however they are given."""
    import json
    import shutil

    from relate_anything.batch.job import JOB_FILE, check_job_settings, job_settings
    from relate_anything.errors import UsageError
    from relate_anything.weights import fingerprint

    def check(spec):
        check_job_settings(tmp_path, job_settings(spec, features=False, output_format="jsonl"))

    monkeypatch.delenv("RELATE_ANYTHING_SAM", raising=False)
    monkeypatch.delenv("RELATE_ANYTHING_RAM", raising=False)
    check(PipelineSpec(sam=str(small_sam), ram=str(tiny_ram_pth)))
    recorded = json.loads((tmp_path / JOB_FILE).read_text())["settings"]
    assert recorded["sam"] == {"reference": str(small_sam), "fingerprint": fingerprint(small_sam)}
    assert recorded["ram"]["fingerprint"].startswith("sha256:")
    # The same weights: from the environment, by a relative path, a copy elsewhere.
    monkeypatch.setenv("RELATE_ANYTHING_SAM", str(small_sam))
    monkeypatch.chdir(tiny_ram_pth.parent)
    check(PipelineSpec(ram=tiny_ram_pth.name))
    copy = shutil.copytree(small_sam, tmp_path / "sam-copy")
    check(PipelineSpec(sam=str(copy), ram=str(tiny_ram_pth)))
    # Other weights: the head with one weight changed, given by the variable.
    import torch

    state = torch.load(tiny_ram_pth, weights_only=True)
    name = next(iter(state))
    state[name] = state[name].clone()
    state[name].view(-1)[0] += 1
    other = tmp_path / "ram_other.pth"
    torch.save(state, other)
    monkeypatch.setenv("RELATE_ANYTHING_RAM", str(other))
    with pytest.raises(UsageError, match=r"ram: other weights \('.*ram_epoch12.pth', sha256:"):
        check(PipelineSpec())
    assert json.loads((tmp_path / JOB_FILE).read_text())["settings"] == recorded  # unchanged
    # A job.json of an earlier version names the models only: the same names are the same job.
    monkeypatch.delenv("RELATE_ANYTHING_RAM")
    older = recorded | {"sam": str(small_sam), "ram": recorded["ram"]["reference"]}
    (tmp_path / JOB_FILE).write_text(json.dumps({"settings": older}))
    check(PipelineSpec(ram=recorded["ram"]["reference"]))
    with pytest.raises(UsageError, match=r"ram: .* before, '.*ram_other.pth' now"):
        check(PipelineSpec(ram=str(other)))


def test_a_failing_image_does_not_spoil_its_batch(tmp_path, small_sam, tiny_ram_pth):
    """An error inside the pipeline (not decoding) fails that image only, with the reason (Parquet output)."""
    names = _photos(tmp_path / "photos", 3, broken=False)
    pipeline = RelateAnything.from_pretrained(small_sam, tiny_ram_pth, top_k=5, settings=SETTINGS)
    relate_one = pipeline._graph

    def fail_on_the_widest(pixels, *args, **options):
        if pixels.shape[1] == 58:  # p02.jpg
            raise ValueError("this photo upsets the model")
        return relate_one(pixels, *args, **options)

    pipeline._graph = fail_on_the_widest
    pytest.importorskip("pyarrow")
    out = tmp_path / "out"
    summary = run_batch(
        list_inputs(tmp_path / "photos"),
        out,
        PipelineSpec(sam=str(small_sam), ram=str(tiny_ram_pth), top_k=5, settings=SETTINGS),  # what `pipeline` is
        batch_size=3,
        output_format="parquet",
        pipeline=pipeline,
    )
    assert (summary.done, summary.failed) == (2, 1)
    assert read_errors(out) == [
        {"file": "p02.jpg", "error": "ValueError", "reason": "ValueError: this photo upsets the model"}
    ]
    assert [p.suffix for p in shard_paths(out)] == [".parquet"]
    assert sorted(finished_files(out)) == [n for n in names if n != "p02.jpg"]


def _children(pid: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
def test_sigkill_mid_run_then_resume_gives_every_image_exactly_once(tmp_path, small_sam, tiny_ram_pth):
    """Two CPU worker processes, one output; killed (SIGKILL) as soon as a shard is committed."""
    names = _photos(tmp_path / "photos", 11)
    out = tmp_path / "out"
    args = [
        "batch",
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--shard-size",
        "2",
        *_model_args(small_sam, tiny_ram_pth),
    ]
    command = [sys.executable, "-c", "from relate_anything.cli import main; main()", *args]

    job = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    workers = set()
    while not shard_paths(out) and job.poll() is None and time.monotonic() < deadline:
        workers |= _children(job.pid)
        time.sleep(0.02)
    workers |= _children(job.pid)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()
    done_before = _output_counts(out)
    assert 0 < sum(done_before.values()) < len(names)  # killed mid-way
    assert max(done_before.values()) == 1

    # The orphaned workers notice and end themselves.
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)

    # The same command finishes the job: every image exactly once, each graph the pipeline's own.
    finished = subprocess.run([*command, "--workers", "2"], capture_output=True, text=True, timeout=240)
    assert finished.returncode == 4, finished.stderr  # broken.jpg failed: some inputs failed
    assert _output_counts(out) == collections.Counter(names)
    assert not list(out.glob("*.tmp"))
    graphs_before = sum(done_before.values()) - done_before["broken.jpg"]
    assert f"{len(names) - 1} done ({len(names) - 1 - graphs_before} in this run)" in finished.stderr
    pipeline = RelateAnything.from_pretrained(small_sam, tiny_ram_pth, top_k=5, settings=SETTINGS)
    for graph in read_scene_graphs(out):
        _assert_same_graph(graph, pipeline(load_image(tmp_path / "photos" / graph.file), file=graph.file))


@pytest.mark.slow
def test_ray_local_cluster_writes_the_same_output(tmp_path, small_sam, tiny_ram_pth):
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'relate-anything[ray]')")
    names = _photos(tmp_path / "photos", 4)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["batch", str(tmp_path / "photos"), "--out", str(out), "--ray", "local", "--workers", "2", "--batch-size", "2", "--shard-size", "2",
         *_model_args(small_sam, tiny_ram_pth)],
    )  # fmt: skip
    assert result.exit_code == 4, result.output  # broken.jpg failed
    assert _output_counts(out) == collections.Counter(names)
    assert [r["file"] for r in read_errors(out)] == ["broken.jpg"]
    pipeline = RelateAnything.from_pretrained(small_sam, tiny_ram_pth, top_k=5, settings=SETTINGS)
    for graph in read_scene_graphs(out):
        _assert_same_graph(graph, pipeline(load_image(tmp_path / "photos" / graph.file), file=graph.file))


@pytest.mark.gpu
def test_batch_on_every_gpu(tmp_path, small_sam, tiny_ram_pth):
    """One worker per GPU (or the one GPU in this process): every image exactly once."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    names = _photos(tmp_path / "photos", 6)
    devices = ",".join(f"cuda:{k}" for k in range(torch.cuda.device_count()))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "batch",
            str(tmp_path / "photos"),
            "--out",
            str(out),
            "--devices",
            devices,
            *_model_args(small_sam, tiny_ram_pth),
        ],
    )
    assert result.exit_code == 4, result.output  # broken.jpg failed
    assert _output_counts(out) == collections.Counter(names)
    assert [r["file"] for r in read_errors(out)] == ["broken.jpg"]
