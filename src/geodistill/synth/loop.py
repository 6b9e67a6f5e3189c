"""The shared synthesis loop: Adam on pixels, cosine LR, random-resized-crop + flip, loss =
``r_feat``·barycenter matching + ``r_ce``·CE + ``r_bn``·BN statistics, many classes per batch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..barycenter import wasserstein_barycenter
from ..config import DistillConfig
from ..data import ClassData, random_resized_crop
from ..distilled import DistilledSet
from ..distributed import all_gather_objects, shard
from ..files import GeodistillError
from ..models import Classifier
from ..resources import check_batch_fits
from ..runtime import Runtime, device_name, generator, versions
from ..stats import ClassStats
from .losses import BNMatcher, feature_matching
from .strategies import Strategy, get_strategy

Group = dict  # {"images": [G*ipc, C, H, W], "weights": [G*ipc], "seconds": float, ...}


def class_groups(num_classes: int, batch_classes: int) -> list[list[int]]:
    return [list(range(s, min(s + batch_classes, num_classes))) for s in range(0, num_classes, batch_classes)]


def select_random(data: ClassData, ipc: int, seed: int) -> DistilledSet:
    """The ``random`` baseline: ``ipc`` random real training images per class."""
    data.check_ipc(ipc)
    imgs, labels = [], []
    for c in range(data.num_classes):
        idx = data.class_indices(c)
        pick = idx[torch.randperm(len(idx), generator=generator(seed * 1_000_003 + c))[:ipc]]
        imgs.append(data.float(data.x_train[pick]))
        labels.append(torch.full((ipc,), c))
    n = ipc * data.num_classes
    return DistilledSet(
        torch.cat(imgs),
        torch.cat(labels),
        torch.full((n,), 1 / ipc),
        list(data.class_names),
        {"method": "random", "ipc": ipc, "seed": seed},
    )


def plan_class(
    c: int, data: ClassData, stats: ClassStats | None, cfg: DistillConfig, strategy: Strategy
) -> dict:
    """Atoms, weights and initial images for class ``c``."""
    g = generator(cfg.seed * 1_000_003 + c)
    idx = data.class_indices(c)
    out: dict = {"weights": torch.full((cfg.ipc,), 1 / cfg.ipc)}
    if strategy.barycenter:
        feats = stats.class_features(c)
        t0 = time.perf_counter()
        atoms, weights = wasserstein_barycenter(
            feats, cfg.ipc, weighted=cfg.weighted, method=cfg.barycenter, seed=cfg.seed * 1_000_003 + c
        )
        out |= {"atoms": atoms, "weights": weights, "barycenter_seconds": time.perf_counter() - t0}
        if cfg.init == "real":  # the distinct real images closest to the atoms (Hungarian)
            _, cols = linear_sum_assignment(torch.cdist(atoms.double(), feats.double()).numpy())
            out["init"] = data.float(data.x_train[idx[torch.as_tensor(cols)]])
    if "init" not in out:
        if cfg.init == "real":
            out["init"] = data.float(data.x_train[idx[torch.randperm(len(idx), generator=g)[: cfg.ipc]]])
        elif cfg.init == "noise":
            out["init"] = torch.rand((cfg.ipc, *data.image_shape), generator=g)
        else:
            raise ValueError(f"unknown init {cfg.init!r}; use real or noise")
    return out


def optimize_group(
    teacher: Classifier,
    classes: list[int],
    plans: list[dict],
    stats: ClassStats | None,
    cfg: DistillConfig,
    strategy: Strategy,
    rt: Runtime,
    *,
    hflip: bool,
    log: Callable[[str], None] = lambda s: None,
) -> Group:
    """Optimize the images of ``classes`` together; returns their images and weights."""
    t0 = time.perf_counter()
    g = generator(cfg.seed * 1_000_003 + 7919 * classes[0] + 1, rt.device if rt.cuda else "cpu")
    x = torch.cat([p["init"] for p in plans]).to(rt.device).requires_grad_(True)
    y = torch.tensor(classes, device=rt.device).repeat_interleave(cfg.ipc)
    atoms = torch.cat([p["atoms"] for p in plans]).to(rt.device) if strategy.barycenter else None
    opt = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.9))
    bn = None
    if cfg.r_bn > 0:
        bn = BNMatcher(
            teacher,
            strategy.bn,
            bn_mean=stats.bn_mean if stats else None,
            bn_var=stats.bn_var if stats else None,
            first_multiplier=cfg.first_bn_multiplier,
        )
        bn.classes = torch.tensor(classes, device=rt.device)
    parts: dict[str, float] = {}
    try:
        for it in range(cfg.iterations):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * it / cfg.iterations))
            xa = random_resized_crop(x, scale=tuple(cfg.crop_scale), hflip=hflip, generator=g)
            with rt.autocast():
                feats = teacher.features(xa)
                logits = teacher.head(feats)
            loss = cfg.r_ce * F.cross_entropy(logits.float(), y)
            parts = {"ce": float(loss.detach())}
            if atoms is not None and cfg.r_feat > 0:
                fm = feature_matching(feats.float(), atoms)
                loss = loss + cfg.r_feat * fm
                parts["feat"] = float(fm.detach())
            if bn is not None:
                bl = bn.pop()
                loss = loss + cfg.r_bn * bl
                parts["bn"] = float(bl.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            if (it + 1) % max(1, cfg.iterations // 5) == 0 and it + 1 < cfg.iterations:
                log(
                    f"classes {classes[0]}-{classes[-1]}: iteration {it + 1}/{cfg.iterations} "
                    f"loss {float(loss.detach()):.4f} ({time.perf_counter() - t0:.0f}s)"
                )
    finally:
        if bn is not None:
            bn.remove()
    secs = time.perf_counter() - t0
    log(
        f"classes {classes[0]}-{classes[-1]}: "
        + " ".join(f"{k} {v:.4f}" for k, v in parts.items())
        + f" ({secs:.1f}s)"
    )
    return {
        "classes": classes,
        "images": x.detach().cpu(),
        "weights": torch.cat([p["weights"] for p in plans]),
        "seconds": secs,
        "final_loss": parts,
        "barycenter_seconds": sum(p.get("barycenter_seconds", 0.0) for p in plans),
    }


def distill(
    teacher: Classifier,
    data: ClassData,
    stats: ClassStats | None,
    cfg: DistillConfig,
    rt: Runtime,
    *,
    teacher_meta: dict | None = None,
    completed: dict[int, Group] | None = None,
    on_group: Callable[[int, Group], None] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> DistilledSet:
    """Turn class statistics into a :class:`DistilledSet` with method ``cfg.method``.

    Class groups already in ``completed`` (from a resumed run) are not recomputed;
    ``on_group(i, group)`` is called as each group finishes so the caller can save it.
    Under torchrun, groups are sharded across ranks and gathered at the end.
    """
    strategy = get_strategy(cfg.method)
    data.check_ipc(cfg.ipc)
    t0 = time.perf_counter()
    if not strategy.synthesize:
        ds = select_random(data, cfg.ipc, cfg.seed)
        ds.manifest |= _manifest(cfg, teacher_meta, rt, time.perf_counter() - t0, [])
        return ds
    if strategy.barycenter and stats is None:
        raise ValueError(f"method {cfg.method!r} needs class statistics")
    if stats is not None and list(stats.class_names) != list(data.class_names):
        raise GeodistillError("class statistics were computed for different classes than the dataset")
    check_batch_fits(
        teacher,
        data.image_shape,
        min(cfg.batch_classes, data.num_classes) * cfg.ipc,
        rt.device,
        cfg.max_memory,
        what=f"{cfg.method} synthesis",
        hint="lower distill.batch_classes (classes optimized together)",
    )
    teacher.eval()
    req = [p.requires_grad for p in teacher.parameters()]
    teacher.requires_grad_(False)
    groups = class_groups(data.num_classes, cfg.batch_classes)
    done: dict[int, Group] = dict(completed or {})
    mine = shard([i for i in range(len(groups)) if i not in done])
    try:
        for gi in mine:
            classes = groups[gi]
            plans = [plan_class(c, data, stats, cfg, strategy) for c in classes]
            group = optimize_group(
                teacher, classes, plans, stats, cfg, strategy, rt, hflip=data.hflip, log=log
            )
            done[gi] = group
            if on_group is not None:
                on_group(gi, group)
    finally:
        for p, r in zip(teacher.parameters(), req):
            p.requires_grad_(r)
    for part in all_gather_objects({k: v for k, v in done.items() if k in mine}):
        done.update(part)
    ordered = [done[i] for i in range(len(groups))]
    images = torch.cat([gr["images"] for gr in ordered])
    labels = torch.arange(data.num_classes).repeat_interleave(cfg.ipc)
    weights = torch.cat([gr["weights"] for gr in ordered])
    timing = [
        {
            "classes": gr["classes"],
            "seconds": gr["seconds"],
            "barycenter_seconds": gr["barycenter_seconds"],
            "final_loss": gr["final_loss"],
        }
        for gr in ordered
    ]
    return DistilledSet(
        images,
        labels,
        weights,
        list(data.class_names),
        _manifest(cfg, teacher_meta, rt, time.perf_counter() - t0, timing),
    )


def _manifest(
    cfg: DistillConfig, teacher_meta: dict | None, rt: Runtime, seconds: float, groups: list
) -> dict:
    tm = teacher_meta or {}
    return {
        "method": cfg.method,
        "ipc": cfg.ipc,
        "config": asdict(cfg),
        "teacher": {
            "sha256": tm.get("sha256"),
            "arch": tm.get("spec", {}).get("name"),
            "top1": tm.get("top1"),
            "regularizer": tm.get("squeeze", {}).get("regularizer"),
        },
        "seconds": seconds,
        "groups": groups,
        "seed": cfg.seed,
        "versions": versions(),
        "device": device_name(rt.device),
    }
