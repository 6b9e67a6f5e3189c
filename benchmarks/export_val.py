"""Save a dataset's validation split (carved as in every benchmark: 10 % of train, seed 0) with
one training image per class (``ClassData`` needs every class in train) and no test split: what a
student scored on validation needs, small enough to travel to a GPU machine that cannot read
``../shared`` (15 MB for CIFAR-10). ``student_budget.py --data classdata:FILE`` reads it.

    python benchmarks/export_val.py runs/gpu/cifar10-val.safetensors [--data SPEC]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from student_budget import load_scored_data  # this folder is on sys.path when run as a script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", default="folder:../shared/datasets/cifar10")
    args = ap.parse_args()
    data = load_scored_data(args.data)
    first = torch.stack([data.class_indices(c)[0] for c in range(data.num_classes)])
    small = dataclasses.replace(
        data,
        x_train=data.x_train[first],
        y_train=data.y_train[first],
        x_test=data.x_test[:0],
        y_test=data.y_test[:0],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    small.save(args.out)
    print(f"{args.out}: {small.summary()}")


if __name__ == "__main__":
    main()
