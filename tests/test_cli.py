"""End-to-end through the command line on 8x8 digits with a tiny model."""

import json

import pytest
import yaml

from geodistill.cli import main

TINY = {
    "name": "tiny",
    "data": {"source": "digits", "image_size": 8},
    "squeeze": {"arch": "convnet-tiny", "epochs": 3, "batch_size": 64},
    "distill": {"ipc": 2, "iterations": 10},
    "evaluate": {"epochs": 5, "seeds": 2, "batch_size": 20},
    "methods": ["wmdd", "random"],
    "device": "cpu",
}


@pytest.fixture
def tiny_cfg(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


def test_run_writes_metrics_report_grid_and_resolved_config(tmp_path, tiny_cfg):
    out = tmp_path / "run"
    assert main(["run", str(tiny_cfg), "--out", str(out), "--evaluate.seeds", "1", "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "digits" and m["num_classes"] == 10 and m["ipc"] == 2
    assert m["teacher"]["arch"] == "convnet-tiny" and 0 <= m["teacher"]["top1"] <= 1
    for name in ("wmdd", "random"):
        e = m["methods"][name]
        assert 0 <= e["top1"] <= 1 and e["seeds"] == 1 and e["seconds"] > 0 and "top1_std" in e
    assert (out / "report.md").read_text().startswith("# geodistill report")
    assert (out / "grid_wmdd.png").stat().st_size > 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["evaluate"]["seeds"] == 1  # the flag overrode the file
    assert len(list((out / "wmdd" / "images").rglob("*.png"))) == 20

    # an existing run is never overwritten silently
    assert main(["run", str(tiny_cfg), "--out", str(out), "--quiet"]) == 2
    # --resume reuses the finished teacher and distilled sets
    before = (out / "wmdd" / "distilled.safetensors").stat().st_mtime_ns
    assert (
        main(["run", str(tiny_cfg), "--out", str(out), "--evaluate.seeds", "1", "--resume", "--quiet"]) == 0
    )
    assert (out / "wmdd" / "distilled.safetensors").stat().st_mtime_ns == before


def test_stage_by_stage(tmp_path, capsys):
    t = tmp_path / "teacher.safetensors"
    common = ["--data", "digits", "--image-size", "8", "--device", "cpu", "--quiet"]
    assert main(["squeeze", *common, "--arch", "convnet-tiny", "--epochs", "2", "--out", str(t)]) == 0
    assert (
        main(
            [
                "distill",
                *common,
                "--teacher",
                str(t),
                "--method",
                "wmdd",
                "--ipc",
                "2",
                "--iterations",
                "5",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                *common,
                "--teacher",
                str(t),
                "--distilled",
                f"mine={tmp_path / 'd'}",
                "--epochs",
                "2",
                "--seeds",
                "1",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert list(m["methods"]) == ["mine"]
    # a teacher for different data is refused before any work
    assert (
        main(
            [
                "distill",
                "--data",
                "digits",
                "--image-size",
                "16",
                "--device",
                "cpu",
                "--quiet",
                "--teacher",
                str(t),
                "--out",
                str(tmp_path / "d2"),
            ]
        )
        == 2
    )
    assert "expects 1x8px" in capsys.readouterr().err


def test_bad_flags_are_clear(tmp_path, tiny_cfg, capsys):
    assert main(["run", str(tiny_cfg), "--out", str(tmp_path / "x"), "--distill.ipc", "many"]) == 2
    assert "cannot read 'many' as int" in capsys.readouterr().err
    assert main(["run", str(tiny_cfg), "--out", str(tmp_path / "y"), "--distill.ipc", "999"]) == 2
    assert "larger than class" in capsys.readouterr().err
    assert main(["run", str(tiny_cfg), "--out", str(tmp_path / "z"), "--methods", "wmdd,magic"]) == 2
