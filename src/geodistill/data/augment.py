"""Batched, per-sample, differentiable augmentation on ``[N, C, H, W]`` tensors in [0, 1].

All transforms are one ``affine_grid``/``grid_sample`` call, so they run on any device,
keep gradients (synthesis optimizes pixels through them) and draw from an explicit
``torch.Generator``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device if g is not None else "cpu").to(device) * (hi - lo) + lo


def _warp(
    x: torch.Tensor,
    sx: torch.Tensor,
    sy: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sx, sy, tx, ty
    out = (x.shape[0], x.shape[1], *(size or x.shape[-2:]))
    grid = F.affine_grid(theta, list(out), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flip_sign(n: int, hflip: bool, g, device) -> torch.Tensor:
    if not hflip:
        return torch.ones(n, device=device)
    return torch.where(_uniform(n, 0, 1, g, device) < 0.5, -1.0, 1.0)


def random_resized_crop(
    x: torch.Tensor,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    size: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample RandomResizedCrop (+ optional horizontal flip), resized back to ``size``."""
    n, dev = x.shape[0], x.device
    area = _uniform(n, *scale, generator, dev)
    logr = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, dev)
    w = torch.sqrt(area * logr.exp()).clamp(max=1.0)
    h = torch.sqrt(area / logr.exp()).clamp(max=1.0)
    cx = (_uniform(n, -1, 1, generator, dev)) * (1 - w)
    cy = (_uniform(n, -1, 1, generator, dev)) * (1 - h)
    return _warp(x, w * _flip_sign(n, hflip, generator, dev), h, cx, cy, size)


def shift_crop(
    x: torch.Tensor, *, pad: int = 4, hflip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels (integer shifts), + optional flip."""
    n, dev = x.shape[0], x.device
    hgt, wid = x.shape[-2:]
    shifts = torch.randint(
        -pad,
        pad + 1,
        (2, n),
        generator=generator,
        device=generator.device if generator is not None else "cpu",
    ).to(dev)
    ones = torch.ones(n, device=dev)
    return _warp(x, _flip_sign(n, hflip, generator, dev), ones, 2 * shifts[0] / wid, 2 * shifts[1] / hgt)


def train_augment(
    x: torch.Tensor,
    *,
    hflip: bool,
    generator: torch.Generator | None = None,
    kind: str = "crop",
    scale: tuple[float, float] = (0.08, 1.0),
) -> torch.Tensor:
    """Standard training augmentation: ``crop`` (pad-and-crop, for small images) or ``rrc``."""
    if kind == "crop":
        return shift_crop(x, pad=max(1, x.shape[-1] // 8), hflip=hflip, generator=generator)
    if kind == "rrc":
        return random_resized_crop(x, scale=scale, hflip=hflip, generator=generator)
    if kind == "none":
        return x
    raise ValueError(f"unknown augmentation {kind!r}; use crop, rrc or none")


def cutmix(x: torch.Tensor, *, alpha: float = 1.0, generator: torch.Generator | None = None):
    """CutMix: paste a box from a permuted batch. Returns ``(x_mixed, perm, lam)``.

    ``lam`` is the fraction of each image that still comes from the original sample.
    """
    n, _, hgt, wid = x.shape
    gd = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=gd))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(n, generator=generator, device=gd).to(x.device)
    rh, rw = int(hgt * math.sqrt(1 - lam)), int(wid * math.sqrt(1 - lam))
    cy = int(torch.randint(hgt, (1,), generator=generator, device=gd))
    cx = int(torch.randint(wid, (1,), generator=generator, device=gd))
    y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, hgt)
    x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, wid)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (hgt * wid)
    return out, perm, lam


def roll_jitter(x: torch.Tensor, max_shift: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Circularly shift the whole batch by one random offset in ``[0, max_shift]`` per axis
    (``torch.roll``, as SRe2L / WMDD's synthesis "jitter")."""
    if max_shift <= 0:
        return x
    gd = generator.device if generator is not None else "cpu"
    dy, dx = torch.randint(0, max_shift + 1, (2,), generator=generator, device=gd).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))
