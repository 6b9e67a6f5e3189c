"""The shared synthesis loop and the ``distill`` stage function.

Synthesis: Adam on the pixels of many classes at once, in the teacher's normalized units
``u = (x - mean) / std`` (as the authors optimize), cosine LR, random-resized-crop + flip +
random shift, loss = ``r_ce``·CE + ``r_feat``·barycenter term + ``r_bn``·BN statistics.
Selection methods and RDED return real images (or crops) through the same function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F

from ..config import DistillConfig
from ..data import ClassData, random_resized_crop, roll_jitter
from ..distilled import DistilledSet, uniform_weights
from ..distributed import all_gather_objects, shard
from ..files import GeodistillError
from ..models import Classifier
from ..progress import progress
from ..resources import check_batch_fits
from ..runtime import Runtime, device_name, generator, versions
from ..stats import ClassStats
from .losses import BNMatcher, feature_matching, ot_pairing
from .select import SELECTORS, select_kmeans
from .strategies import Resolved, Strategy, get_strategy, resolve

Group = dict  # {"images": [G*ipc, C, H, W], "weights": [G*ipc], "seconds": float, ...}


def class_groups(num_classes: int, batch_classes: int) -> list[list[int]]:
    return [list(range(s, min(s + batch_classes, num_classes))) for s in range(0, num_classes, batch_classes)]


def class_seed(cfg: DistillConfig, c: int) -> int:
    return cfg.seed * 1_000_003 + c


def needs_stats(s: Strategy) -> bool:
    """Whether a method reads the teacher's class statistics (features or BN moments)."""
    return s.barycenter or (s.bn == "class" and s.synthesize) or s.select in ("herding", "kcenter")


def select(data: ClassData, stats: ClassStats | None, cfg: DistillConfig, s: Strategy) -> DistilledSet:
    """A selection baseline: ``cfg.ipc`` real training images per class (``synth/select.py``)."""
    imgs, labels, weights, picked = [], [], [], []
    for c in range(data.num_classes):
        idx = data.class_indices(c)
        feats = stats.class_features(c) if stats is not None else torch.zeros(len(idx), 1)
        w = torch.full((cfg.ipc,), 1 / cfg.ipc)
        if s.select == "kmeans":
            local, _, w = select_kmeans(
                feats, cfg.ipc, class_seed(cfg, c), barycenter=cfg.barycenter, weighted=cfg.weighted
            )
        else:
            local = SELECTORS[s.select](feats, cfg.ipc, class_seed(cfg, c))
        imgs.append(data.float(data.x_train[idx[local]]))
        labels.append(torch.full((cfg.ipc,), c))
        weights.append(w)
        picked.append(idx[local].tolist())
    manifest = {"method": s.name, "ipc": cfg.ipc, "seed": cfg.seed, "train_indices": picked}
    return DistilledSet(
        torch.cat(imgs), torch.cat(labels), torch.cat(weights), list(data.class_names), manifest
    )


def select_random(data: ClassData, ipc: int, seed: int) -> DistilledSet:
    """The ``random`` baseline: ``ipc`` random real training images per class."""
    data.check_ipc(ipc)
    return select(data, None, DistillConfig(method="random", ipc=ipc, seed=seed), get_strategy("random"))


