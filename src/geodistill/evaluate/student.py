"""Relabel and evaluate: train students on a distilled set with knowledge distillation from
the teacher (soft labels computed online on the same augmented view), report test accuracy."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..config import EvalConfig
from ..data import ClassData, cutmix, random_resized_crop
from ..distilled import DistilledSet
from ..distributed import all_gather_objects, current, shard
from ..files import GeodistillError
from ..models import Classifier, create_model
from ..optim import cosine, make_optimizer
from ..progress import progress
from ..resources import check_batch_fits
from ..runtime import Runtime, generator
from .metrics import accuracy
from .robust import attack_keys, fixed_subset, robust_accuracy, sanity_flags


@dataclass
class MethodScore:
    """Mean/std over student seeds; ``runs`` has one dict per seed."""

    top1: float
    top1_std: float
    top5: float
    top5_std: float
    seeds: int
    seconds: float
    runs: list[dict] = field(default_factory=list)
    robust: dict[str, float] = field(default_factory=dict)  # "<attack>@<eps>" -> mean accuracy
    flags: list[str] = field(default_factory=list)  # sanity-check violations

    def as_dict(self) -> dict:
        """The fields by name; ``robust`` and ``flags`` only where attacks ran."""
        d = asdict(self)
        if not self.robust:
            del d["robust"], d["flags"]
        return d


def image_weights(ds: DistilledSet) -> torch.Tensor:
    """Per-image loss weights: barycenter weight x images in its class (uniform -> all 1)."""
    counts = torch.bincount(ds.labels, minlength=len(ds.class_names)).float()
    return ds.weights.float() * counts[ds.labels]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, shape ``[N]``."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student_logits / t, 1),
            F.log_softmax(teacher_logits / t, 1),
            reduction="none",
            log_target=True,
        ).sum(1)
        * t
        * t
    )


# Student learning rates per architecture from RDED (argument.py), used unless the config overrides
# them (evaluate.recipes); every other field keeps the run's value.
RECIPES: dict[str, dict] = {
    "mobilenet_v2": {"lr": 0.0025},
    "timm/efficientnet_b0": {"lr": 0.002},
    "timm/vgg11": {"lr": 0.0005},
}


def recipe_for(cfg: EvalConfig, arch: str) -> EvalConfig:
    """The evaluation config for student ``arch``: ``cfg`` with the architecture's recipe applied."""
    from ..config import from_dict, to_dict

    over = {**RECIPES.get(arch, {}), **(cfg.recipes.get(arch) or {})}
    if not over:
        return cfg
    return from_dict(EvalConfig, {**to_dict(cfg), **over}, f"evaluate.recipes.{arch}")


def _batches(n: int, per_epoch: int, epochs: int, g: torch.Generator):
    """Every epoch: a fresh permutation of all ``n`` images cut into ``per_epoch`` near-equal batches."""
    for _ in range(epochs):
        yield from torch.randperm(n, generator=g).tensor_split(per_epoch)


def make_student(teacher: Classifier, arch: str, cfg: EvalConfig, seed: int) -> Classifier:
    """A fresh student ``arch`` for the teacher's data (same classes, input size, normalization)."""
    spec = {k: v for k, v in teacher.spec.items() if k != "name"}
    if arch != teacher.arch:  # keep only what describes the data, not the teacher's architecture
        spec = {k: spec[k] for k in ("num_classes", "in_chans", "image_size", "mean", "std")}
    return create_model(arch, **{**spec, **cfg.arch_kwargs}, seed=seed)


