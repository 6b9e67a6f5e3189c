"""RDED (Sun et al., CVPR 2024, LINs-lab/RDED ``synthesize/``): realistic and diverse images from
scored real crops, no pixel optimization.

For every class: draw ``rded_candidates`` real training images; cut ``rded_crops`` random square
crops (random-resized-crop, scale 0.08-1, aspect 1) of side ``S / factor`` from each; score every
crop by the teacher's cross-entropy on the class (the crop zero-padded to ``S``); keep each
image's best crop, then the ``ipc * factor**2`` best crops overall, and stitch ``factor x factor``
of them into each of the ``ipc`` output images. The authors use factor 1 at 32 px (CIFAR) and 2
at 224 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import DistillConfig
from ..data import ClassData, random_resized_crop
from ..distilled import DistilledSet
from ..models import Classifier
from ..runtime import Runtime, generator


def rded_factor(cfg: DistillConfig, side: int) -> int:
    return cfg.rded_factor or (1 if side <= 32 else 2)


@torch.no_grad()
def score_crops(teacher: Classifier, crops: torch.Tensor, c: int, side: int, rt: Runtime) -> torch.Tensor:
    """Cross-entropy of class ``c`` for each crop ``[M, C, s, s]`` zero-padded to ``side``."""
    pad = side - crops.shape[-1]
    out = []
    for i in range(0, len(crops), 500):
        x = F.pad(crops[i : i + 500], (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)).to(rt.device)
        with rt.autocast():
            logits = teacher(x).float()
        out.append(
            F.cross_entropy(logits, torch.full((len(x),), c, device=rt.device), reduction="none").cpu()
        )
    return torch.cat(out)


def stitch(patches: torch.Tensor, factor: int, side: int) -> torch.Tensor:
    """``[n * factor**2, C, s, s]`` patches -> ``[n, C, side, side]`` images, row-major tiles."""
    n = len(patches) // factor**2
    c = patches.shape[1]
    out = torch.zeros(n, c, side, side)
    edges = [round(i * side / factor) for i in range(factor + 1)]
    k = 0
    for img in range(n):
        for i in range(factor):
            for j in range(factor):
                h, w = edges[i + 1] - edges[i], edges[j + 1] - edges[j]
                p = patches[k : k + 1]
                if p.shape[-2:] != (h, w):
                    p = F.interpolate(p, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
                out[img, :, edges[i] : edges[i + 1], edges[j] : edges[j + 1]] = p[0]
                k += 1
    return out


def rded(teacher: Classifier, data: ClassData, cfg: DistillConfig, rt: Runtime) -> DistilledSet:
    """The RDED distilled set for ``teacher`` and ``data`` (module docstring)."""
    teacher.eval()
    side = data.image_shape[-1]
    factor = rded_factor(cfg, side)
    small = side // factor
    imgs, labels = [], []
    for c in range(data.num_classes):
        g = generator(cfg.seed * 1_000_003 + c)
        idx = data.class_indices(c)
        cand = idx[torch.randperm(len(idx), generator=g)[: max(cfg.rded_candidates, cfg.ipc * factor**2)]]
        x = data.float(data.x_train[cand])
        crops = torch.stack(
            [
                random_resized_crop(
                    x, scale=(0.08, 1.0), ratio=(1.0, 1.0), hflip=False, size=(small, small), generator=g
                )
                for _ in range(cfg.rded_crops)
            ]
        )  # [m, n, C, s, s]
        ce = score_crops(teacher, crops.flatten(0, 1), c, side, rt).view(cfg.rded_crops, len(cand))
        best_ce, best = ce.min(0)  # each candidate's best crop
        chosen = best_ce.argsort()[: cfg.ipc * factor**2]
        patches = crops[best[chosen], chosen]
        imgs.append(stitch(patches, factor, side) if factor > 1 else patches)
        labels.append(torch.full((cfg.ipc,), c))
    n = cfg.ipc * data.num_classes
    manifest = {"method": "rded", "ipc": cfg.ipc, "seed": cfg.seed, "rded_factor": factor}
    return DistilledSet(
        torch.cat(imgs).clamp(0, 1),
        torch.cat(labels),
        torch.full((n,), 1 / cfg.ipc),
        list(data.class_names),
        manifest,
    )
