"""What computing GUARD's curvature term on part of each batch (``squeeze.reg_fraction``) costs
in robustness, on the embedded digits data and its validation split: curvature teachers
(λ 100, the demo's h) with the term on all, half or a quarter of each batch, 3 seeds each, plus
plain teachers; clean and PGD-100 accuracy at 4/255 and 8/255 on the validation split, and
seconds per epoch. ~10 min on 2 CPU cores.

    python benchmarks/guard_fraction.py   # writes benchmarks/results/guard_fraction.{json,md}
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from geodistill.config import resolve
from geodistill.evaluate import robust_accuracy
from geodistill.pipeline import load_data
from geodistill.runtime import machine, make_runtime, versions
from geodistill.teacher import train_teacher

FRACTIONS = [1.0, 0.5, 0.25]
SEEDS = 3
EPS = [4 / 255, 8 / 255]


def main() -> None:
    cfg = resolve("demo", {})
    rt = make_runtime("cpu")
    data = load_data(cfg.data)
    xv, yv = data.split("val")
    guard = {**{"regularizer": "curvature"}, **cfg.guard}
    settings = {"plain": replace(cfg.squeeze)}
    for f in FRACTIONS:
        settings[f"curvature, fraction {f:g}"] = replace(cfg.squeeze, **guard, reg_fraction=f)
    rows: dict = {}
    for name, scfg in settings.items():
        runs = []
        for seed in range(SEEDS):
            res = train_teacher(data, replace(scfg, seed=seed), rt)
            rob = robust_accuracy(
                res.model, data.float(xv), yv, ["pgd100"], EPS, rt, num_classes=data.num_classes
            )
            runs.append({**rob, "seconds_per_epoch": res.seconds_per_epoch})
            print(name, seed, runs[-1], flush=True)
        keys = runs[0].keys()
        rows[name] = {
            k: {"mean": statistics.mean(r[k] for r in runs), "std": statistics.stdev(r[k] for r in runs)}
            for k in keys
        }
    out = {
        "command": "python " + shlex.join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "versions": versions(),
        "split": "val",
        "squeeze": {k: getattr(cfg.squeeze, k) for k in ("arch", "epochs", "batch_size", "lr")},
        "guard": guard,
        "rows": rows,
    }
    res_dir = Path("benchmarks/results")
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "guard_fraction.json").write_text(json.dumps(out, indent=2))
    cols = ["clean", *[k for k in rows["plain"] if k.startswith("pgd")], "seconds_per_epoch"]
    fmt = lambda v, k: (
        f"{v['mean']:.2f} ± {v['std']:.2f}"
        if k == "seconds_per_epoch"
        else (f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}")
    )
    lines = [
        "# GUARD's curvature term on part of each batch (digits, validation split)",
        "",
        f"Command: `{out['command']}`  ",
        f"Machine: {out['machine']}  ",
        f"Date: {out['date']}  ",
        f"Teachers: the demo's squeeze recipe ({out['squeeze']}), GUARD settings {guard}; "
        f"{SEEDS} seeds each; "
        f"scored on the {len(yv)} validation images (PGD-100: 100 steps of ε/4, random start).",
        "",
        "| teacher | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    lines += [f"| {name} | " + " | ".join(fmt(r[k], k) for k in cols) + " |" for name, r in rows.items()]
    (res_dir / "guard_fraction.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
