"""`reuse_freed_memory`: the process keeps what it frees (so big CPU tensors cost no page faults
the second time), and the commands turn it on for CPU runs."""

import os
import platform
import subprocess
import sys

import pytest

from relate_anything.cpu_allocator import OPT_OUT_ENV_VAR

glibc = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's (Linux)"
)

# Allocates, touches and frees 64 MiB; prints whether tuning applied and how many MiB stayed resident.
_PROBE = """
import os, sys, torch
from relate_anything.cpu_allocator import reuse_freed_memory
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
applied = reuse_freed_memory(sys.argv[2]) if sys.argv[1] == "tune" else False
before = rss()
block = torch.ones(64 << 20, dtype=torch.uint8)
del block
print(applied, (rss() - before) >> 20)
"""


def _probe(mode: str, device: str = "cpu", **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, device],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    applied, kept = done.stdout.split()
    return applied, int(kept)


@glibc
@pytest.mark.slow
def test_freed_memory_stays_in_the_process():
    applied, kept = _probe("default")
    assert applied == "False" and kept < 8  # glibc gives a 64 MiB block back to the kernel at once
    applied, kept = _probe("tune")
    assert applied == "True" and kept >= 60  # ... and keeps it for the next allocation once tuned


@glibc
def test_opting_out_leaves_the_allocator_alone():
    applied, kept = _probe("tune", **{OPT_OUT_ENV_VAR: "0"})
    assert applied == "False" and kept < 8


@glibc
def test_a_gpu_process_leaves_the_allocator_alone():
    applied, kept = _probe("tune", device="cuda:0")
    assert applied == "False" and kept < 8


@glibc
def test_calling_again_changes_nothing():
    from relate_anything.cpu_allocator import reuse_freed_memory

    assert reuse_freed_memory() is True
    assert reuse_freed_memory() is True


def test_cpu_commands_reuse_freed_memory(monkeypatch, tmp_path, dog_jpg, tiny_sam, tiny_ram_pth):
    from typer.testing import CliRunner

    from relate_anything import cpu_allocator
    from relate_anything.cli import app

    calls = []
    monkeypatch.setattr(cpu_allocator, "reuse_freed_memory", lambda device=None: calls.append(1) or True)
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(dog_jpg),
            "--out",
            str(tmp_path),
            "--sam",
            str(tiny_sam.folder),
            "--ram",
            str(tiny_ram_pth),
            "--points-per-side",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert calls == [1]
