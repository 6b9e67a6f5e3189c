"""Squeeze cost and teacher robustness of each regularizer on the embedded digits data.

    python benchmarks/regularizer_cost.py     # writes benchmarks/results/regularizer_cost.{json,md}

Same teacher recipe as the demo (ConvNet width 32, 16x16 digits, 15 epochs); for each
regularizer: seconds per epoch, clean test accuracy and PGD-100 accuracy at eps = 8/255 on
the full test split (360 images).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from geodistill.config import resolve
from geodistill.evaluate import robust_accuracy
from geodistill.pipeline import load_data
from geodistill.runtime import machine, make_runtime, versions
from geodistill.teacher import REGULARIZERS, train_teacher

cfg = resolve("demo", {})
rt = make_runtime("cpu")
data = load_data(cfg.data)
rows = {}
for reg in REGULARIZERS:
    res = train_teacher(data, replace(cfg.squeeze, regularizer=reg, reg_eps=8 / 255), rt)
    rob = robust_accuracy(
        res.model,
        data.float(data.x_test),
        data.y_test,
        ["pgd100"],
        [8 / 255],
        rt,
        num_classes=data.num_classes,
    )
    rows[reg] = {"seconds_per_epoch": res.seconds_per_epoch, "top1": res.top1, **rob, "h": res.h}
    print(reg, rows[reg], flush=True)
out = {
    "command": "python " + " ".join(sys.argv),
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "machine": machine(),
    "threads": torch.get_num_threads(),
    "versions": versions(),
    "rows": rows,
}
Path("benchmarks/results/regularizer_cost.json").write_text(json.dumps(out, indent=2))
base = rows["none"]["seconds_per_epoch"]
lines = [
    "# Squeeze cost and teacher robustness per regularizer (digits, 16 px, ConvNet-32)",
    "",
    f"Command: `{out['command']}`  ",
    f"Machine: {out['machine']}, torch threads {out['threads']}  ",
    f"Date: {out['date']}",
    "",
    "Adversarial training (fgsm, pgd, trades) uses eps = 8/255; curvature terms use lambda = 4 and "
    f"h = {rows['curvature']['h']:.4f} px (default_h).",
    "",
    "| regularizer | s/epoch | x plain | clean top-1 % | PGD-100 @ 8/255 % |",
    "|---|---|---|---|---|",
]
lines += [
    f"| {k} | {v['seconds_per_epoch']:.2f} | {v['seconds_per_epoch'] / base:.1f} | {100 * v['top1']:.2f} | "
    f"{100 * v['pgd100@8/255']:.2f} |"
    for k, v in rows.items()
]
Path("benchmarks/results/regularizer_cost.md").write_text("\n".join(lines) + "\n")
