"""Clean and robust accuracy of CIFAR-10 teachers on a seeded subset of the validation split.

A diagnostic before the GUARD distillation benchmark: a curvature-regularized teacher is worth
distilling from only if it is itself more robust than the plain one. The teachers never saw the
validation split (10 % of each class of train/, seed 0).

    python benchmarks/teacher_robustness.py benchmarks/cache/cifar10-convnet3-plain.safetensors \
        benchmarks/cache/cifar10-convnet3-curvature-frac0.25.safetensors --out NAME
writes benchmarks/results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from geodistill.config import DataConfig
from geodistill.evaluate import robust_accuracy
from geodistill.evaluate.robust import ATTACK_CONFIG, attack_versions, fixed_subset, parse_eps
from geodistill.models import load_checkpoint
from geodistill.pipeline import load_data
from geodistill.runtime import machine, make_runtime, versions

ap = argparse.ArgumentParser()
ap.add_argument("teachers", nargs="+")
ap.add_argument("--data", default="folder:../shared/datasets/cifar10")
ap.add_argument("--attacks", nargs="+", default=["pgd100"])
ap.add_argument("--eps", nargs="+", default=["1/255", "2/255", "4/255"])
ap.add_argument("--samples", type=int, default=1000)
ap.add_argument("--out", required=True, help="results name under benchmarks/results/")
args = ap.parse_args()

rt = make_runtime("auto")
data = load_data(DataConfig(source=args.data, val_fraction=0.1, val_seed=0))
xv, yv = data.split("val")
idx = fixed_subset(len(yv), args.samples, seed=0)
x, y = data.float(xv[idx]), yv[idx]
eps = [parse_eps(e) for e in args.eps]
rows = {}
for path in args.teachers:
    model, meta = load_checkpoint(path, class_names=data.class_names)
    model = rt.prepare(model)
    t0 = time.perf_counter()
    scores = robust_accuracy(model, x, y, args.attacks, eps, rt, num_classes=data.num_classes)
    rows[Path(path).name] = {**scores, "test_top1": meta.get("top1"), "seconds": time.perf_counter() - t0}
    print(Path(path).name, json.dumps(rows[Path(path).name]), flush=True)

out = {
    "command": "python " + shlex.join(sys.argv),
    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    "machine": machine(),
    "versions": {**versions(), **attack_versions()},
    "split": f"val, {len(y)} images (seeded subset, seed 0)",
    "attacks": {a.partition("@")[0]: ATTACK_CONFIG[a.partition("@")[0]] for a in args.attacks},
    "rows": rows,
}
res = Path("benchmarks/results")
(res / f"{args.out}.json").write_text(json.dumps(out, indent=2) + "\n")
keys = [k for k in next(iter(rows.values())) if k not in ("test_top1", "seconds")]
lines = [
    f"# Teacher robustness ({out['split']})",
    "",
    f"Command: `{out['command']}`  ",
    f"Machine: {out['machine']}; {out['date']}  ",
    "Attacks: " + "; ".join(f"{k}: {v}" for k, v in out["attacks"].items()),
    "",
    "| teacher | test top-1 | " + " | ".join(keys) + " | seconds |",
    "|---|---|" + "---|" * len(keys) + "---|",
]
for name, r in rows.items():
    top1 = f"{100 * r['test_top1']:.2f}" if r["test_top1"] is not None else "?"
    lines.append(
        f"| {name} | {top1} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + f" | {r['seconds']:.0f} |"
    )
(res / f"{args.out}.md").write_text("\n".join(lines) + "\n")
