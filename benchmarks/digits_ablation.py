"""Ablations on the embedded digits data (runs anywhere, ~2-5 min on 2 CPU cores):
WMDD's image initialization (real vs noise), barycenter solver (exact / fast / sliced) and
learned weights, against SRe2L and random, all on one teacher with the demo's settings.

    python benchmarks/digits_ablation.py            # writes benchmarks/results/digits_ablation.{json,md}
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from geodistill.config import resolve
from geodistill.evaluate import evaluate_distilled
from geodistill.pipeline import load_data
from geodistill.runtime import device_name, machine, make_runtime, versions
from geodistill.stats import compute_class_stats
from geodistill.synth import distill
from geodistill.teacher import train_teacher

VARIANTS = {
    "wmdd (real init, exact barycenter)": dict(method="wmdd", barycenter="exact"),
    "wmdd, noise init": dict(method="wmdd", barycenter="exact", init="noise"),
    "wmdd, fast barycenter": dict(method="wmdd", barycenter="fast"),
    "wmdd, sliced barycenter": dict(method="wmdd", barycenter="sliced"),
    "wmdd, learned weights (exact)": dict(method="wmdd", barycenter="exact", weighted=True),
    "wmdd, no per-class BN (r_bn=0)": dict(method="wmdd", barycenter="exact", r_bn=0.0),
    "sre2l (noise init)": dict(method="sre2l", init="noise"),
    "sre2l, real init": dict(method="sre2l"),
    "random real subset": dict(method="random"),
}


def main() -> None:
    cfg = resolve("demo", {})
    rt = make_runtime("cpu")
    data = load_data(cfg.data)
    teacher = train_teacher(data, cfg.squeeze, rt)
    stats = compute_class_stats(teacher.model, data, rt)
    rows = {}
    for name, kw in VARIANTS.items():
        t0 = time.perf_counter()
        ds = distill(teacher.model, data, stats, replace(cfg.distill, **kw), rt)
        t1 = time.perf_counter() - t0
        score = evaluate_distilled(ds, teacher.model, data, replace(cfg.evaluate, attacks=[]), rt)
        rows[name] = {
            "top1": score.top1,
            "top1_std": score.top1_std,
            "seeds": score.seeds,
            "distill_seconds": t1,
            "config": kw,
        }
        print(f"{name:40s} {100 * score.top1:6.2f} ± {100 * score.top1_std:4.2f}  ({t1:.1f}s)", flush=True)
    out = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "device": device_name(rt.device),
        "versions": versions(),
        "teacher_top1": teacher.top1,
        "ipc": cfg.distill.ipc,
        "results": rows,
    }
    res = Path("benchmarks/results")
    res.mkdir(parents=True, exist_ok=True)
    (res / "digits_ablation.json").write_text(json.dumps(out, indent=2))
    lines = [
        "# Ablations on digits (IPC 10, demo settings)",
        "",
        f"Command: `{out['command']}`  ",
        f"Machine: {out['machine']}  ",
        f"Date: {out['date']}  ",
        f"Teacher top-1: {100 * teacher.top1:.2f} %; students: {cfg.evaluate.seeds} seeds each, "
        f"{cfg.evaluate.epochs} epochs of KD.",
        "",
        "| variant | top-1 % | ± std | distill s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {100 * v['top1']:.2f} | {100 * v['top1_std']:.2f} | {v['distill_seconds']:.1f} |"
        for k, v in rows.items()
    ]
    (res / "digits_ablation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
