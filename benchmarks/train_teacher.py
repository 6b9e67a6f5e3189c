"""Train the CIFAR-10 ConvNet-3 teachers used by the benchmarks (resumable, epoch by epoch).

The teacher never sees the validation split (10 % of every class of train/, seed 0), so
defaults chosen on that split are chosen on unseen images.

    python benchmarks/train_teacher.py                                   # plain teacher
    python benchmarks/train_teacher.py --regularizer curvature           # GUARD, from scratch
    python benchmarks/train_teacher.py --regularizer curvature --reg-fraction 0.25  # cheaper
    python benchmarks/train_teacher.py --regularizer curvature --epochs 3 --lr 0.01 \
        --init benchmarks/cache/cifar10-convnet3-plain.safetensors        # GUARD, fine-tuned

``--precision bf16`` trains under bfloat16 autocast (on a CPU with bf16 instructions a
quarter-batch curvature epoch takes ~165 s instead of ~296 s); the script prints the teacher's
validation top-1, the number to choose settings by, next to its test top-1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from geodistill.config import DataConfig, SqueezeConfig
from geodistill.evaluate.metrics import accuracy
from geodistill.pipeline import load_data, squeeze_stage
from geodistill.runtime import machine, make_runtime

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="folder:../shared/datasets/cifar10")
ap.add_argument("--epochs", type=int, default=20)
ap.add_argument("--regularizer", default="none")
ap.add_argument("--reg-lambda", type=float, default=0.0)
ap.add_argument("--reg-h", type=float, default=3.0)
ap.add_argument("--reg-fraction", type=float, default=1.0, help="share of each batch the regularizer sees")
ap.add_argument("--lr", type=float, default=0.05)
ap.add_argument("--init", default=None, help="fine-tune these weights instead of training from scratch")
ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast (--amp)")
ap.add_argument("--out", default=None)
args = ap.parse_args()

name = "plain" if args.regularizer == "none" else args.regularizer
if args.reg_fraction != 1.0:
    name += f"-frac{args.reg_fraction:g}"
if args.regularizer != "none" and args.reg_h != 3.0:  # the committed h 3 teacher keeps its name
    name += f"-h{args.reg_h:g}"
if args.init:
    name += f"-ft{args.epochs}"
out = Path(args.out or f"benchmarks/cache/cifar10-convnet3-{name}.safetensors")
rt = make_runtime("auto", amp=args.precision == "bf16")
data = load_data(DataConfig(source=args.data, val_fraction=0.1, val_seed=0))
cfg = SqueezeConfig(
    arch="convnet3",
    epochs=args.epochs,
    batch_size=128,
    lr=args.lr,
    init_checkpoint=args.init,
    regularizer=args.regularizer,
    reg_lambda=args.reg_lambda,
    reg_h=args.reg_h,
    reg_fraction=args.reg_fraction,
)
model, meta = squeeze_stage(data, cfg, rt, out, resume=True, log=lambda s: print(s, flush=True))
xv, yv = data.split("val")
info = {
    "top1_test": meta["top1"],
    "top1_val": accuracy(model, xv, yv, make_runtime(rt.device.type), to_float=data.float)[0],
    "precision": args.precision,
    "seconds_per_epoch": meta.get("seconds_per_epoch"),
    "threads": torch.get_num_threads(),
    "machine": machine(),
}
print(json.dumps(info, indent=2))
