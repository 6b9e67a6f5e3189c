"""Training objectives for the squeeze stage: plain CE, GUARD's curvature regularizer and
the input-gradient / adversarial-training baselines it is compared against.

Units. Images are in [0, 1] and normalization lives inside the model. GUARD's terms are
computed, as in the authors' code (yumozi/GUARD ``pretrain_cifar.py``, ``pretrain.py``), on the
*normalized* input ``u = (x - mean) / std``: ``h`` is a length in those units (3.0 = three
standard deviations of one pixel channel, spread over all C*H*W inputs by the unit direction
``z``) and gradients are taken with respect to ``u``. The adversarial-training radii ``eps``
are in pixel units, like every attack radius in geodistill.

Each objective returns ``(loss, logits, parts)`` for a batch ``x [N, C, H, W]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..config import REGULARIZERS

LossFn = Callable[[torch.Tensor], torch.Tensor]  # inputs [N, ...] -> per-sample loss [N]


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def input_grad(loss_fn: LossFn, x: torch.Tensor, *, reduce: str = "sum", create_graph: bool = False):
    """Gradient of ``loss_fn(x).sum()`` (each row: ``∇ℓ(x_i)``) or ``.mean()`` (each row:
    ``∇ℓ(x_i) / N``, the gradient of a batch-mean loss as the GUARD code takes it)."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    total = loss_fn(x).sum() if reduce == "sum" else loss_fn(x).mean()
    (g,) = torch.autograd.grad(total, x, create_graph=create_graph)
    return g


def unit_direction(g: torch.Tensor) -> torch.Tensor:
    """``g / ‖g‖`` per sample (detached); the authors add 1e-7 to avoid 0/0, so do we."""
    g = g.detach()
    return (g + 1e-7) / (_per_sample_norm(g) + 1e-7).view(-1, *[1] * (g.ndim - 1))


def curvature_penalty(loss_fn: LossFn, u: torch.Tensor, h: float) -> torch.Tensor:
    """GUARD's regularizer, per sample: ``‖∇ᵤ L(u + h·z) − ∇ᵤ L(u)‖₂`` for the batch-mean loss
    ``L = mean_i ℓ(u_i)`` (so every row carries a factor ``1/N``, as in the authors' code) and
    ``z = ∇ᵤL / ‖∇ᵤL‖`` per sample (detached). Returns ``[N]``; for a quadratic per-sample loss
    ``½uᵀAu`` row ``i`` equals ``h·‖A z_i‖ / N``.

    The clean gradient is computed once with ``create_graph`` and serves both as the direction
    and as the subtracted term (the authors run a third forward pass for it); double backprop
    makes the result differentiable w.r.t. the model's parameters.
    """
    u = u.detach().requires_grad_(True)
    g0 = input_grad(loss_fn, u, reduce="mean", create_graph=True)
    z = unit_direction(g0)
    g1 = input_grad(loss_fn, u + h * z, reduce="mean", create_graph=True)
    return _per_sample_norm(g1 - g0)


def curvature_simple_penalty(loss_fn: LossFn, u: torch.Tensor, h: float) -> torch.Tensor:
    """The authors' ImageNet variant (``pretrain.py``): ``|L(u + h·z) − L(u)|`` for the batch-mean
    loss ``L``, ``z`` the per-sample unit gradient direction. Returns a scalar."""
    u = u.detach().requires_grad_(True)
    loss0 = loss_fn(u).mean()
    (g,) = torch.autograd.grad(loss0, u, retain_graph=True)
    return (loss_fn(u.detach() + h * unit_direction(g)).mean() - loss0).abs()


def _affine_bn_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if bn.training or bn.running_mean is None:
        return type(bn).forward(bn, x)
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
    shape = (1, -1, *[1] * (x.ndim - 2))
    return x * scale.view(shape) + shift.view(shape)


