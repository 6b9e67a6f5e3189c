"""The merged report: one table per dataset x IPC x split, protocols never merged silently,
plots and image grids embedded in a self-contained HTML page that a real browser renders."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest
import yaml

from geodistill.cli import main
from geodistill.report.merge import load_runs, rows_of

TINY = {
    "name": "tiny",
    "data": {"source": "digits", "image_size": 8},
    "squeeze": {"arch": "convnet-tiny", "epochs": 2, "batch_size": 64},
    "distill": {"ipc": 2, "iterations": 6},
    "evaluate": {
        "epochs": 2,
        "seeds": 2,
        "batch_size": 20,
        "attacks": ["pgd100"],
        "eps": ["2/255", "4/255"],
        "attack_samples": 30,
    },
    "methods": ["wmdd", "wmdd[iterations=12]", "kmeans", "random"],
    "device": "cpu",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(cfg), "--out", str(root / "a"), "--quiet"]) == 0
    assert (
        main(
            [
                "run",
                str(cfg),
                "--out",
                str(root / "b"),
                "--quiet",
                "--distill.ipc",
                "4",
                "--methods",
                "wmdd,random",
            ]
        )
        == 0
    )
    # a run with another student recipe: same dataset and IPC as "a"
    shutil.copytree(root / "a", root / "c")
    m = json.loads((root / "c" / "metrics.json").read_text())
    m["name"] = "c"
    m["protocol"]["epochs"] = 999
    (root / "c" / "metrics.json").write_text(json.dumps(m))
    return root


def test_rows_carry_mean_std_recovery_and_robust(runs):
    (a,) = load_runs([runs / "a"])
    rows = {r["method"]: r for r in rows_of(a)}
    assert set(rows) == {"wmdd", "wmdd[iterations=12]", "kmeans", "random"}
    r = rows["wmdd"]
    runs_ = a["methods"]["wmdd"]["runs"]
    assert r["top1"] == pytest.approx(sum(x["top1"] for x in runs_) / 2)
    assert r["recovery"] == pytest.approx(r["top1"] / a["teacher"]["top1"])
    vals = [x["robust"]["pgd100@2/255"] for x in runs_]
    assert r["robust"]["pgd100@2/255"][0] == pytest.approx(sum(vals) / 2)
    assert r["steps"] == runs_[0]["steps"] == 2  # 20 images, batch 20, 2 epochs
    # labels are relative to the defaults of the version that ran them: the resolved settings say
    assert rows["wmdd"]["settings"] == "real init, lr 0.01, CE 0.1, BN 0.01 (first x10), feat 0.0, 6 it"
    assert rows["wmdd[iterations=12]"]["settings"].endswith(", 12 it") and rows["kmeans"]["settings"] == ""


def test_report_merges_splits_differing_protocols_and_plots(runs, tmp_path):
    assert (
        main(["report", str(runs / "a"), str(runs / "b"), str(runs / "c"), "--out", str(tmp_path / "r")]) == 0
    )
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## digits, IPC 2, scored on test" in md and "## digits, IPC 4, scored on test" in md
    assert "differ in epochs" in md and "Table 2" in md  # run c is not merged into a's table
    assert "Protocol of `a`" in md and "KD temperature 20.0" in md and "pgd100" in md
    for plot in (
        "plot_ipc_digits_test.png",
        "plot_iterations_a.png",
        "plot_eps_pgd100_a.png",
        "plot_time.png",
    ):
        assert (tmp_path / "r" / plot).stat().st_size > 1000, plot
    html = (tmp_path / "r" / "report.html").read_text()
    assert not re.search(r'src="(?!data:)', html)  # self-contained: every image is embedded
    assert html.count("<table>") == md.count("| method | student |")
    assert html.count("<img ") >= 4 + 6  # plots + a grid per method


def test_report_refuses_a_directory_without_metrics(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def _cdp(proc, msg_id, method, params=None, session=None):
    msg = {"id": msg_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    proc.stdin.write(json.dumps(msg).encode() + b"\0")
    proc.stdin.flush()


def _read_until(proc, buf, want_id, events, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        while b"\0" in buf[0]:
            raw, buf[0] = buf[0].split(b"\0", 1)
            msg = json.loads(raw)
            if msg.get("id") == want_id:
                return msg
            events.append(msg)
        chunk = os.read(proc.stdout.fileno(), 1 << 16)
        if not chunk:
            break
        buf[0] += chunk
    raise AssertionError(f"no answer to CDP message {want_id}")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt install chromium)")
def test_html_report_renders_in_headless_chromium(runs, tmp_path):
    """Opt-in: a real browser loads the page with no console error and renders every table and image."""
    assert main(["report", str(runs / "a"), str(runs / "b"), "--out", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "report.html").resolve()
    r, w = os.pipe()  # Chromium reads DevTools commands on fd 3 and answers on fd 4
    r2, w2 = os.pipe()
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--remote-debugging-pipe",
        "about:blank",
    ]
    proc = subprocess.Popen(
        args,
        pass_fds=(3, 4),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: (os.dup2(r, 3), os.dup2(w2, 4)),
    )
    os.close(r)
    os.close(w2)
    proc.stdin, proc.stdout = os.fdopen(w, "wb"), os.fdopen(r2, "rb")
    buf, events = [b""], []
    try:
        _cdp(proc, 1, "Target.createTarget", {"url": "about:blank"})
        target = _read_until(proc, buf, 1, events)["result"]["targetId"]
        _cdp(proc, 2, "Target.attachToTarget", {"targetId": target, "flatten": True})
        session = _read_until(proc, buf, 2, events)["result"]["sessionId"]
        for i, m in enumerate(("Runtime.enable", "Log.enable", "Page.enable"), start=3):
            _cdp(proc, i, m, session=session)
            _read_until(proc, buf, i, events)
        _cdp(proc, 6, "Page.navigate", {"url": page.as_uri()}, session)
        _read_until(proc, buf, 6, events)
        deadline = time.time() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in events) and time.time() < deadline:
            _cdp(proc, 7, "Runtime.evaluate", {"expression": "1"}, session)
            _read_until(proc, buf, 7, events)
        js = (
            "JSON.stringify({tables: document.querySelectorAll('table').length,"
            " images: [...document.images].map(i => i.complete && i.naturalWidth > 0)})"
        )
        _cdp(proc, 8, "Runtime.evaluate", {"expression": js, "returnByValue": True}, session)
        state = json.loads(_read_until(proc, buf, 8, events)["result"]["result"]["value"])
    finally:
        proc.kill()
        proc.wait()
    errors = [
        e
        for e in events
        if e.get("method") in ("Runtime.exceptionThrown",)
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    assert errors == []
    md = (tmp_path / "r" / "report.md").read_text()
    assert state["tables"] == md.count("| method | student |") == 2
    assert len(state["images"]) >= 8 and all(state["images"])