def plan_class(
    c: int, data: ClassData, stats: ClassStats | None, cfg: DistillConfig, s: Strategy, res: Resolved
) -> dict:
    """Atoms, weights, feature scale and initial images (pixels in [0, 1]) for class ``c``."""
    seed = class_seed(cfg, c)
    idx = data.class_indices(c)
    out: dict = {"weights": torch.full((cfg.ipc,), 1 / cfg.ipc)}
    if s.barycenter:
        feats = stats.class_features(c)
        t0 = time.perf_counter()
        local, atoms, weights = select_kmeans(
            feats, cfg.ipc, seed, barycenter=cfg.barycenter, weighted=cfg.weighted
        )
        spread = (feats.double() - feats.double().mean(0)).pow(2).sum(1).mean().float().clamp_min(1e-12)
        out |= {
            "atoms": atoms,
            "weights": weights,
            "scale": spread.expand(cfg.ipc).clone(),
            "barycenter_seconds": time.perf_counter() - t0,
        }
        if res.init == "real":  # WMDD's init: the distinct real images nearest to the atoms
            out["init"] = data.float(data.x_train[idx[local]])
    if "init" not in out:
        if res.init in ("real", "random"):
            local = SELECTORS["random"](torch.zeros(len(idx), 1), cfg.ipc, seed)
            out["init"] = data.float(data.x_train[idx[local]])
        else:  # the authors' noise: N(0, 1) in normalized units, i.e. mean + std * N(0, 1) pixels
            out["init"] = torch.randn((cfg.ipc, *data.image_shape), generator=generator(seed))
            out["init_normalized"] = True
    return out


