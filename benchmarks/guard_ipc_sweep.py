"""GUARD's strength as a function of IPC, chosen on the validation split (embedded digits).

For every curvature setting (λ, h) one teacher is trained with the demo's squeeze recipe, then
WMDD distils it at each IPC and students are scored on the validation split, clean and under
PGD-100; the plain teacher is the λ = 0 row. Per IPC the chosen setting is the one with the
highest robust accuracy whose clean accuracy is at most ``--clean-drop`` points below the plain
teacher's students (the issue's goal: robustness without giving up clean accuracy).
Resumable: teachers, sets and students are kept under ``runs/guard_ipc_sweep``.

    python benchmarks/guard_ipc_sweep.py     # 48 min at one thread on a shared 2-core CPU
writes benchmarks/results/guard_ipc_sweep.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from geodistill.config import resolve
from geodistill.pipeline import load_data, run_pipeline, squeeze_stage
from geodistill.runtime import machine, make_runtime, versions

ap = argparse.ArgumentParser()
ap.add_argument("--lambdas", type=float, nargs="+", default=[10.0, 100.0, 1000.0])
ap.add_argument("--hs", type=float, nargs="+", default=[0.5, 1.0, 2.0])
ap.add_argument("--ipcs", type=int, nargs="+", default=[1, 10, 50])
ap.add_argument("--eps", default="8/255", help="PGD-100 radius the choice is made at")
ap.add_argument("--clean-drop", type=float, default=1.0, help="allowed clean loss, points")
ap.add_argument("--work", default="runs/guard_ipc_sweep")
ap.add_argument("--out", default="guard_ipc_sweep")
args = ap.parse_args()

base = resolve("demo", {})
rt = make_runtime("cpu")
data = load_data(base.data)
work = Path(args.work)
(work / "teachers").mkdir(parents=True, exist_ok=True)
quiet = lambda s: None

settings: dict[str, tuple[float, float]] = {"plain": (0.0, 0.0)}
settings |= {f"λ {lam:g}, h {h:g}": (lam, h) for lam in args.lambdas for h in args.hs}
teachers: dict[str, dict] = {}
for name, (lam, h) in settings.items():
    path = work / "teachers" / ("plain.safetensors" if lam == 0 else f"curv_l{lam:g}_h{h:g}.safetensors")
    scfg = base.squeeze
    if lam:
        scfg = replace(scfg, regularizer="curvature", reg_lambda=lam, reg_h=h)
    _, meta = squeeze_stage(data, scfg, rt, path, resume=True, log=quiet)
    teachers[name] = {"path": str(path), "test_top1": meta["top1"], "s_per_epoch": meta["seconds_per_epoch"]}
    print(name, teachers[name], flush=True)

key = f"pgd100@{args.eps}"
rows: dict[int, dict[str, dict]] = {}
for ipc in args.ipcs:
    rows[ipc] = {}
    for name, t in teachers.items():
        out = work / f"ipc{ipc}" / Path(t["path"]).stem
        out.mkdir(parents=True, exist_ok=True)
        cfg = resolve(
            "demo",
            {
                "distill.ipc": ipc,
                "squeeze.checkpoint": t["path"],
                "methods": ["wmdd"],
                "evaluate.split": "val",
                "evaluate.eps": [args.eps],
                "evaluate.attack_samples": 0,
            },
        )
        m = run_pipeline(cfg, out, rt, resume=True, log=quiet, data=data)["methods"]["wmdd"]
        runs = m["runs"]
        clean = [100 * r["top1"] for r in runs]
        rob = [100 * r["robust"][key] for r in runs]
        rows[ipc][name] = {
            "clean": (statistics.mean(clean), statistics.stdev(clean)),
            "robust": (statistics.mean(rob), statistics.stdev(rob)),
        }
        print(ipc, name, rows[ipc][name], flush=True)

chosen = {}
for ipc, r in rows.items():
    floor = r["plain"]["clean"][0] - args.clean_drop
    ok = {n: v for n, v in r.items() if v["clean"][0] >= floor} or r
    chosen[ipc] = max(ok, key=lambda n: ok[n]["robust"][0])

res = Path("benchmarks/results")
out = {
    "command": "python " + shlex.join(sys.argv),
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "machine": machine(),
    "versions": versions(),
    "protocol": "demo preset (digits 16 px, ConvNet width 32, 15 teacher epochs, WMDD 300 iterations, "
    "students 200 epochs, 3 seeds); scored on the validation split, PGD-100 on all of it",
    "teachers": teachers,
    "rows": {str(k): v for k, v in rows.items()},
    "chosen": chosen,
}
(res / f"{args.out}.json").write_text(json.dumps(out, indent=2) + "\n")
names = list(settings)
lines = [
    "# GUARD strength per IPC (digits, validation split)",
    "",
    f"Command: `{out['command']}`  ",
    f"Machine: {out['machine']}; {out['date']}  ",
    f"Protocol: {out['protocol']}. Cells: student clean / {key} accuracy, mean ± std (%). Chosen per "
    f"IPC (**bold**): the highest {key} with clean at most {args.clean_drop:g} points below plain.",
    "",
    "| teacher | teacher test top-1 | s/epoch | " + " | ".join(f"IPC {i}" for i in rows) + " |",
    "|---|---|---|" + "---|" * len(rows),
]
for n in names:
    cells = []
    for ipc in rows:
        v = rows[ipc][n]
        c = f"{v['clean'][0]:.1f} ± {v['clean'][1]:.1f} / {v['robust'][0]:.1f} ± {v['robust'][1]:.1f}"
        cells.append(f"**{c}**" if chosen[ipc] == n else c)
    t = teachers[n]
    head = f"| {n} | {100 * t['test_top1']:.1f} | {t['s_per_epoch']:.2f} | "
    lines.append(head + " | ".join(cells) + " |")
(res / f"{args.out}.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
