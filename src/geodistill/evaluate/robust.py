"""Robust accuracy under adversarial attacks (torchattacks), with sanity checks.

Attacks see images in [0, 1] (normalization is inside the model), so ``eps`` is in pixel
units, e.g. ``2/255``. All attacks are L∞ with radius ``eps``:

- ``pgd100``: PGD, 100 steps, step ``eps/10``, random start;
- ``autoattack``: AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square);
- ``square``: Square attack (score-based, no gradients), 1,000 queries;
- ``cw``: PGD on the Carlini-Wagner margin loss (CW∞), 100 steps;
- ``mim``: momentum iterative FGSM, 10 steps, step ``eps/4``, decay 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..runtime import Runtime

ATTACKS = ("pgd100", "autoattack", "square", "cw", "mim")


def _torchattacks():
    try:
        import torchattacks
    except ImportError as e:
        from ..files import GeodistillError

        raise GeodistillError("robust evaluation needs torchattacks: pip install 'geodistill[robust]'") from e
    return torchattacks


def build_attack(name: str, model: nn.Module, eps: float, num_classes: int, seed: int = 0) -> Callable:
    """An attack ``(images [N,C,H,W] in [0,1], labels [N]) -> adversarial images``."""
    ta = _torchattacks()
    if name == "pgd100":
        return ta.PGD(model, eps=eps, alpha=eps / 10, steps=100, random_start=True)
    if name == "autoattack":
        return ta.AutoAttack(
            model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=seed
        )
    if name == "square":
        return ta.Square(model, norm="Linf", eps=eps, n_queries=1000, seed=seed)
    if name == "mim":
        return ta.MIFGSM(model, eps=eps, alpha=eps / 4, steps=10, decay=1.0)
    if name == "cw":
        return _cw_linf(ta)(model, eps=eps, alpha=eps / 10, steps=100, random_start=True)
    raise ValueError(f"unknown attack {name!r}; use any of {ATTACKS}")


def _cw_linf(ta):
    class CWLinf(ta.PGD):
        """PGD maximizing the CW margin ``max_{j≠y} z_j − z_y`` inside the L∞ ball."""

        def forward(self, images, labels):
            images, labels = images.clone().detach().to(self.device), labels.clone().detach().to(self.device)
            adv = (images + torch.empty_like(images).uniform_(-self.eps, self.eps)).clamp(0, 1).detach()
            for _ in range(self.steps):
                adv.requires_grad_(True)
                z = self.get_logits(adv)
                true = z.gather(1, labels[:, None])[:, 0]
                other = z.masked_fill(nn.functional.one_hot(labels, z.shape[1]).bool(), -1e4).amax(1)
                (grad,) = torch.autograd.grad((other - true).clamp(max=50).sum(), adv)
                adv = adv.detach() + self.alpha * grad.sign()
                adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
            return adv

    return CWLinf


def fixed_subset(n_total: int, n: int, seed: int) -> torch.Tensor:
    """The seeded test indices attacked (all of them when ``n`` is 0 or too large)."""
    if n <= 0 or n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: list[str],
    eps: list[float],
    rt: Runtime,
    *,
    num_classes: int,
    seed: int = 0,
    batch_size: int = 250,
) -> dict[str, float]:
    """Clean and robust accuracy of ``model`` on float images ``x`` in [0, 1].

    Returns ``{"clean": acc, "<attack>@<eps>": acc, ...}`` with eps written as ``k/255``
    when it is a whole multiple of 1/255. An adversarial example counts as correct only if
    the model still classifies it correctly; the attack must keep it in the ε-ball (checked).
    """
    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        clean_ok = torch.cat(
            [
                model(x[i : i + batch_size].to(rt.device)).argmax(1).cpu() == y[i : i + batch_size]
                for i in range(0, len(y), batch_size)
            ]
        )
    out["clean"] = clean_ok.float().mean().item()
    for e in eps:
        for name in attacks:
            with torch.random.fork_rng(devices=[rt.device] if rt.cuda else []):
                torch.manual_seed(seed)
                attack = build_attack(name, model, e, num_classes, seed)
                ok = []
                for i in range(0, len(y), batch_size):
                    xb, yb = x[i : i + batch_size].to(rt.device), y[i : i + batch_size].to(rt.device)
                    adv = attack(xb, yb)
                    if (adv - xb).abs().max() > e + 1e-5 or adv.min() < 0 or adv.max() > 1:
                        raise RuntimeError(f"attack {name} left the eps={e} ball or [0, 1]")
                    with torch.no_grad():
                        ok.append((model(adv).argmax(1) == yb).cpu())
            out[f"{name}@{eps_label(e)}"] = torch.cat(ok).float().mean().item()
    return out


def eps_label(e: float) -> str:
    k = e * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{e:g}"


def sanity_flags(scores: dict[str, float], where: str = "") -> list[str]:
    """Violations that point to a failed attack or gradient masking.

    Robust accuracy must not exceed clean accuracy, and AutoAttack (a superset of
    stronger attacks) must not exceed PGD-100 at the same ε on the same points.
    """
    flags = []
    clean = scores.get("clean")
    prefix = f"{where}: " if where else ""
    for k, v in scores.items():
        if k == "clean" or "@" not in k:
            continue
        if clean is not None and v > clean + 1e-9:
            flags.append(
                f"{prefix}{k} accuracy {v:.4f} exceeds clean accuracy {clean:.4f}: probable attack failure"
            )
        name, eps = k.split("@")
        if name == "autoattack" and f"pgd100@{eps}" in scores and v > scores[f"pgd100@{eps}"] + 1e-9:
            flags.append(
                f"{prefix}autoattack@{eps} accuracy {v:.4f} exceeds pgd100@{eps} "
                f"{scores[f'pgd100@{eps}']:.4f}: probable gradient masking or attack failure"
            )
    return flags
