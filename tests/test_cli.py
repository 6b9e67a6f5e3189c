"""End-to-end through the command line on 8x8 digits with a tiny model."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import CLI_COMMON

from geodistill.cli import main
from geodistill.data import load_dataset

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


def test_stage_by_stage(tmp_path, capsys, monkeypatch):
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
    # evaluate --resume retrains no finished student and does not score the teacher again
    import geodistill.evaluate.student as st
    import geodistill.pipeline as pl

    monkeypatch.setattr(st, "train_student", lambda *a, **k: pytest.fail("a finished student was retrained"))
    monkeypatch.setattr(pl, "accuracy", lambda *a, **k: pytest.fail("the teacher was scored again"))
    ev = ["evaluate", *common, "--teacher", str(t), "--distilled", f"mine={tmp_path / 'd'}", "--epochs", "2"]
    assert main([*ev, "--seeds", "1", "--out", str(tmp_path / "e"), "--resume"]) == 0
    m2 = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m2["methods"]["mine"]["runs"] == m["methods"]["mine"]["runs"] and m2["teacher"] == m["teacher"]
    monkeypatch.undo()
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
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert main(["run", str(tiny_cfg), "--out", str(tmp_path / "w"), "--methods", "wmdd[r_feet=1]"]) == 2
    assert "unknown key(s) ['r_feet']" in capsys.readouterr().err
    assert main(["run", str(tiny_cfg), "--out", str(tmp_path / "v"), "--evaluate.eps", "8"]) == 2
    assert "write 8/255" in capsys.readouterr().err
    assert main(["run", str(tiny_cfg), "--out", str(tmp_path / "u"), "--distill.method", "magic"]) == 2
    assert "is not one of wmdd" in capsys.readouterr().err
    for d in "xyzwvu":
        assert not (tmp_path / d).exists()  # a refused run writes nothing


def test_valid_method_list_flag_runs(tmp_path, tiny_cfg):
    out = tmp_path / "ok"
    args = ["run", str(tiny_cfg), "--out", str(out), "--methods", "random,kmeans[weighted=true]", "--quiet"]
    assert main([*args, "--evaluate.seeds", "1", "--evaluate.epochs", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["methods"]) == ["random", "kmeans[weighted=true]"]
    assert m["methods"]["kmeans[weighted=true]"]["distill"]["config"]["weighted"] is True


@pytest.mark.parametrize(
    "argv,message",
    [
        (["squeeze", "--data", "digits", "--epochs", "0", "--out", "T"], "below the minimum 1"),
        (["squeeze", "--data", "digits", "--regularizer", "cure", "--out", "T"], "is not one of none"),
        (["squeeze", "--data", "digits", "--val-fraction", "0.9", "--out", "T"], "above the maximum 0.5"),
        (["evaluate", "--teacher", "T", "--distilled", "D", "--eps", "8", "--out", "E"], "write 8/255"),
        (
            ["evaluate", "--teacher", "T", "--distilled", "D", "--attacks", "fgsm", "--out", "E"],
            "is not one of",
        ),
        (["distill", "--teacher", "T", "--method", "dm", "--out", "D"], "is not one of"),
        (["distill", "--teacher", "T", "--ipc", "-1", "--out", "D"], "below the minimum 1"),
    ],
)
def test_bad_values_exit_2_before_any_work(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_argparse_errors_return_2_without_systemexit(capsys):
    argv = ["distill", "--teacher", "t", "--out", "o", "--no-such-flag"]
    assert main(argv) == 2  # argparse raises SystemExit(2) inside
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    assert main(["distill"]) == 2
    assert "required: --teacher, --out" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main(["squeeze", "-h"]) == 0


def test_every_flag_has_help_with_choices(capsys):
    for cmd in ("squeeze", "distill", "evaluate"):
        assert main([cmd, "-h"]) == 0
        text = capsys.readouterr().out
        flags = [line.split()[0] for line in text.splitlines() if line.strip().startswith("--")]
        assert len(flags) > 8
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("--") and stripped.split()[0] not in ("--help",):
                assert len(stripped.split(maxsplit=2)) >= 2, f"{cmd}: flag without help: {line}"
    assert main(["distill", "-h"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "distillation or selection method; one of: wmdd, sre2l, rded, random, herding, kcenter, kmeans"
        in text
    )
    assert "images per class" in text


def test_guard_weighted_solvers_and_attacks_end_to_end(tmp_path, tiny_cfg):
    out = tmp_path / "run"
    methods = "wmdd[weighted=true,barycenter=fast],wmdd[barycenter=sliced]+guard,random+guard"
    args = ["run", str(tiny_cfg), "--out", str(out), "--quiet", "--methods", methods]
    args += ["--evaluate.seeds", "1", "--evaluate.epochs", "2", "--evaluate.attacks", "pgd100"]
    args += ["--evaluate.eps", "8/255", "--evaluate.attack_samples", "40", "--set", "guard={epochs: 1}"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["teacher"]["regularizer"] == "none" and m["teacher_guard"]["regularizer"] == "curvature"
    assert m["teacher_guard"]["sha256"] != m["teacher"]["sha256"]
    w = m["methods"]["wmdd[weighted=true,barycenter=fast]"]
    assert w["teacher"] == "teacher" and m["methods"]["random+guard"]["teacher"] == "teacher_guard"
    assert w["distill"]["config"]["weighted"] is True and w["distill"]["config"]["barycenter"] == "fast"
    weights = json.loads((out / "wmdd_weighted-true_barycenter-fast" / "manifest.json").read_text())[
        "weights"
    ]
    assert len(set(round(x, 6) for x in weights)) > 1  # learned, non-uniform masses
    assert m["methods"]["wmdd[barycenter=sliced]+guard"]["distill"]["config"]["barycenter"] == "sliced"
    for entry in m["methods"].values():
        assert set(entry["robust"]) == {"clean", "pgd100@8/255"}
    assert "pgd100@8/255 %" in (out / "report.md").read_text()
    assert "pgd100" in m["protocol"]["attack_config"]


def test_distilled_set_names_may_hold_brackets():
    from geodistill.cli import _top_level_eq

    item = "wmdd[r_feat=1]=runs/x/wmdd_r_feat-1"
    assert item[: _top_level_eq(item)] == "wmdd[r_feat=1]"
    assert _top_level_eq("folder:a/b") == -1 and _top_level_eq("a=b") == 1


def test_evaluate_resume_attacks_a_teacher_once_across_output_folders(tmp_path, cli_teacher, monkeypatch):
    import os

    import geodistill.evaluate.robust as rob
    from geodistill.synth import select_random

    select_random(load_dataset("digits", image_size=8), 2, seed=0).save(tmp_path / "d", png=False)
    calls: list[str] = []
    real_build = rob.build_attack
    monkeypatch.setattr(rob, "build_attack", lambda name, *a: calls.append(name) or real_build(name, *a))
    ev = ["evaluate", *CLI_COMMON, "--teacher", str(cli_teacher), "--distilled", f"r={tmp_path / 'd'}"]
    ev += ["--epochs", "1", "--seeds", "1", "--attacks", "mim", "--attack-samples", "20", "--resume"]
    runs = {}
    for out, extra, n in [("e1", [], 2), ("e2", [], 1), ("e3", ["--no-cache"], 2)]:
        calls.clear()
        assert main([*ev, *extra, "--out", str(tmp_path / out)]) == 0
        assert calls == ["mim"] * n, (out, calls)  # the student's attack, and the teacher's unless shared
        runs[out] = json.loads((tmp_path / out / "metrics.json").read_text())["teacher"]
    assert runs["e1"] == runs["e2"] == runs["e3"]
    shared = Path(os.environ["GEODISTILL_CACHE"]) / "teacher-scores"
    assert len(list(shared.glob("*.json"))) == 1
