"""Training objectives for the squeeze stage: plain CE, GUARD's curvature regularizer and
the input-gradient / adversarial-training baselines it is compared against.

Each objective returns ``(loss, logits)`` for a batch ``x`` ``[N, C, H, W]`` in [0, 1]
(pixel units: every step size and radius here is measured on [0, 1] images).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor], torch.Tensor]  # x [N, ...] -> per-sample loss [N]


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def input_grad(loss_fn: LossFn, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """``∇ₓ ℓ(x_i)`` for every sample (the losses are summed, so samples do not mix)."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x).sum(), x, create_graph=create_graph)
    return g


def curvature_penalty(loss_fn: LossFn, x: torch.Tensor, h: float) -> torch.Tensor:
    """GUARD's regularizer, per sample: ``‖∇ₓℓ(x + h·z) − ∇ₓℓ(x)‖₂`` with
    ``z = ∇ₓℓ(x)/‖∇ₓℓ(x)‖`` (detached). For a quadratic loss ``½xᵀHx`` it equals ``h‖Hz‖``.

    Uses double backprop, so the result is differentiable w.r.t. the model parameters.
    Returns a tensor ``[N]``.
    """
    x = x.detach().requires_grad_(True)
    g0 = input_grad(loss_fn, x, create_graph=True)
    z = g0.detach() / _per_sample_norm(g0.detach()).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
    g1 = input_grad(loss_fn, x + h * z, create_graph=True)
    return _per_sample_norm(g1 - g0)


def curvature_simple_penalty(loss_fn: LossFn, x: torch.Tensor, h: float) -> torch.Tensor:
    """The authors' cheaper ImageNet variant: ``|ℓ(x + h·z) − ℓ(x)|`` per sample (``[N]``)."""
    x = x.detach().requires_grad_(True)
    loss0 = loss_fn(x)
    (g,) = torch.autograd.grad(loss0.sum(), x, retain_graph=True)
    z = g / _per_sample_norm(g).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
    return (loss_fn(x.detach() + h * z) - loss0).abs()


def default_h(image_shape: tuple[int, ...], std: list[float], h224: float = 3.0) -> float:
    """GUARD's step ``h`` in pixel units for an image of ``image_shape`` ``(C, H, W)``.

    The authors use h = 3.0 at 3x224x224 in normalized units (pixel / std). ``z`` is a
    unit vector over all ``C·H·W`` inputs, so the per-input size of ``h·z`` is ``h/√(CHW)``;
    keeping that constant gives ``h = h224 · mean(std) · √(CHW / (3·224·224))``.
    """
    c, hh, ww = image_shape
    return h224 * float(sum(std) / len(std)) * math.sqrt(c * hh * ww / (3 * 224 * 224))


def _pgd(
    model: nn.Module,
    x: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    eps: float,
    alpha: float,
    steps: int,
    g: torch.Generator | None,
) -> torch.Tensor:
    delta = (torch.rand(x.shape, generator=g, device=g.device if g else "cpu").to(x.device) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective((x + delta).clamp(0, 1)), delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


REGULARIZERS = ("none", "curvature", "curvature-simple", "gradnorm", "fgsm", "pgd", "trades")
# curvature: lambda_=4 in the authors' regularizer (inherited from CURE); TRADES: beta=6
DEFAULT_LAMBDA = {"curvature": 4.0, "curvature-simple": 4.0, "gradnorm": 1.0, "trades": 6.0}


def objective(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    kind: str,
    *,
    lam: float = 0.0,
    h: float = 0.0,
    eps: float = 2 / 255,
    label_smoothing: float = 0.0,
    generator: torch.Generator | None = None,
    input_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(loss, logits, parts)`` for one batch under regularizer ``kind`` (see ``REGULARIZERS``).

    ``input_scale`` (the model's normalization std, averaged over channels) converts the
    input-gradient penalties to the normalized units the papers use: a gradient w.r.t.
    pixels is ``1/std`` times the gradient w.r.t. normalized inputs, so the curvature and
    gradnorm terms are multiplied by ``input_scale`` and ``λ`` keeps the authors' meaning.

    - ``curvature``: CE + λ·mean‖∇ℓ(x+hz) − ∇ℓ(x)‖ (GUARD);  ``curvature-simple``: CE +
      λ·mean|ℓ(x+hz) − ℓ(x)|;  ``gradnorm``: CE + λ·mean‖∇ₓℓ(x)‖;
    - ``fgsm``: CE on FGSM-with-random-start examples (α = 1.25ε; Wong et al. 2020);
    - ``pgd``: CE on 7-step PGD examples (α = 2.5ε/7; Madry et al.);
    - ``trades``: CE + λ·KL(f(x_adv) ‖ f(x)), x_adv by 7-step PGD on the KL (Zhang et al.).
    """
    if kind not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {kind!r}; use one of {REGULARIZERS}")
    lam = lam or DEFAULT_LAMBDA.get(kind, 0.0)
    ce = lambda logits: F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    per_sample = lambda xx: F.cross_entropy(model(xx), y, reduction="none")
    parts: dict[str, float] = {}
    if kind in ("fgsm", "pgd"):
        was = model.training
        model.eval()
        obj = lambda xx: F.cross_entropy(model(xx), y)
        steps, alpha = (1, 1.25 * eps) if kind == "fgsm" else (7, 2.5 * eps / 7)
        x = _pgd(model, x, obj, eps, alpha, steps, generator)
        model.train(was)
        logits = model(x)
        return ce(logits), logits, parts
    logits = model(x)
    loss = ce(logits)
    if kind == "none":
        return loss, logits, parts
    if kind == "trades":
        was = model.training
        model.eval()
        p_clean = F.softmax(logits.detach(), 1)
        kl = lambda xx: F.kl_div(F.log_softmax(model(xx), 1), p_clean, reduction="batchmean")
        x_adv = _pgd(model, x, kl, eps, 2.5 * eps / 7, 7, generator)
        model.train(was)
        reg = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
    else:
        # like the authors' code, the regularizer sees the model in eval mode (fixed BN stats)
        was = model.training
        model.eval()
        if kind == "curvature":
            reg = curvature_penalty(per_sample, x, h).mean()
        elif kind == "curvature-simple":
            reg = curvature_simple_penalty(per_sample, x, h).mean()
        else:  # gradnorm
            reg = _per_sample_norm(input_grad(per_sample, x, create_graph=True)).mean()
        model.train(was)
    if kind != "trades":
        reg = reg * input_scale
    parts["reg"] = float(reg.detach())
    return loss + lam * reg, logits, parts
