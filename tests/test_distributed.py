"""torchrun on CPU (gloo): class groups sharded over 2 ranks give the single-process result."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import CLI_COMMON

from geodistill.files import load_tensors


@pytest.mark.skipif(
    shutil.which("torchrun") is None
    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun not installed",
)
def test_sharded_synthesis_matches_single_process(tmp_path, cli_teacher):
    stage = [
        "distill",
        *CLI_COMMON,
        "--teacher",
        str(cli_teacher),
        "--ipc",
        "2",
        "--iterations",
        "4",
        "--batch-classes",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count in both: same float reductions
    single = subprocess.run(
        [sys.executable, "-m", "geodistill.cli", *stage, "--out", str(tmp_path / "single")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stdout + single.stderr
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    r = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "geodistill.cli",
            *stage,
            "--out",
            str(tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    a, _ = load_tensors(tmp_path / "single" / "distilled.safetensors")
    b, _ = load_tensors(tmp_path / "ddp" / "distilled.safetensors")
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