@contextmanager
def eval_bn_as_affine(model: nn.Module) -> Iterator[None]:
    """Compute every eval-mode BatchNorm as the per-channel affine map it is.

    Same values and gradients as ``F.batch_norm(training=False)``, but its second-order graph
    is a few multiplications instead of the generic batch-norm double backward, which made up
    a sixth of a curvature step in a profile of the CPU path (the step costs are in
    ``benchmarks/results/gpu_check.md``).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.forward = _affine_bn_forward.__get__(m)  # instance attribute shadows the class method
    try:
        yield
    finally:
        for m in bns:
            del m.forward


def _pgd(
    x: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    eps: float,
    alpha: float,
    steps: int,
    g: torch.Generator | None,
) -> torch.Tensor:
    """L∞ PGD ascent on ``objective`` from a uniform random start in the ``eps`` ball."""
    delta = (torch.rand(x.shape, generator=g, device=g.device if g else "cpu").to(x.device) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective((x + delta).clamp(0, 1)), delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


# The authors' weights: GUARD CIFAR (--lamda 100 on the batch-mean loss), GUARD ImageNet
# (--beta 1e-4), TRADES (beta 6, Zhang et al. 2019); gradnorm has no published constant here.
DEFAULT_LAMBDA = {"curvature": 100.0, "curvature-simple": 1e-4, "gradnorm": 1.0, "trades": 6.0}


def objective(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    kind: str,
    *,
    lam: float = 0.0,
    h: float = 3.0,
    eps: float = 2 / 255,
    label_smoothing: float = 0.0,
    generator: torch.Generator | None = None,
    fraction: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(loss, logits, parts)`` for one batch under regularizer ``kind`` (see ``REGULARIZERS``);
    ``lam`` 0 means the authors' weight (``DEFAULT_LAMBDA``).

    - ``curvature`` (GUARD): CE + λ·mean_i ‖∇ᵤL(u+hz) − ∇ᵤL(u)‖ (normalized units, batch-mean L);
    - ``curvature-simple``: CE + λ·|L(u+hz) − L(u)|;  ``gradnorm``: CE + λ·mean_i ‖∇ᵤℓ(u_i)‖;
    - ``fgsm``: CE on FGSM-with-random-start examples (α = 1.25ε; Wong et al. 2020);
    - ``pgd``: CE on 7-step PGD examples (α = 2.5ε/7; Madry et al.);
    - ``trades``: CE + λ·KL(f(x_adv) ‖ f(x)), x_adv by 7-step PGD on the KL (Zhang et al.).

    The input-gradient terms see the model in eval mode (fixed BN statistics), like the authors'.
    With ``fraction`` < 1 the curvature / gradnorm term is computed on the first
    ``ceil(fraction·N)`` images of the (shuffled) batch, each still carrying the ``1/N`` of the
    batch-mean loss: per image the same value as on the whole batch (eval-mode BN makes images
    independent), so the mean over the subset is an unbiased estimate of the batch's term.
    """
    if kind not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {kind!r}; use one of {REGULARIZERS}")
    lam = lam or DEFAULT_LAMBDA.get(kind, 0.0)
    ce = lambda logits: F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    parts: dict[str, float] = {}
    if kind in ("fgsm", "pgd"):
        was = model.training
        model.eval()
        obj = lambda xx: F.cross_entropy(model(xx), y)
        steps, alpha = (1, 1.25 * eps) if kind == "fgsm" else (7, 2.5 * eps / 7)
        x = _pgd(x, obj, eps, alpha, steps, generator)
        model.train(was)
        logits = model(x)
        return ce(logits), logits, parts
    logits = model(x)
    loss = ce(logits)
    if kind == "none":
        return loss, logits, parts
    was = model.training
    model.eval()
    if kind == "trades":
        p_clean = F.softmax(logits.detach(), 1)
        kl = lambda xx: F.kl_div(F.log_softmax(model(xx), 1), p_clean, reduction="batchmean")
        x_adv = _pgd(x, kl, eps, 2.5 * eps / 7, 7, generator)
        model.train(was)
        reg = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
    else:
        n = len(x)
        m = n if kind == "curvature-simple" else max(1, math.ceil(fraction * n))
        scale = m / n if kind == "curvature" else 1.0  # keeps curvature's 1/N of the whole batch
        u = getattr(model, "module", model).normalize(x[:m])
        per_sample = lambda uu: F.cross_entropy(model(uu, normalized=True), y[:m], reduction="none") * scale
        with eval_bn_as_affine(model):
            if kind == "curvature":
                reg = curvature_penalty(per_sample, u, h).mean()
            elif kind == "curvature-simple":
                reg = curvature_simple_penalty(per_sample, u, h)
            else:  # gradnorm
                reg = _per_sample_norm(input_grad(per_sample, u, create_graph=True)).mean()
        model.train(was)
    parts["reg"] = float(reg.detach())
    return loss + lam * reg, logits, parts
