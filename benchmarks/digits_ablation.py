"""Ablations on the embedded digits data, scored on the VALIDATION split (10 % of train, never
seen by teachers or methods): the demo's defaults are chosen here, the test split is left for
the demo's final numbers. ~10 min on 2 CPU cores.

- every method and the main WMDD switches at IPC 10 (3 student seeds each);
- GUARD's step h for 1x16x16 images: teacher clean and PGD-100 accuracy per h (lambda 100).

    python benchmarks/digits_ablation.py     # writes benchmarks/results/digits_ablation.{json,md}
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from geodistill.config import resolve
from geodistill.evaluate import evaluate_distilled, robust_accuracy
from geodistill.pipeline import load_data, parse_method
from geodistill.runtime import machine, make_runtime, versions
from geodistill.stats import compute_class_stats
from geodistill.synth import distill
from geodistill.teacher import train_teacher

METHODS = [
    "wmdd",
    "wmdd[r_feat=0]",
    "wmdd[r_feat=0.3]",
    "wmdd[r_feat=3]",
    "wmdd[feat_loss=paper]",
    "wmdd[init=noise]",
    "wmdd[first_bn_multiplier=10]",
    "wmdd[r_bn=0]",
    "wmdd[barycenter=fast]",
    "wmdd[barycenter=sliced]",
    "wmdd[weighted=true]",
    "wmdd[pairing=ot]",
    "sre2l",
    "sre2l[init=real]",
    "rded",
    "kmeans",
    "herding",
    "kcenter",
    "random",
]
H = [3.0, 1.0, 0.3]


def main() -> None:
    cfg = resolve("demo", {})
    rt = make_runtime("cpu")
    data = load_data(cfg.data)
    ecfg = replace(cfg.evaluate, attacks=[], split="val")
    teacher = train_teacher(data, cfg.squeeze, rt)
    stats = compute_class_stats(teacher.model, data, rt)
    rows = {}
    for name in METHODS:
        dcfg, _ = parse_method(name, cfg.distill)
        t0 = time.perf_counter()
        ds = distill(teacher.model, data, stats, dcfg, rt)
        t1 = time.perf_counter() - t0
        score = evaluate_distilled(ds, teacher.model, data, ecfg, rt)
        rows[name] = {
            "top1": score.top1,
            "top1_std": score.top1_std,
            "seeds": score.seeds,
            "distill_seconds": t1,
        }
        print(f"{name:32s} {100 * score.top1:6.2f} ± {100 * score.top1_std:4.2f}  ({t1:.1f}s)", flush=True)
    xv, yv = data.split("val")
    guard = {}
    for h in H:
        scfg = replace(cfg.squeeze, regularizer="curvature", reg_h=h)
        res = train_teacher(data, scfg, rt)
        rob = robust_accuracy(res.model, data.float(xv), yv, ["pgd100"], [8 / 255], rt, num_classes=10)
        guard[str(h)] = {**rob, "seconds_per_epoch": res.seconds_per_epoch}
        print(f"GUARD h={h}: {rob}", flush=True)
    plain = robust_accuracy(teacher.model, data.float(xv), yv, ["pgd100"], [8 / 255], rt, num_classes=10)
    out = {
        "command": "python " + shlex.join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "versions": versions(),
        "split": "val",
        "teacher": {"top1_test": teacher.top1, **plain},
        "ipc": cfg.distill.ipc,
        "methods": rows,
        "guard_h": guard,
    }
    res = Path("benchmarks/results")
    res.mkdir(parents=True, exist_ok=True)
    (res / "digits_ablation.json").write_text(json.dumps(out, indent=2))
    lines = [
        "# Ablations on digits, scored on the validation split (IPC 10, demo settings)",
        "",
        f"Command: `{out['command']}`  ",
        f"Machine: {out['machine']}  ",
        f"Date: {out['date']}  ",
        f"Validation split: {len(yv)} images (10 % of train, unseen by the teacher and every method); "
        f"students: {ecfg.seeds} seeds each, {ecfg.epochs} epochs of KD. Teacher: "
        f"{100 * plain['clean']:.2f} % on val, PGD-100 @ 8/255 {100 * plain['pgd100@8/255']:.2f} %.",
        "",
        "| method | val top-1 % | ± std | distill s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {100 * v['top1']:.2f} | {100 * v['top1_std']:.2f} | {v['distill_seconds']:.1f} |"
        for k, v in rows.items()
    ]
    lines += [
        "",
        "GUARD teacher (curvature, λ = 100 on the batch-mean loss, from scratch, demo recipe) per step h "
        "(normalized units), on the validation split:",
        "",
        "| h | clean % | PGD-100 @ 8/255 % | s/epoch |",
        "|---|---|---|---|",
        f"| (plain) | {100 * plain['clean']:.2f} | {100 * plain['pgd100@8/255']:.2f} | — |",
    ]
    lines += [
        f"| {h} | {100 * v['clean']:.2f} | {100 * v['pgd100@8/255']:.2f} | {v['seconds_per_epoch']:.2f} |"
        for h, v in guard.items()
    ]
    (res / "digits_ablation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
