"""Memory hints: estimate what a batch needs and refuse, before long work starts, a batch
that cannot fit (instead of swapping or dying with an out-of-memory error hours in)."""

from __future__ import annotations

import re

import torch
from torch import nn

from .files import GeodistillError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "kib": 2**10,
    "m": 1e6,
    "mb": 1e6,
    "mib": 2**20,
    "g": 1e9,
    "gb": 1e9,
    "gib": 2**30,
    "t": 1e12,
    "tb": 1e12,
    "tib": 2**40,
}


def parse_bytes(text: str | int | float | None) -> int | None:
    """``"4GB"``, ``"512MiB"``, ``"1.5g"`` or a number of bytes -> bytes (``None``/``""``: no limit)."""
    if text in (None, "", 0):
        return None
    if isinstance(text, int | float):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise GeodistillError(f"max_memory {text!r}: expected a size such as 4GB or 512MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def activation_bytes_per_image(model: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> int:
    """Bytes of every module output for one image (what backward keeps), by forward hooks."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return total


def check_batch_fits(
    model: nn.Module,
    image_shape: tuple[int, ...],
    batch: int,
    device: torch.device,
    max_memory: str | int | None,
    *,
    what: str,
    hint: str,
    models: int = 1,
) -> int:
    """Estimate the peak bytes of a training/synthesis step on ``batch`` images and raise a
    clear error when it exceeds ``max_memory``. ``models`` counts networks run on the batch
    (e.g. student + teacher). Returns the estimate.

    Estimate: parameters x 4 (weights, grads, two optimizer moments) + batch x activations
    per image x 3 (saved activations, their gradients, workspace) x models.
    """
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    est = params * 4 + batch * activation_bytes_per_image(model, image_shape, device) * 3 * models
    limit = parse_bytes(max_memory)
    if limit is not None and est > limit:
        raise GeodistillError(
            f"{what}: a batch of {batch} images needs about {est / 2**30:.2f} GiB, over the "
            f"max_memory limit of {limit / 2**30:.2f} GiB; {hint}"
        )
    return est
