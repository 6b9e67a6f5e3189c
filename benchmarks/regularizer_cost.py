"""Squeeze cost of every regularizer on CIFAR-10-shaped batches (3x32x32, batch 128, 10 classes),
ConvNet-3 and ResNet-18 (CIFAR stem), on this machine's CPU.

Each (model, regularizer) runs in its own process, which reports its seconds per training step
and its peak resident memory; rounds are interleaved (every regularizer once, then again) so
that background load shifts all of them alike. Seconds per CIFAR-10 epoch = seconds per step x
352 (45,000 training images / 128). GPU figures: benchmarks/results/gpu_check.md.

    python benchmarks/regularizer_cost.py [--rounds 2] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

# "curvature@0.25": the term on a quarter of each batch (squeeze.reg_fraction 0.25)
REGS = (
    "none",
    "curvature",
    "curvature@0.5",
    "curvature@0.25",
    "curvature-simple",
    "gradnorm",
    "fgsm",
    "pgd",
    "trades",
)
ARCHS = ("convnet3", "resnet18")


def one(arch: str, reg: str, steps: int, precision: str = "fp32") -> None:
    import torch

    from geodistill.models import create_model
    from geodistill.runtime import make_runtime
    from geodistill.teacher.regularizers import objective

    rt = make_runtime("cpu", amp=precision == "bf16")

    torch.manual_seed(0)
    m = create_model(arch, num_classes=10, in_chans=3, image_size=32, mean=[0.49, 0.48, 0.45], std=[0.25] * 3)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    reg, _, frac = reg.partition("@")
    x, y = torch.rand(128, 3, 32, 32), torch.randint(0, 10, (128,))
    times = []
    for i in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(i)
        with rt.autocast():
            loss, _, _ = objective(m, x, y, reg, generator=g, fraction=float(frac or 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"seconds_per_step": statistics.median(times[1:]), "peak_rss_gib": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument(
        "--note", default="the machine was otherwise idle", help="load on the machine, for the report"
    )
    ap.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=("fp32", "bf16"),
        help="bf16: the step under CPU bfloat16 autocast (geodistill --amp)",
    )
    ap.add_argument("--name", default="regularizer_cost", help="results file stem under benchmarks/results")
    ap.add_argument("--one", nargs=3, metavar=("ARCH", "REG", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(*args.one[:2], args.steps, args.one[2])
    from geodistill.runtime import machine, versions

    raw: dict = {f"{a}/{r}/{p}": [] for a in args.archs for r in REGS for p in args.precision}
    for _ in range(args.rounds):
        for key in raw:
            a, r, prec = key.split("/")
            out = subprocess.run(
                [sys.executable, __file__, "--one", a, r, prec, "--steps", str(args.steps)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            raw[key].append(json.loads(out.strip().splitlines()[-1]))
            print(key, raw[key][-1], flush=True)
    rows = {}
    for key, rs in raw.items():
        rows[key] = {
            "seconds_per_step": statistics.median(r["seconds_per_step"] for r in rs),
            "peak_rss_gib": max(r["peak_rss_gib"] for r in rs),
        }
    result = {
        "command": "python " + shlex.join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "versions": versions(),
        "rows": rows,
    }
    res = Path("benchmarks/results")
    (res / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Squeeze cost per regularizer on the CPU (CIFAR-10 shapes: 3x32x32, batch 128)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Date: {result['date']}. Median of {args.rounds} interleaved rounds x {args.steps} steps "
        f"({args.note}).",
        "",
        "| model | precision | regularizer | s/step | s/epoch (352 steps) | x plain (same precision) "
        "| x plain fp32 | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in args.archs:
        for prec in args.precision:
            base = rows[f"{a}/none/{prec}"]["seconds_per_step"]
            fp32 = rows.get(f"{a}/none/fp32", {}).get("seconds_per_step")
            for r in REGS:
                v = rows[f"{a}/{r}/{prec}"]
                sec = v["seconds_per_step"]
                lines.append(
                    f"| {a} | {prec} | {r} | {sec:.2f} | {352 * sec:.0f} | {sec / base:.1f} | "
                    f"{f'{sec / fp32:.1f}' if fp32 else '—'} | {v['peak_rss_gib']:.2f} |"
                )
    (res / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
