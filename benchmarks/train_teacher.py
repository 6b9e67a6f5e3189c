"""Train and cache the CIFAR-10 ConvNet-3 teacher used by the benchmarks.

python benchmarks/train_teacher.py --data ../shared/datasets/cifar10 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from geodistill.config import SqueezeConfig
from geodistill.data.sources import load_folder
from geodistill.models import save_checkpoint
from geodistill.runtime import device_name, make_runtime, versions
from geodistill.teacher import train_teacher

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="../shared/datasets/cifar10")
ap.add_argument("--epochs", type=int, default=20)
ap.add_argument("--regularizer", default="none")
ap.add_argument("--reg-lambda", type=float, default=0.0)
ap.add_argument("--out", default="benchmarks/cache/cifar10-convnet3-teacher.safetensors")
args = ap.parse_args()

rt = make_runtime("auto")
data = load_folder(args.data, cache_dir="benchmarks/cache")
cfg = SqueezeConfig(
    arch="convnet3",
    epochs=args.epochs,
    batch_size=128,
    lr=0.05,
    regularizer=args.regularizer,
    reg_lambda=args.reg_lambda,
)
t = time.time()
res = train_teacher(data, cfg, rt, log=lambda s: print(s, flush=True))
meta = {
    "class_names": data.class_names,
    "top1": res.top1,
    "top5": res.top5,
    "args": vars(args),
    "squeeze": cfg.__dict__,
    "history": res.history,
    "h": res.h,
    "dataset": data.name,
}
save_checkpoint(args.out, res.model, meta)
info = {
    "top1": res.top1,
    "top5": res.top5,
    "seconds": time.time() - t,
    "seconds_per_epoch": res.seconds_per_epoch,
    "device": device_name(rt.device),
    "threads": torch.get_num_threads(),
    "versions": versions(),
    "date": time.strftime("%Y-%m-%d"),
}
Path(args.out).with_suffix(".json").write_text(json.dumps(info, indent=2))
print(json.dumps(info, indent=2))
