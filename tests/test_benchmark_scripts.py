"""The benchmark table scripts merge committed numbers: a wrong merge would misreport results."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import guard_table  # noqa: E402

EVALUATE = {
    "split": "test",
    "attack_samples": 500,
    "epochs": 600,
    "batch_size": 50,
    "temperature": 20.0,
    "seed": 0,
}


def _piece(
    root: Path, name: str, label: str, teacher: str, top1: list[float], pgd: list[float], steps: int
) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    runs = [
        {"top1": t, "steps": steps, "robust": {"clean": 0.9, "pgd100@2/255": p}} for t, p in zip(top1, pgd)
    ]
    key = {"evaluate": EVALUATE, "teacher": teacher}
    (folder / f"{label}_students.json").write_text(json.dumps({"key": key, "runs": runs}))
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "cache").mkdir()
    return tmp_path


def test_guard_table_merges_pieces_with_their_sources(workdir):
    a = _piece(workdir, "plain", "wmdd", "a" * 64, [0.60, 0.62, 0.64], [0.20, 0.25, 0.30], 1200)
    b = _piece(workdir, "guard", "wmdd_guard", "b" * 64, [0.70, 0.70, 0.70], [0.40, 0.40, 0.40], 1200)
    note = "IPC 10; 'quoted' words, commas, `code`"
    assert guard_table.main(["t", str(a), str(b), "--note", note]) == 0
    md = (workdir / "benchmarks/results/t.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| wmdd")]
    assert rows[0].startswith("| wmdd | `aaaaaaaaaaaa` | 3 | 62.00 ± 2.00 [2] | 25.00 ± 5.00 [2] |")
    assert rows[1].startswith("| wmdd+guard | `bbbbbbbbbbbb` | 3 | 70.00 ± 0.00 [1] | 40.00 ± 0.00 [1] |")
    assert note in md
    cmd = next(line for line in md.splitlines() if line.startswith("Command: "))
    span = re.fullmatch(r"Command: (`+) (.*) \1  ", cmd)  # one code span, even around backticks
    assert span and "``" not in span[2] and shlex.split(span[2])[-2:] == ["--note", note]


def test_guard_table_refuses_pieces_of_different_set_sizes(workdir):
    ipc10 = _piece(workdir, "ipc10", "wmdd", "a" * 64, [0.6, 0.6], [0.2, 0.2], 1200)
    ipc50 = _piece(workdir, "ipc50", "wmdd_guard", "b" * 64, [0.7, 0.7], [0.4, 0.4], 6000)
    with pytest.raises(SystemExit, match="different protocols"):
        guard_table.main(["t", str(ipc10), str(ipc50)])


def test_students_table_reports_the_scores_the_run_asked_for(workdir):
    import students_table

    run = workdir / "runs" / "piece"
    (run / "wmdd").mkdir(parents=True)
    evaluate = {**EVALUATE, "attacks": ["pgd100"], "eps": [2 / 255], "temperature": 20.0}
    runs = [  # seed 0 keeps a score of an earlier config (resumed with other attacks): not a column
        {"seed": 1, "top1": 0.7, "steps": 9, "seconds": 3.0, "robust": {"clean": 0.8, "pgd100@2/255": 0.4}},
        {"seed": 0, "top1": 0.5, "steps": 9, "seconds": 1.0,
         "robust": {"clean": 0.6, "mim@1/255": 0.5, "pgd100@2/255": 0.2}},
    ]  # fmt: skip
    (run / "wmdd" / "students.json").write_text(json.dumps({"key": {"evaluate": evaluate}, "runs": runs}))
    assert students_table.main([str(run)]) == 0
    md = (workdir / "benchmarks/results/piece.md").read_text()
    assert "| method | seeds | steps | top-1 % (whole split) | clean % | pgd100@2/255 % | train s |" in md
    assert "| wmdd | 2 | 9 | 60.00 ± 14.14 | 70.00 ± 14.14 | 30.00 ± 14.14 | 2 |" in md
