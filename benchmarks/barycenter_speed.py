"""W2 cost and wall time of the barycenter solvers on real teacher features.

    python benchmarks/barycenter_speed.py runs/bench/cifar10_ipc10/stats.safetensors [N_CLASSES]

Uses the first N_CLASSES (default 3) classes of a saved ClassStats (CIFAR-10 ConvNet-3: 5,000 x 2,048 per
class); writes benchmarks/results/barycenter_speed.{json,md}.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import torch

from geodistill.barycenter import w2_cost, wasserstein_barycenter
from geodistill.runtime import machine
from geodistill.stats import ClassStats

stats = ClassStats.load(sys.argv[1])
n_classes = int(sys.argv[2]) if len(sys.argv) > 2 else 3
rows = []
for c in range(n_classes):
    feats = stats.class_features(c)
    for k in (10, 50):
        for method in ("exact", "fast", "sliced"):
            for weighted in (False, True):
                if method == "sliced" and weighted:
                    continue
                t0 = time.perf_counter()
                atoms, w = wasserstein_barycenter(feats, k, method=method, weighted=weighted, seed=0)
                secs = time.perf_counter() - t0
                rows.append(
                    {
                        "class": stats.class_names[c],
                        "n": len(feats),
                        "d": feats.shape[1],
                        "k": k,
                        "method": method,
                        "weighted": weighted,
                        "seconds": secs,
                        "w2": w2_cost(feats, atoms, w),
                    }
                )
                print(rows[-1], flush=True)
out = {
    "command": "python " + shlex.join(sys.argv),
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "machine": machine(),
    "threads": torch.get_num_threads(),
    "rows": rows,
}
Path("benchmarks/results/barycenter_speed.json").write_text(json.dumps(out, indent=2))
lines = [
    "# Barycenter solvers on CIFAR-10 ConvNet-3 features",
    "",
    f"Command: `{out['command']}`  ",
    f"Machine: {out['machine']}, torch threads {out['threads']}  ",
    f"Date: {out['date']}",
    "",
    "| class | n x d | k | method | weighted | seconds | W2² |",
    "|---|---|---|---|---|---|---|",
]
lines += [
    f"| {r['class']} | {r['n']}x{r['d']} | {r['k']} | {r['method']} | {r['weighted']} | {r['seconds']:.2f} | "
    f"{r['w2']:.3f} |"
    for r in rows
]
Path("benchmarks/results/barycenter_speed.md").write_text("\n".join(lines) + "\n")
