"""Robust accuracy under adversarial attacks, with sanity checks.

Attacks see images in [0, 1] (normalization is inside the model), so ``eps`` is in pixel
units, e.g. ``2/255``. ``ATTACK_CONFIG`` states exactly what each name runs; the settings are
those of GUARD's evaluation (yumozi/GUARD ``train/evaluate.py``) unless said otherwise.
PGD-100, MIM and CW∞ are implemented here (no extra dependency; tested equal to torchattacks'
PGD and MIFGSM); AutoAttack, Square and CW-L2 need ``pip install 'geodistill[robust]'``
(torchattacks, which pins an old ``requests`` and so is not a core dependency).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ATTACKS
from ..runtime import Runtime

ATTACK_CONFIG = {
    "pgd100": "L∞ PGD on the cross-entropy, 100 steps of size ε/4, uniform random start (GUARD: "
    "torchattacks.PGD(eps, alpha=eps/4, steps=100))",
    "mim": "momentum iterative FGSM (MI-FGSM), 20 steps of size ε, decay 1.0, gradient L1-normalized per "
    "image as torchattacks.MIFGSM (GUARD's own MIM normalizes by the whole batch's L1 norm)",
    "cw-linf": "L∞ PGD on the Carlini-Wagner margin max_{j≠y} z_j − z_y, 100 steps of size ε/4, random "
    "start (geodistill's; not in GUARD)",
    "square": "torchattacks.Square, L∞, 5000 queries, p_init 0.8, 1 restart (torchattacks' defaults, "
    "as GUARD)",
    "autoattack": "torchattacks.AutoAttack, L∞, version 'standard' with torchattacks' defaults, as GUARD "
    "calls it: APGD-CE (10 steps), APGD-T (10 steps, 9 target classes), FAB-T (10 steps, 9 targets), "
    "Square (5000 queries), 1 restart each, each on the points the previous ones left; Croce & Hein's "
    "reference AutoAttack uses 100 steps",
    "cw": "torchattacks.CW (L2), c = 1e-4, κ = 0, 50 steps, lr 0.01 (GUARD's); unbounded L2, so ε does not "
    "apply and it is run once",
}
UNBOUNDED = {"cw"}  # attacks whose perturbation is not limited to the ε ball


def _torchattacks():
    try:
        import torchattacks
    except ImportError as e:
        from ..files import GeodistillError

        raise GeodistillError(
            "AutoAttack, Square and CW-L2 need torchattacks: pip install 'geodistill[robust]' "
            "(pgd100, mim and cw-linf need nothing extra)"
        ) from e
    return torchattacks


def attack_versions() -> dict[str, str]:
    try:
        import torchattacks

        return {"torchattacks": torchattacks.__version__}
    except ImportError:
        return {}


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    loss: str = "ce",
    random_start: bool = True,
) -> torch.Tensor:
    """L∞ PGD: from ``x`` plus uniform noise in the ε ball (drawn from the global RNG, as
    torchattacks does), ``steps`` signed-gradient ascent steps of size ``alpha`` on the batch-mean
    cross-entropy (``loss="ce"``) or summed CW margin (``"cw"``), each projected onto the ε ball
    and [0, 1]."""
    x, y = x.detach(), y.detach()
    adv = x.clone()
    if random_start:
        adv = (adv + torch.empty_like(adv).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = model(adv)
        obj = F.cross_entropy(logits, y) if loss == "ce" else _margin(logits, y).sum()
        (grad,) = torch.autograd.grad(obj, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv


def mim(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    decay: float = 1.0,
) -> torch.Tensor:
    """MI-FGSM (Dong et al. 2018): accumulate ``g / mean|g|`` (per image) with ``decay``, step
    ``alpha`` along the sign of the accumulated gradient, project onto the ε ball and [0, 1]."""
    x, y = x.detach(), y.detach()
    momentum = torch.zeros_like(x)
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        grad = grad / grad.abs().mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        momentum = grad + decay * momentum
        adv = adv.detach() + alpha * momentum.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv


def build_attack(name: str, model: nn.Module, eps: float, num_classes: int, seed: int = 0) -> Callable:
    """An attack ``(images [N,C,H,W] in [0,1], labels [N]) -> adversarial images`` (``ATTACK_CONFIG``)."""
    if name == "pgd100":
        return lambda x, y: pgd(model, x, y, eps=eps, alpha=eps / 4, steps=100)
    if name == "cw-linf":
        return lambda x, y: pgd(model, x, y, eps=eps, alpha=eps / 4, steps=100, loss="cw")
    if name == "mim":
        return lambda x, y: mim(model, x, y, eps=eps, alpha=eps, steps=20, decay=1.0)
    ta = _torchattacks()
    if name == "autoattack":
        return ta.AutoAttack(
            model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=seed
        )
    if name == "square":
        return ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, seed=seed)
    if name == "cw":
        return ta.CW(model, c=1e-4, kappa=0, steps=50, lr=0.01)
    raise ValueError(f"unknown attack {name!r}; use any of {ATTACKS}")


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
    log: Callable[[str], None] | None = None,
    only: set[str] | None = None,
) -> dict[str, float]:
    """Clean and robust accuracy of ``model`` on float images ``x`` in [0, 1].

    ``attacks`` entries are names (run at every radius of ``eps``) or ``name@radius`` (that radius
    only). Returns ``{"clean": acc, "<attack>@<eps>": acc, ...}`` (``"cw"`` without ε) with eps written
    as ``k/255`` when it is a whole multiple of 1/255 (:func:`attack_keys`); with ``only``, just the
    attacks whose keys it holds run (each attack is seeded alone, so its score does not depend on
    which others run). Only correctly classified points are
    attacked (the others count as errors either way); an adversarial example counts as correct
    only if the model still classifies it correctly; bounded attacks must stay in the ε ball
    and in [0, 1] (checked on every batch). ``log`` receives one line per attack as it finishes
    (accuracy and seconds: AutoAttack can take many minutes per model on a CPU).
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
    out["clean"] = int(clean_ok.sum()) / max(1, len(y))  # as the robust scores: no float32 rounding
    jobs = [j for j in attack_jobs(attacks, eps) if only is None or attack_key(*j) in only]
    # misclassified points are errors whatever the attack does: attack only the correct ones
    ok_idx = clean_ok.nonzero().flatten()
    xs, ys = x[ok_idx], y[ok_idx]
    for name, e in jobs:
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[rt.device] if rt.cuda else []):
            torch.manual_seed(seed)
            attack = build_attack(name, model, e if e is not None else 0.0, num_classes, seed)
            survived = 0
            for i in range(0, len(ys), batch_size):
                xb, yb = xs[i : i + batch_size].to(rt.device), ys[i : i + batch_size].to(rt.device)
                adv = attack(xb, yb)
                if adv.min() < 0 or adv.max() > 1 or (e is not None and (adv - xb).abs().max() > e + 1e-5):
                    raise RuntimeError(f"attack {name} left the eps={e} ball or [0, 1]")
                with torch.no_grad():
                    survived += int((model(adv).argmax(1) == yb).sum())
        key = attack_key(name, e)
        out[key] = survived / max(1, len(y))
        if log is not None:
            log(f"    {key}: {out[key]:.4f} ({time.perf_counter() - t0:.1f}s, {len(ys)} images attacked)")
    return out


