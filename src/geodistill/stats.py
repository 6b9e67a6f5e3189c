"""Class statistics: one batched pass over the training data gives, per class, the teacher's
penultimate features and the exact mean/variance of every BatchNorm layer's input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .data import ClassData
from .files import GeodistillError, check_tensor, load_tensors, save_tensors
from .models import Classifier
from .runtime import Runtime


def bn_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@dataclass
class ClassStats:
    """``features[N, D]`` with ``labels[N]`` (training order); for each BN layer ``name``,
    ``bn_mean[name]`` and ``bn_var[name]`` ``[K, C]``: the class-conditional mean and
    (biased) variance of that layer's input over all pixels of all images of the class."""

    class_names: list[str]
    features: torch.Tensor
    labels: torch.Tensor
    bn_mean: dict[str, torch.Tensor]
    bn_var: dict[str, torch.Tensor]
    teacher_sha256: str | None = None  # the teacher these statistics belong to

    def class_features(self, c: int) -> torch.Tensor:
        return self.features[self.labels == c]

    def save(self, path: str | Path) -> None:
        t = {"features": self.features, "labels": self.labels}
        t |= {f"bn_mean/{k}": v for k, v in self.bn_mean.items()}
        t |= {f"bn_var/{k}": v for k, v in self.bn_var.items()}
        save_tensors(
            path,
            t,
            {
                "class_names": self.class_names,
                "bn_layers": list(self.bn_mean),
                "teacher_sha256": self.teacher_sha256,
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> ClassStats:
        """Read and validate statistics written by :meth:`save`."""
        t, meta = load_tensors(path)
        names, layers = meta.get("class_names"), meta.get("bn_layers")
        if not isinstance(names, list) or not names or not isinstance(layers, list):
            raise GeodistillError(
                f"{path}: not a geodistill class-statistics file (no class names or BN layers)"
            )
        k = len(names)
        feats = check_tensor(path, "features", t.get("features"), ndim=2)
        labels = check_tensor(
            path, "labels", t.get("labels"), ndim=1, kind="int", length=len(feats), lo=0, hi=k - 1
        )
        mean, var = {}, {}
        for name in layers:
            mean[name] = check_tensor(path, f"bn_mean/{name}", t.get(f"bn_mean/{name}"), ndim=2, length=k)
            var[name] = check_tensor(
                path, f"bn_var/{name}", t.get(f"bn_var/{name}"), ndim=2, length=k, lo=0.0
            )
            if mean[name].shape != var[name].shape:
                raise GeodistillError(f"{path}: bn_mean/{name} and bn_var/{name} have different shapes")
        return cls(names, feats.float(), labels.long(), mean, var, meta.get("teacher_sha256"))


@torch.no_grad()
def compute_class_stats(
    model: Classifier, data: ClassData, rt: Runtime, *, batch_size: int = 500
) -> ClassStats:
    """One pass over ``data.x_train`` with ``model`` in eval mode.

    BN moments are pooled exactly across batches from per-class sums of ``x`` and ``x²``
    accumulated in float64 (not by averaging per-batch variances, which would be wrong).
    """
    model.eval()
    k = data.num_classes
    layers = bn_layers(model)
    sums: dict[str, torch.Tensor] = {}
    sqs: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    labels_now: list[torch.Tensor] = []

    def hook(name):
        def fn(_mod, inp, _out):
            x = inp[0].float()
            x = x.flatten(2) if x.ndim > 2 else x[:, :, None]  # [B, C, pixels]
            y = labels_now[0]
            c = x.shape[1]
            if name not in sums:
                sums[name] = torch.zeros(k, c, dtype=torch.float64, device=x.device)
                sqs[name] = torch.zeros(k, c, dtype=torch.float64, device=x.device)
                counts[name] = torch.zeros(k, dtype=torch.float64, device=x.device)
            per = x.shape[2]
            # per-image sums in float32 (a few thousand terms), accumulated across images in float64
            sums[name].index_add_(0, y, x.sum(2).double())
            sqs[name].index_add_(0, y, torch.linalg.vector_norm(x, dim=2).double().square())
            counts[name].index_add_(
                0, y, torch.full((len(y),), float(per), dtype=torch.float64, device=x.device)
            )

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    feats = []
    try:
        for i in range(0, len(data.y_train), batch_size):
            x = data.float(data.x_train[i : i + batch_size]).to(rt.device)
            labels_now[:] = [data.y_train[i : i + batch_size].to(rt.device)]
            with rt.autocast():
                f = model.features(x)
            feats.append(f.float().cpu())
    finally:
        for h in handles:
            h.remove()
    bn_mean, bn_var = {}, {}
    for name in sums:
        n = counts[name][:, None]
        mean = sums[name] / n
        bn_mean[name] = mean.float().cpu()
        bn_var[name] = (sqs[name] / n - mean * mean).clamp_min(0).float().cpu()
    return ClassStats(list(data.class_names), torch.cat(feats), data.y_train.clone(), bn_mean, bn_var)
