"""Synthesis losses: BatchNorm statistics matching (per class or global) and barycenter
feature matching."""

from __future__ import annotations

import torch
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
        self.enabled = True  # False: forward passes are not recorded
        self.layers = bn_layers(model)
        if not self.layers:
            raise ValueError("BN statistics matching needs a teacher with BatchNorm layers")
        self.handles = [m.register_forward_hook(self._hook(i, n)) for i, (n, m) in enumerate(self.layers)]

    def _hook(self, i: int, name: str):
        def fn(mod, inp, _out):
            if not self.enabled:
                return
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


def feature_matching(
    features: torch.Tensor, atoms: torch.Tensor, scale: torch.Tensor, form: str = "relative"
) -> torch.Tensor:
    """The barycenter term between features ``[N, D]`` and their paired atoms ``[N, D]``.

    - ``relative``: ``mean_i ‖f_i − a_i‖² / s_i``, ``s_i`` (``scale [N]``) the total feature
      variance of image ``i``'s class (mean squared distance of its real features to their mean):
      dimensionless, so its weight does not depend on the feature dimension D.
    - ``paper``: ``‖F − A‖_F`` over the whole batch, unsquared, as in the authors' code
      (``torch.norm(feature - wass_bary, 2)``); its size grows like √(N·D).
    """
    diff = features - atoms
    if form == "paper":
        return diff.norm()
    if form == "relative":
        return (diff.pow(2).sum(1) / scale).mean()
    raise ValueError(f"unknown feature loss {form!r}; use relative or paper")


def ot_pairing(features: torch.Tensor, atoms: torch.Tensor, ipc: int) -> torch.Tensor:
    """Re-pair images and atoms within each class by optimal assignment: returns a permutation
    ``perm [N]`` such that ``atoms[perm]`` minimises the summed squared distance to ``features``
    (classes are consecutive blocks of ``ipc`` rows, pairs never cross classes)."""
    from scipy.optimize import linear_sum_assignment

    f, a = features.detach().double().cpu(), atoms.detach().double().cpu()
    perm = torch.arange(len(f))
    for s in range(0, len(f), ipc):
        cost = torch.cdist(f[s : s + ipc], a[s : s + ipc]).pow(2).numpy()
        rows, cols = linear_sum_assignment(cost)
        perm[s + rows] = torch.as_tensor(cols) + s
    return perm.to(features.device)