def attack_jobs(attacks: list[str], eps: list[float]) -> list[tuple[str, float | None]]:
    """``(name, radius)`` pairs that ``attacks`` and ``eps`` ask for, in order, without repeats:
    ``"name"`` runs at every radius in ``eps``, ``"name@2/255"`` at that radius only, an unbounded
    attack (``cw``) once with radius ``None``."""
    jobs: list[tuple[str, float | None]] = []
    for spec in attacks:
        name, _, radius = spec.partition("@")
        if name in UNBOUNDED:
            jobs.append((name, None))
        else:
            jobs += [(name, parse_eps(radius))] if radius else [(name, e) for e in eps]
    return sorted(set(jobs), key=jobs.index)


def attack_key(name: str, e: float | None) -> str:
    """The score's key: ``"pgd100@2/255"``, or the bare name of an unbounded attack."""
    return name if e is None else f"{name}@{eps_label(e)}"


def attack_keys(attacks: list[str], eps: list[float]) -> list[str]:
    """The keys :func:`robust_accuracy` returns for ``attacks`` besides ``"clean"``."""
    return [attack_key(*j) for j in attack_jobs(attacks, eps)]


def parse_eps(text: str) -> float:
    """``"2/255"`` or ``"0.01"`` -> a radius in pixel units."""
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


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
        if k == "clean":
            continue
        if clean is not None and v > clean + 1e-9:
            flags.append(
                f"{prefix}{k} accuracy {v:.4f} exceeds clean accuracy {clean:.4f}: probable attack failure"
            )
        if "@" not in k:
            continue
        name, eps = k.split("@")
        if name == "autoattack" and f"pgd100@{eps}" in scores and v > scores[f"pgd100@{eps}"] + 1e-9:
            flags.append(
                f"{prefix}autoattack@{eps} accuracy {v:.4f} exceeds pgd100@{eps} "
                f"{scores[f'pgd100@{eps}']:.4f}: probable gradient masking or attack failure"
            )
    return flags
