"""Synthesis losses: BatchNorm statistics matching (per class or global) and barycenter
feature matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..stats import bn_layers


class BNMatcher:
    """Forward hooks on every BN layer of ``model`` that record the statistics loss of the
    current batch.

    ``mode="class"`` (PCBN, WMDD): the batch is ``G`` classes x ``ipc`` images in order; for
    each class the mean/variance of the layer input over its images and pixels is matched to
    that class's real moments ``[K, C]``.  ``mode="global"`` (SRe2L): the whole batch's
    moments are matched to the layer's running statistics.  Per layer the loss is
    ``‖μ − μ*‖₂ + ‖σ² − σ²*‖₂`` (averaged over classes), the first layer weighted by
    ``first_multiplier``.
    """

    def __init__(
        self, model: nn.Module, mode: str, *, bn_mean=None, bn_var=None, first_multiplier: float = 1.0
    ):
        if mode not in ("class", "global"):
            raise ValueError(f"unknown BN matching mode {mode!r}")
        self.mode, self.first_multiplier = mode, first_multiplier
        self.bn_mean, self.bn_var = bn_mean, bn_var
        self.classes: torch.Tensor | None = None  # [G] class ids of the current batch
        self.losses: list[torch.Tensor] = []
        self.layers = bn_layers(model)
        if not self.layers:
            raise ValueError("BN statistics matching needs a teacher with BatchNorm layers")
        self.handles = [m.register_forward_hook(self._hook(i, n)) for i, (n, m) in enumerate(self.layers)]

    def _hook(self, i: int, name: str):
        def fn(mod, inp, _out):
            x = inp[0].float()
            w = self.first_multiplier if i == 0 else 1.0
            if self.mode == "global":
                mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
                loss = (mean - mod.running_mean).norm() + (var - mod.running_var).norm()
            else:
                g = len(self.classes)
                xg = x.view(g, -1, *x.shape[1:]).transpose(1, 2).flatten(2)  # [G, C, ipc*H*W]
                mean, var = xg.mean(2), xg.var(2, unbiased=False)
                tm = self.bn_mean[name].to(x.device)[self.classes]
                tv = self.bn_var[name].to(x.device)[self.classes]
                loss = ((mean - tm).norm(dim=1) + (var - tv).norm(dim=1)).mean()
            self.losses.append(w * loss)

        return fn

    def pop(self) -> torch.Tensor:
        loss = torch.stack(self.losses).sum()
        self.losses = []
        return loss

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def feature_matching(features: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """Mean over images of ``‖f(x_i) − y_i‖² / D``: each image's penultimate feature to its
    barycenter atom. ``features, atoms [N, D]``."""
    return F.mse_loss(features, atoms)
