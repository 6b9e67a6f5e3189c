"""Does bfloat16 autocast (``--amp``) change the squeeze objective's gradient? For each
input-gradient regularizer, on real CIFAR-10 validation batches, compare the parameter gradient
of one squeeze step computed in float32 with the same step under CPU bfloat16 autocast:
relative change of the regularizer's value, cosine and relative norm of the difference of the
two gradients. For scale, the same relative norm between the float32 gradients of two
disjoint batches (the minibatch noise SGD already lives with).

Two models: the committed plain teacher (where a GUARD fine-tune starts) and a fresh ConvNet-3
(where training from scratch starts). Takes about a minute on one thread.

    python benchmarks/bf16_regularizer_check.py [--batches 4] [--batch-size 128]

Writes ``benchmarks/results/bf16_regularizer_check.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from geodistill.config import DataConfig
from geodistill.models import create_model, load_checkpoint
from geodistill.pipeline import load_data
from geodistill.runtime import machine, make_runtime, versions
from geodistill.teacher.regularizers import DEFAULT_LAMBDA, objective

REGS = ("none", "curvature", "curvature-simple", "gradnorm")


def step_grad(model: torch.nn.Module, x, y, reg: str, bf16: bool) -> tuple[torch.Tensor, float]:
    """Flattened parameter gradient of one squeeze objective and the regularizer's value. The
    model's BatchNorm running statistics are restored afterwards: the train-mode forward updates
    them and the regularizer reads them, so every call must start from the same ones."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.zero_grad(set_to_none=True)
    model.train()
    with make_runtime("cpu", amp=bf16).autocast():
        loss, _, parts = objective(model, x, y, reg, lam=DEFAULT_LAMBDA.get(reg, 0.0), h=3.0)
    loss.backward()
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return grad, parts.get("reg", float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="folder:../shared/datasets/cifar10")
    ap.add_argument("--teacher", default="benchmarks/cache/cifar10-convnet3-plain.safetensors")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = load_data(DataConfig(source=args.data, val_fraction=0.1, val_seed=0))
    xv, yv = data.split("val")
    teacher, _ = load_checkpoint(args.teacher, class_names=data.class_names)
    torch.manual_seed(0)
    fresh = create_model(
        "convnet3",
        num_classes=10,
        in_chans=3,
        image_size=32,
        mean=teacher.mean.flatten().tolist(),
        std=teacher.std.flatten().tolist(),
    )
    bs = args.batch_size
    batches = [
        (data.float(xv[i * bs : (i + 1) * bs]), yv[i * bs : (i + 1) * bs]) for i in range(args.batches + 1)
    ]
    rows = []
    for mname, model in (("plain teacher", teacher), ("fresh init", fresh)):
        for reg in REGS:
            rel_reg, cos, rel, noise = [], [], [], []
            for b in range(args.batches):
                g32, r32 = step_grad(model, *batches[b], reg, False)
                g16, r16 = step_grad(model, *batches[b], reg, True)
                other, _ = step_grad(model, *batches[b + 1], reg, False)
                if reg != "none":
                    rel_reg.append((r16 - r32) / abs(r32))
                cos.append(float(F.cosine_similarity(g32, g16, dim=0)))
                rel.append(float((g16 - g32).norm() / g32.norm()))
                noise.append(float((other - g32).norm() / g32.norm()))
            rows.append(
                {
                    "model": mname,
                    "regularizer": reg,
                    "reg_rel_change": statistics.mean(rel_reg) if rel_reg else None,
                    "grad_cosine": statistics.mean(cos),
                    "grad_rel_diff": statistics.mean(rel),
                    "batch_to_batch_rel_diff": statistics.mean(noise),
                }
            )
            print(rows[-1], flush=True)
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cmd = "python benchmarks/bf16_regularizer_check.py " + shlex.join(sys.argv[1:])
    meta = {
        "command": cmd,
        "machine": machine(),
        "versions": versions(),
        "started": start,
        "finished": finished,
    }
    res = Path("benchmarks/results")
    (res / "bf16_regularizer_check.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [
        "# bfloat16 autocast and the squeeze objective's gradient\n",
        f"CIFAR-10 validation images, {args.batches} batches of {bs}; regularizer weights are the "
        "authors' (curvature λ 100, curvature-simple β 1e-4, gradnorm 1), h 3 (normalized units). "
        "Each cell is the mean over the batches.\n",
        "| model | regularizer | regularizer value, bf16 vs fp32 | gradient cosine "
        "| ‖g_bf16 − g_fp32‖ / ‖g_fp32‖ | for scale: ‖g(next batch) − g‖ / ‖g‖ (fp32) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rr = "—" if r["reg_rel_change"] is None else f"{100 * r['reg_rel_change']:+.1f} %"
        lines.append(
            f"| {r['model']} | {r['regularizer']} | {rr} | {r['grad_cosine']:.4f} "
            f"| {r['grad_rel_diff']:.3f} | {r['batch_to_batch_rel_diff']:.3f} |"
        )
    lines += [
        "",
        f"Command: `{cmd}`  \nMachine: {meta['machine']}; torch {meta['versions'].get('torch', '?')}  \n"
        f"Started {start}, finished {finished} (UTC).",
    ]
    (res / "bf16_regularizer_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
