"""Reliability drills: interrupted runs, untrusted files, reproducibility, memory hints."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CLI_COMMON
from PIL import Image

from geodistill.cli import main
from geodistill.data import load_dataset
from geodistill.files import GeodistillError, load_tensors
from geodistill.models import create_model, load_checkpoint
from geodistill.resources import check_batch_fits, parse_bytes

DRILL = {
    "name": "drill",
    "data": {"source": "digits", "image_size": 8},
    "squeeze": {"arch": "convnet-tiny", "epochs": 12, "batch_size": 32},
    "distill": {"ipc": 2, "iterations": 150, "batch_classes": 2},
    "evaluate": {"epochs": 2, "seeds": 1, "batch_size": 20},
    "methods": ["wmdd"],
    "device": "cpu",
}


def _cli(cfg: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "geodistill.cli", "run", str(cfg), "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_for(proc: subprocess.Popen, path_glob: tuple[Path, str], timeout: float = 120) -> None:
    root, pattern = path_glob
    t0 = time.time()
    while not list(root.glob(pattern)):
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {pattern} appeared:\n{proc.stdout.read()}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{pattern} did not appear")
        time.sleep(0.05)


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    cfg = tmp_path / "drill.yaml"
    cfg.write_text(yaml.safe_dump(DRILL))
    ref = _cli(cfg, tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    out = tmp_path / "run"
    # 1) SIGKILL while the teacher trains (after an epoch was saved)
    p = _cli(cfg, out)
    _wait_for(p, (out, "teacher.state.safetensors"))
    p.send_signal(signal.SIGKILL)
    p.wait()
    state_epoch = load_tensors(out / "teacher.state.safetensors")[1]["epoch"]
    # SIGKILL may leave a temp file behind, but every final file that exists must be complete
    for f in out.glob("**/*.safetensors"):
        load_tensors(f)
    # 2) resume, then SIGTERM once the first class group of synthesis is saved
    p = _cli(cfg, out, "--resume")
    _wait_for(p, (out / "wmdd" / "parts", "group_00000.safetensors"))
    p.send_signal(signal.SIGTERM)
    log2 = p.communicate(timeout=60)[0]
    assert p.returncode == 130, log2
    assert f"resuming after epoch {state_epoch}" in log2
    assert f"epoch {state_epoch}/" not in log2.split("resuming")[1]  # finished epochs not retrained
    assert "rerun with --resume" in log2
    assert not list(out.glob("**/.*.tmp"))  # SIGTERM unwinds: no temp files left behind
    # 3) resume to the end: no finished group recomputed, same images as the uninterrupted run
    p = _cli(cfg, out, "--resume")
    log3 = p.communicate(timeout=300)[0]
    assert p.returncode == 0, log3
    assert "teacher: reusing" in log3 and "class group(s) already done" in log3
    assert "classes 0-1" not in log3  # group 0 was loaded, not recomputed
    a, _ = load_tensors(tmp_path / "ref" / "wmdd" / "distilled.safetensors")
    b, _ = load_tensors(out / "wmdd" / "distilled.safetensors")
    assert torch.equal(a["images"], b["images"])
    ta, _ = load_tensors(tmp_path / "ref" / "teacher.safetensors")
    tb, _ = load_tensors(out / "teacher.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/geodistill-pwned",))


def test_crafted_pickle_checkpoint_is_refused(tmp_path):
    for name in ("evil.pt", "evil.pth", "evil.safetensors"):
        p = tmp_path / name
        p.write_bytes(pickle.dumps({"state_dict": _Evil()}))
        with pytest.raises(GeodistillError, match="safetensors"):
            load_checkpoint(p)
    assert not Path("/tmp/geodistill-pwned").exists()


def test_cli_refuses_pickle_teacher_with_clear_message(tmp_path, capsys):
    p = tmp_path / "teacher.pt"
    p.write_bytes(pickle.dumps(_Evil()))
    rc = main(
        [
            "distill",
            "--data",
            "digits",
            "--image-size",
            "8",
            "--device",
            "cpu",
            "--teacher",
            str(p),
            "--out",
            str(tmp_path / "d"),
        ]
    )
    assert rc == 2 and "pickle files can run code" in capsys.readouterr().err


def test_same_command_twice_gives_bit_identical_images(tmp_path, cli_teacher):
    for run in ("a", "b"):
        args = ["distill", *CLI_COMMON, "--teacher", str(cli_teacher), "--ipc", "2", "--iterations", "5"]
        assert main([*args, "--out", str(tmp_path / run)]) == 0
    a, _ = load_tensors(tmp_path / "a" / "distilled.safetensors")
    b, _ = load_tensors(tmp_path / "b" / "distilled.safetensors")
    assert torch.equal(a["images"], b["images"])
    import json

    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert {"python", "torch", "torchvision", "geodistill"} <= set(man["versions"])
    assert man["device"].startswith("cpu") and man["seed"] == 0 and man["teacher"]["sha256"]


def test_memory_hints():
    assert (
        parse_bytes("4GB") == 4 * 10**9 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("") is None
    )
    with pytest.raises(GeodistillError, match="expected a size"):
        parse_bytes("lots")
    m = create_model("convnet", num_classes=10, image_size=32)
    small = check_batch_fits(m, (3, 32, 32), 1, torch.device("cpu"), "1GB", what="x", hint="y")
    big = check_batch_fits(m, (3, 32, 32), 100, torch.device("cpu"), None, what="x", hint="y")
    assert big > 50 * (small - 4 * sum(p.numel() * 4 for p in m.parameters()))
    with pytest.raises(GeodistillError, match="over the max_memory limit.*lower distill.batch_classes"):
        check_batch_fits(
            m,
            (3, 32, 32),
            10_000,
            torch.device("cpu"),
            "1GB",
            what="wmdd synthesis",
            hint="lower distill.batch_classes",
        )


def test_max_memory_fails_before_synthesis(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**DRILL, "squeeze": {**DRILL["squeeze"], "epochs": 1}}))
    t0 = time.time()
    rc = main(["run", str(cfg), "--out", str(tmp_path / "o"), "--distill.max_memory", "10kB", "--quiet"])
    assert rc == 2 and "max_memory" in capsys.readouterr().err
    assert time.time() - t0 < 60
    assert not (tmp_path / "o" / "wmdd" / "distilled.safetensors").exists()


# --- data drills not covered in test_data.py -----------------------------------------------


def _tree(root: Path, classes=("a", "b"), n=2):
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 50 * i + (100 if c == "b" else 0), np.uint8)).save(
                    root / split / c / f"{i}.png"
                )
    return root


def test_truncated_image_is_named(tmp_path):
    root = _tree(tmp_path)
    good = (root / "train" / "a" / "0.png").read_bytes()
    big = root / "train" / "a" / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big)
    big.write_bytes(big.read_bytes()[: len(big.read_bytes()) // 2])
    assert good
    with pytest.raises(GeodistillError, match=r"cut\.png: unreadable image"):
        load_dataset(f"folder:{root}")
    d = load_dataset(f"folder:{root}", skip_bad_images=True, image_size=8)
    assert any("cut.png" in s for s in d.skipped)


def test_unsupported_mode_is_named(tmp_path):
    root = _tree(tmp_path)
    Image.new("CMYK", (8, 8)).save(root / "train" / "b" / "cmyk.jpg")
    with pytest.raises(GeodistillError, match=r"cmyk\.jpg: unsupported image mode 'CMYK'"):
        load_dataset(f"folder:{root}")


def test_split_folders_created_in_different_orders_map_to_the_same_labels(tmp_path):
    root = tmp_path
    for split, order in (("train", ("zebra", "ant")), ("test", ("ant", "zebra"))):
        for c in order:
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.full((4, 4, 3), 200 if c == "zebra" else 10, np.uint8)).save(
                root / split / c / "x.png"
            )
    d = load_dataset(f"folder:{root}")
    assert d.class_names == ["ant", "zebra"]
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x[y == 1].float().mean() > x[y == 0].float().mean()


def test_npz_inf_and_negative_labels(tmp_path):
    x = np.zeros((4, 4, 4), np.float32)
    x[1, 2, 3] = np.inf
    np.savez(
        tmp_path / "a.npz",
        x_train=x,
        y_train=np.array([0, 1, 0, 1]),
        x_test=np.zeros((2, 4, 4), np.float32),
        y_test=np.array([0, 1]),
    )
    with pytest.raises(GeodistillError, match=r"x_train contains NaN/Inf \(first at index \(1, 0, 2, 3\)\)"):
        load_dataset(f"npz:{tmp_path / 'a.npz'}")
    np.savez(
        tmp_path / "b.npz",
        x_train=np.zeros((4, 4, 4), np.float32),
        y_train=np.array([0, 1, -1, 1]),
        x_test=np.zeros((2, 4, 4), np.float32),
        y_test=np.array([0, 1]),
    )
    with pytest.raises(GeodistillError, match="label -1 out of range"):
        load_dataset(f"npz:{tmp_path / 'b.npz'}")
