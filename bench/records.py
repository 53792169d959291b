"""One JSON result record per benchmark run, under bench/results/ (docs/benchmarks.md is written
from them by bench/report.py).

A record:

    {"schema": 1,
     "bench": "pipeline",                        # the script's name
     "date": "2026-11-30T14:02:11+00:00",        # when the run ended (ISO 8601)
     "command": "python bench/pipeline.py --device cuda ...",   # as run (with the MALLOC_*,
                                                 # OMP_NUM_THREADS, ... variables it ran under)
     "device": {"type": "cuda", "name": "NVIDIA H200", "cores": 16, "threads": 16},
     "torch": "2.11.0+cu130", "python": "3.12.3",
     "git": "c373d60...",                        # None where the tree has no .git (a GPU machine):
                                                 # set RELATE_ANYTHING_GIT_COMMIT there
     "load_average": {"start": [1m, 5m, 15m], "end": [...]},   # other work on a shared machine
     "figures": [{"variant": "vit_h", "dtype": "bf16", "batch_size": 8, "images_per_s": 12.3,
                  "reference_images_per_s": 1.1, "speedup": 11.2, ...}, ...],
     "details": {...},                           # everything else the script measured
     "notes": None, "source": None}

`figures` holds one flat row per measured configuration (a script that measures one thing has
one row); each script documents its figure names. `source` is None for a measurement made by
the script; records transcribed from earlier write-ups say where they came from.

Scripts call `add_json_option(parser)` and, at the end, `save(...)`. Nothing here imports torch
at module level: bench/reference_pipeline.py runs in another interpreter.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

SCHEMA = 1
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# Variables that change what a run measures, recorded in front of its command.
RECORDED_ENVIRONMENT = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "RELATE_ANYTHING_REUSE_FREED_MEMORY",
)
REQUIRED_FIELDS = ("bench", "date", "command", "device", "torch", "git", "figures")

# Taken when the script imports this module (its first lines): a loaded shared machine slows a run.
_LOAD_AT_START = os.getloadavg()


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """`--json PATH` (old spelling `--out`): where the record goes (default: `default_path`)."""
    parser.add_argument(
        "--json",
        "--out",
        dest="json",
        type=Path,
        default=None,
        help="write the result record here (default: bench/results/<bench>-<date>-<device>.json)",
    )


def device_info(device: Any = "cpu") -> dict[str, Any]:
    """{"type", "name", "cores", "threads"} of a torch device (or its name).

    name: the GPU's name, or the CPU model from /proc/cpuinfo; cores: CPU cores this process may
    run on; threads: torch's intra-op threads.
    """
    import torch

    device = torch.device(device)
    info: dict[str, Any] = {"type": device.type, "name": cpu_model(), "cores": _cores()}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        info["name"] = properties.name
        info["memory_gib"] = round(properties.total_memory / 2**30, 1)
    info["threads"] = torch.get_num_threads()
    return info


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 9654 96-Core Processor"), else the architecture."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def git_commit() -> str | None:
    """HEAD's commit, with "-dirty" when tracked files differ from it; None without git
    (a copied tree on a GPU machine), unless RELATE_ANYTHING_GIT_COMMIT says."""
    given = os.environ.get("RELATE_ANYTHING_GIT_COMMIT")
    if given:
        return given
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if changed else "")


def command_line(argv: list[str] | None = None) -> str:
    """The command as it can be run again from the repository root: the variables of
    RECORDED_ENVIRONMENT that are set, `python`, the script relative to the root, its arguments."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    if script.is_relative_to(REPO):
        argv[0] = str(script.relative_to(REPO))
    variables = [f"{name}={os.environ[name]}" for name in RECORDED_ENVIRONMENT if name in os.environ]
    return " ".join([*variables, "python", shlex.join(argv)])


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def make_record(
    bench: str,
    figures: list[dict[str, Any]],
    *,
    device: Any = "cpu",
    details: dict[str, Any] | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """The record of a run of `bench` that measured `figures` (one flat dict per configuration)
    on `device` (a torch device or its name), now, with this process's command line."""
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    record = {
        "schema": SCHEMA,
        "bench": bench,
        "date": now(),
        "command": command_line(),
        "device": device_info(device) if torch_version else {"type": "cpu", "name": cpu_model(), "cores": _cores()},
        "torch": torch_version,
        "python": platform.python_version(),
        "git": git_commit(),
        "load_average": {"start": list(_LOAD_AT_START), "end": list(os.getloadavg())},
        "figures": figures,
        "details": details or {},
        "notes": notes,
        "source": None,
    }
    check_record(record)
    return record


def check_record(record: dict[str, Any], where: str = "record") -> None:
    """Raise ValueError unless `record` has the fields a record must have."""
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    if not re.fullmatch(r"[a-z0-9_]+", str(record["bench"])):
        raise ValueError(f"{where}: bench must be a lower-case name, got {record['bench']!r}")
    device = record["device"]
    if not isinstance(device, dict) or not {"type", "name", "cores"} <= device.keys():
        raise ValueError(f"{where}: device must be {{'type', 'name', 'cores', ...}}, got {device!r}")
    figures = record["figures"]
    if not isinstance(figures, list) or not figures or not all(isinstance(row, dict) for row in figures):
        raise ValueError(f"{where}: figures must be a non-empty list of rows (dicts)")


def device_slug(device: dict[str, Any]) -> str:
    """ "cpu" for a CPU, else the accelerator's name in lower case ("nvidia-h200")."""
    if device["type"] == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", str(device["name"]).lower()).strip("-") or device["type"]


def default_path(record: dict[str, Any], *, tag: str | None = None, folder: Path | None = None) -> Path:
    """bench/results/<bench>-<YYYY-MM-DD>-<device>[-<tag>].json, with -2, -3, ... added rather
    than replacing an earlier run's record. $RELATE_ANYTHING_BENCH_RESULTS overrides the folder."""
    folder = Path(folder or os.environ.get("RELATE_ANYTHING_BENCH_RESULTS") or RESULTS_DIR)
    parts = [record["bench"], record["date"][:10], device_slug(record["device"])]
    if tag:
        parts.append(re.sub(r"[^A-Za-z0-9_.+]+", "-", tag))
    stem = "-".join(parts)
    path, copy = folder / f"{stem}.json", 2
    while path.exists():
        path, copy = folder / f"{stem}-{copy}.json", copy + 1
    return path


def write_record(record: dict[str, Any], path: Path | None = None, *, tag: str | None = None) -> Path:
    """Write `record` as indented JSON to `path` (default: `default_path`), atomically."""
    from relate_anything.atomic import write_text_atomically

    check_record(record)
    path = Path(path) if path is not None else default_path(record, tag=tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomically(path, json.dumps(_finite(record), indent=1, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None (JSON has no such numbers) and tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def save(
    bench: str,
    figures: list[dict[str, Any]],
    *,
    device: Any,
    path: Path | None,
    details: dict[str, Any] | None = None,
    notes: str | None = None,
    tag: str | None = None,
) -> Path:
    """`make_record` + `write_record`, saying on stderr where the record went."""
    written = write_record(make_record(bench, figures, device=device, details=details, notes=notes), path, tag=tag)
    print(f"{bench}: wrote {written}", file=sys.stderr)
    return written