def optimize_group(
    teacher: Classifier,
    classes: list[int],
    plans: list[dict],
    stats: ClassStats | None,
    cfg: DistillConfig,
    s: Strategy,
    res: Resolved,
    rt: Runtime,
    *,
    hflip: bool,
    log: Callable[[str], None] = lambda s: None,
) -> Group:
    """Optimize the images of ``classes`` together; returns their images and weights."""
    t0 = time.perf_counter()
    g = generator(cfg.seed * 1_000_003 + 7919 * classes[0] + 1, rt.device if rt.cuda else "cpu")
    mean, std = teacher.mean, teacher.std
    u0 = [
        p["init"].to(rt.device) if p.get("init_normalized") else teacher.normalize(p["init"].to(rt.device))
        for p in plans
    ]
    lo, hi = (0 - mean) / std, (1 - mean) / std
    u = torch.max(torch.min(torch.cat(u0), hi), lo).detach().requires_grad_(True)
    y = torch.tensor(classes, device=rt.device).repeat_interleave(cfg.ipc)
    atoms = scale = None
    if s.barycenter and res.r_feat > 0:
        atoms = torch.cat([p["atoms"] for p in plans]).to(rt.device)
        scale = torch.cat([p["scale"] for p in plans]).to(rt.device)
    jitter = int(cfg.jitter * u.shape[-1])  # the authors' 32 px at 224 -> 4 px at 32
    opt = torch.optim.Adam([u], lr=res.lr, betas=(0.5, 0.9), eps=1e-8)
    bn = None
    if cfg.r_bn > 0 and cfg.iterations > 0:
        bn = BNMatcher(
            teacher,
            s.bn,
            bn_mean=stats.bn_mean if stats is not None else None,
            bn_var=stats.bn_var if stats is not None else None,
            first_multiplier=res.first_bn,
        )
        bn.classes = torch.tensor(classes, device=rt.device)
    parts: dict[str, float] = {}

    def step(it: int) -> torch.Tensor:
        nonlocal parts
        for group in opt.param_groups:
            group["lr"] = res.lr * 0.5 * (1 + math.cos(math.pi * it / cfg.iterations))
        ua = u
        if res.augment == "rrc":
            ua = random_resized_crop(ua, scale=tuple(cfg.crop_scale), hflip=hflip, generator=g)
        ua = roll_jitter(ua, jitter, generator=g)
        with rt.autocast():
            feats = teacher.features(ua, normalized=True)
            logits = teacher.head(feats)
        loss = res.r_ce * F.cross_entropy(logits.float(), y)
        parts = {"ce": float(loss.detach())}
        if atoms is not None:
            f = feats
            if cfg.feat_view == "clean":  # the whole images, as the atoms were computed
                if bn is not None:
                    bn.enabled = False
                with rt.autocast():
                    f = teacher.features(u, normalized=True)
                if bn is not None:
                    bn.enabled = True
            a = atoms[ot_pairing(f, atoms, cfg.ipc)] if cfg.pairing == "ot" else atoms
            fm = feature_matching(f.float(), a, scale, cfg.feat_loss)
            weight = res.r_feat * (
                0.5 * (1 + math.cos(math.pi * it / cfg.iterations)) if cfg.feat_anneal else 1.0
            )
            loss = loss + weight * fm
            parts["feat"] = float(fm.detach())
        if bn is not None:
            bl = bn.pop()
            loss = loss + cfg.r_bn * bl
            parts["bn"] = float(bl.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            u.copy_(torch.max(torch.min(u, hi), lo))
        return loss

    try:
        with progress(
            f"{cfg.method} classes {classes[0]}-{classes[-1]}", cfg.iterations, log, unit="it"
        ) as bar:
            for it in range(cfg.iterations):
                step(it)
                bar.advance(1)
    finally:
        if bn is not None:
            bn.remove()
    secs = time.perf_counter() - t0
    log(
        f"classes {classes[0]}-{classes[-1]}: "
        + " ".join(f"{k} {v:.4f}" for k, v in parts.items())
        + f" ({secs:.1f}s)"
    )
    with torch.no_grad():
        images = (u * std + mean).clamp(0, 1).detach().cpu()
    return {
        "classes": classes,
        "images": images,
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
    s = get_strategy(cfg.method)
    res = resolve(cfg, s)
    data.check_ipc(cfg.ipc)
    t0 = time.perf_counter()
    if needs_stats(s) and stats is None:
        raise GeodistillError(f"method {cfg.method!r} needs the teacher's class statistics")
    if stats is not None and list(stats.class_names) != list(data.class_names):
        raise GeodistillError("class statistics were computed for different classes than the dataset")
    if stats is not None and len(stats.labels) != len(data.y_train):
        raise GeodistillError(
            f"class statistics cover {len(stats.labels)} training images, the dataset has "
            f"{len(data.y_train)} (computed on another split?)"
        )
    if s.kind == "select":
        ds = select(data, stats, cfg, s)
        ds.manifest |= _manifest(cfg, res, teacher_meta, rt, time.perf_counter() - t0, [])
        return ds
    if s.kind == "rded":
        from .rded import rded

        ds = rded(teacher, data, cfg, rt)
        ds.manifest |= _manifest(cfg, res, teacher_meta, rt, time.perf_counter() - t0, [])
        return ds
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
            plans = [plan_class(c, data, stats, cfg, s, res) for c in classes]
            group = optimize_group(teacher, classes, plans, stats, cfg, s, res, rt, hflip=data.hflip, log=log)
            done[gi] = group
            if on_group is not None:
                on_group(gi, group)
    finally:
        for p, r in zip(teacher.parameters(), req):
            p.requires_grad_(r)
    for part in all_gather_objects({k: v for k, v in done.items() if k in mine}):
        done.update(part)
    ordered = [done[i] for i in range(len(groups))]
    timing = [
        {k: gr[k] for k in ("classes", "seconds", "barycenter_seconds", "final_loss")} for gr in ordered
    ]
    return DistilledSet(
        torch.cat([gr["images"] for gr in ordered]),
        torch.arange(data.num_classes).repeat_interleave(cfg.ipc),
        torch.cat([gr["weights"] for gr in ordered]),
        list(data.class_names),
        _manifest(cfg, res, teacher_meta, rt, time.perf_counter() - t0, timing),
    )


def _manifest(
    cfg: DistillConfig, res: Resolved, teacher_meta: dict | None, rt: Runtime, seconds: float, groups: list
) -> dict:
    tm = teacher_meta or {}
    return {
        "method": cfg.method,
        "ipc": cfg.ipc,
        "config": asdict(cfg),
        "resolved": asdict(res),
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


__all__ = ["distill", "select", "select_random", "uniform_weights"]
