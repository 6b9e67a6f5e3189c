"""Shared fixtures: tiny data (8x8 digits), a tiny teacher trained in seconds."""

from __future__ import annotations

import os

import pytest
import torch

from geodistill.config import SqueezeConfig
from geodistill.data import load_dataset
from geodistill.runtime import make_runtime

# Two threads by default; an explicit OMP_NUM_THREADS wins. mutmut forks one child per mutant and a
# forked child deadlocks in a torch thread pool the parent started, so it runs with OMP_NUM_THREADS=1.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """$GEODISTILL_CACHE for the session's and modules' fixtures (set up before any test's own):
    nothing the tests cache (decoded folders, teacher scores) reaches the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEODISTILL_CACHE", str(tmp_path_factory.mktemp("session-cache")))
        yield


@pytest.fixture(autouse=True)
def _own_cache(_session_cache, tmp_path_factory):
    """Each test gets its own $GEODISTILL_CACHE, so no test reuses what another cached. (Its own
    MonkeyPatch, so that a test's ``monkeypatch.undo()`` keeps it.)"""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEODISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def rt():
    return make_runtime("cpu")


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", image_size=8)


@pytest.fixture(scope="session")
def teacher(digits, rt):
    """convnet-tiny on 8x8 digits: ~1 s to train, ~95 % test accuracy."""
    from geodistill.teacher import train_teacher

    cfg = SqueezeConfig(arch="convnet-tiny", epochs=6, batch_size=64, lr=0.05)
    return train_teacher(digits, cfg, rt)


@pytest.fixture(scope="session")
def stats(teacher, digits, rt):
    from geodistill.stats import compute_class_stats

    return compute_class_stats(teacher.model, digits, rt)


CLI_COMMON = ["--data", "digits", "--image-size", "8", "--device", "cpu", "--quiet"]


@pytest.fixture
def cli_teacher(tmp_path):
    """A 1-epoch convnet-tiny teacher written by `geodistill squeeze`; returns its path."""
    from geodistill.cli import main

    t = tmp_path / "t.safetensors"
    assert main(["squeeze", *CLI_COMMON, "--arch", "convnet-tiny", "--epochs", "1", "--out", str(t)]) == 0
    return t