def train_student(
    ds: DistilledSet,
    teacher: Classifier,
    data: ClassData,
    cfg: EvalConfig,
    rt: Runtime,
    seed: int,
    arch: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[Classifier, dict]:
    """Train one student with seed ``seed`` by KD from ``teacher`` on ``ds``; score it on
    ``cfg.split``. Every epoch visits every image once, in ``ceil(n / batch)`` near-equal batches;
    with ``cfg.views`` k > 1 each batch holds k independently augmented copies of its images.

    Returns the student and ``{"seed", "arch", "top1", "top5", "steps", "epochs", "batch_size",
    "views", "seconds"}``.
    """
    t0 = time.perf_counter()
    arch = arch or teacher.arch
    cfg = recipe_for(cfg, arch)
    student = rt.prepare(make_student(teacher, arch, cfg, seed))
    teacher.eval()
    g = generator(seed)
    images = ds.images.float()
    weights = image_weights(ds) if cfg.weighted else torch.ones(len(ds.labels))
    n = len(images)
    bs = min(cfg.batch_size, n)
    per_epoch = math.ceil(n / bs)
    steps = per_epoch * cfg.epochs
    opt = make_optimizer(student.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, steps))
    student.train()
    fwd_student, fwd_teacher = rt.compiled(student), rt.compiled(teacher)
    with progress(f"student {arch} seed {seed}", steps, log, unit="step", lines=1) as bar:
        for idx in _batches(n, per_epoch, cfg.epochs, g):
            idx = idx.repeat(cfg.views)  # crops, flips and CutMix are drawn per copy below
            x = images[idx].to(rt.device)
            w = weights[idx].to(rt.device)
            x = random_resized_crop(x, scale=tuple(cfg.crop_scale), hflip=data.hflip, generator=g)
            if cfg.cutmix > 0 and len(idx) > 1:
                x, perm, lam = cutmix(x, alpha=cfg.cutmix, generator=g)
                w = lam * w + (1 - lam) * w[perm]
            with torch.no_grad(), rt.autocast():
                t_logits = fwd_teacher(x).float()
            with rt.autocast():
                s_logits = fwd_student(x).float()
            loss = (w * kd_loss(s_logits, t_logits, cfg.temperature)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.advance(1)
    student.eval()
    xs, ys = data.split(cfg.split)
    top1, top5 = accuracy(student, xs, ys, rt, to_float=data.float)
    run = {"seed": seed, "arch": arch, "top1": top1, "top5": top5, "split": cfg.split}
    run |= {
        "steps": steps,
        "epochs": cfg.epochs,
        "batch_size": bs,
        "views": cfg.views,
        "seconds": time.perf_counter() - t0,
    }
    return student, run


def evaluate_distilled(
    ds: DistilledSet,
    teacher: Classifier,
    data: ClassData,
    cfg: EvalConfig,
    rt: Runtime,
    *,
    arch: str | None = None,
    log: Callable[[str], None] = lambda s: None,
    on_student: Callable[[Classifier, dict], None] | None = None,
    completed: list[dict] | None = None,
    restore: Callable[[dict], Classifier | None] | None = None,
) -> MethodScore:
    """Train ``cfg.seeds`` students of ``arch`` (default: the teacher's), sharded across torchrun
    ranks; mean and std of their accuracy on ``cfg.split``.

    ``completed`` holds runs of a resumed evaluation (their seeds are not retrained). A completed
    run that lacks some of ``cfg.attacks``' scores gets them from its student as ``restore(run)``
    returns it (its saved weights), so that adding an attack does not retrain; where ``restore``
    returns None, the seed is trained again. ``on_student(model, run)`` is called as each new or
    newly scored student finishes.
    """
    if list(ds.class_names) != list(data.class_names):
        raise GeodistillError(
            f"distilled set classes {ds.class_names[:5]}... do not match "
            f"the dataset's {data.class_names[:5]}..."
        )
    check_batch_fits(
        teacher,
        data.image_shape,
        min(cfg.batch_size, len(ds.labels)) * cfg.views,
        rt.device,
        cfg.max_memory,
        what="student training",
        hint="lower evaluate.batch_size or evaluate.views",
        models=2,
    )
    t0 = time.perf_counter()
    done = {r["seed"]: dict(r) for r in completed or [] if cfg.seed <= r["seed"] < cfg.seed + cfg.seeds}
    wanted = asked_scores(cfg)
    rescore = {s for s, r in done.items() if not set(wanted) <= set(r.get("robust", {}))}
    runs = [r for s, r in done.items() if s not in rescore] if current().main else []
    for seed in shard([s for s in range(cfg.seed, cfg.seed + cfg.seeds) if s not in done or s in rescore]):
        student = restore(done[seed]) if seed in rescore and restore is not None else None
        if student is not None:
            run = done[seed]
            missing = set(wanted) - set(run.get("robust", {}))
            log(f"  student seed {seed}: restored from its saved weights for {len(missing)} missing score(s)")
        else:
            student, run = train_student(ds, teacher, data, cfg, rt, seed, arch, log=log)
            t1, t5, sec = run["top1"], run["top5"], run["seconds"]
            log(f"  student seed {seed}: top1 {t1:.4f} top5 {t5:.4f} ({sec:.1f}s)")
        if cfg.attacks:
            run["robust"] = complete_scores(student, data, cfg, rt, run.get("robust", {}), log=log)
            log("    " + " ".join(f"{k} {run['robust'][k]:.4f}" for k in wanted))
        if on_student is not None:
            on_student(student, run)  # with every score it has, also those this config does not ask for
        runs.append(run)
    runs = sorted((r for part in all_gather_objects(runs) for r in part), key=lambda r: r["seed"])
    runs = [wanted_scores(r, wanted) for r in runs]
    t1 = [r["top1"] for r in runs]
    t5 = [r["top5"] for r in runs]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    robust, flags = {}, []
    if cfg.attacks:
        for k in runs[0]["robust"]:
            robust[k] = statistics.mean(r["robust"][k] for r in runs)
        for r in runs:
            flags += sanity_flags(r["robust"], f"student seed {r['seed']}")
    return MethodScore(
        statistics.mean(t1),
        sd(t1),
        statistics.mean(t5),
        sd(t5),
        len(runs),
        time.perf_counter() - t0,
        runs,
        robust,
        flags,
    )


def asked_scores(cfg: EvalConfig) -> list[str]:
    """The score keys ``cfg`` asks for: ``"clean"`` and one per attack and radius (none without attacks)."""
    return ["clean", *attack_keys(cfg.attacks, cfg.eps)] if cfg.attacks else []


def complete_scores(
    model: Classifier,
    data: ClassData,
    cfg: EvalConfig,
    rt: Runtime,
    have: dict[str, float],
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """``have`` (scores from before, kept as they were) plus the ones ``cfg`` asks for that it
    lacks, attacked now on ``model``."""
    new = attack_scores(model, data, cfg, rt, log=log, only=set(asked_scores(cfg)) - set(have))
    return {**new, **have}


def wanted_scores(record: dict, wanted: list[str]) -> dict:
    """A copy of a student's or teacher's record whose ``robust`` holds just the ``wanted`` keys, in
    that order (no ``robust`` if none are wanted): a resumed record may hold more scores."""
    out = {k: v for k, v in record.items() if k != "robust"}
    return out | ({"robust": {k: record["robust"][k] for k in wanted}} if wanted else {})


def attack_scores(
    model: Classifier,
    data: ClassData,
    cfg: EvalConfig,
    rt: Runtime,
    log: Callable[[str], None] | None = None,
    only: set[str] | None = None,
) -> dict[str, float]:
    """Clean and robust accuracy on the seeded subset of ``cfg.attack_samples`` images of ``cfg.split``
    (with ``only``: just those keys' attacks, and clean)."""
    xs, ys = data.split(cfg.split)
    idx = fixed_subset(len(ys), cfg.attack_samples, cfg.seed)
    return robust_accuracy(
        model,
        data.float(xs[idx]),
        ys[idx],
        cfg.attacks,
        cfg.eps,
        rt,
        num_classes=data.num_classes,
        seed=cfg.seed,
        log=log,
        only=only,
    )
