"""Accuracy of a classifier on a labelled tensor split."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..runtime import Runtime


@torch.no_grad()
def accuracy(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rt: Runtime,
    *,
    to_float: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 500,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (fractions in [0, 1]) of ``model`` on images ``x`` ``[N,C,H,W]``."""
    was_training = model.training
    model.eval()
    to_float = to_float or (lambda t: t.float().div(255) if t.dtype == torch.uint8 else t.float())
    top1 = top5 = 0
    for i in range(0, len(y), batch_size):
        xb = to_float(x[i : i + batch_size]).to(rt.device)
        yb = y[i : i + batch_size].to(rt.device)
        with rt.autocast():
            logits = model(xb)
        k = min(5, logits.shape[1])
        pred = logits.topk(k, dim=1).indices
        top1 += (pred[:, 0] == yb).sum().item()
        top5 += (pred == yb[:, None]).any(1).sum().item()
    model.train(was_training)
    n = max(1, len(y))
    return top1 / n, top5 / n
