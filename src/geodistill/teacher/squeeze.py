"""The squeeze loop: SGD/AdamW with a per-step cosine schedule, standard augmentation, an
optional regularizer, torchrun-aware, resumable at epoch granularity."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import SqueezeConfig
from ..data import ClassData, train_augment
from ..distributed import current
from ..evaluate.metrics import accuracy
from ..models import Classifier, create_model
from ..optim import cosine, make_optimizer
from ..runtime import Runtime, generator
from .regularizers import objective


@dataclass
class TrainState:
    """What a resumed run needs: the finished epochs, weights and optimizer state."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    history: list[dict] = field(default_factory=list)


@dataclass
class TeacherResult:
    model: Classifier
    top1: float
    top5: float
    history: list[dict]
    seconds: float
    h: float = 0.0  # the curvature step used, in normalized input units (0 when unused)

    @property
    def seconds_per_epoch(self) -> float:
        times = [h["seconds"] for h in self.history]
        return sum(times) / len(times) if times else 0.0


def build_teacher(data: ClassData, cfg: SqueezeConfig) -> Classifier:
    mean, std = data.channel_stats()
    if cfg.pretrained:  # ImageNet weights expect ImageNet normalization
        mean, std = [0.485, 0.456, 0.406][: data.image_shape[0]], [0.229, 0.224, 0.225][: data.image_shape[0]]
    return create_model(
        cfg.arch,
        num_classes=data.num_classes,
        in_chans=data.image_shape[0],
        image_size=data.image_shape[-1],
        mean=mean,
        std=std,
        pretrained=cfg.pretrained,
        seed=cfg.seed,
        **cfg.arch_kwargs,
    )


def train_teacher(
    data: ClassData,
    cfg: SqueezeConfig,
    rt: Runtime,
    *,
    start: TrainState | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> TeacherResult:
    """Train a teacher classifier on ``data.x_train``; return it with its test accuracy.

    Epoch ``e`` draws its order and augmentation from seed ``(cfg.seed, e)``, so a run resumed
    from ``start`` gives the same weights as an uninterrupted one. ``on_epoch`` receives the
    state after every epoch (the CLI saves it). Under torchrun each rank trains on its shard
    of every epoch and gradients are averaged (DDP).
    """
    d = current()
    model = build_teacher(data, cfg)
    if cfg.init_checkpoint:
        from ..models import load_checkpoint

        init, _ = load_checkpoint(
            cfg.init_checkpoint, class_names=data.class_names, arch=cfg.arch, image_shape=data.image_shape
        )
        model.load_state_dict(init.state_dict())
    model = rt.prepare(model)
    net: nn.Module = model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.cuda else None)
    opt = make_optimizer(net.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    n = len(data.y_train)
    per_rank = n // d.world
    steps_per_epoch = max(1, per_rank // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine(s, total, warmup=min(steps_per_epoch, total // 20))
    )
    history: list[dict] = []
    first = 0
    if start is not None:
        model.load_state_dict(start.model)
        opt.load_state_dict(start.optimizer)
        first, history = start.epoch, list(start.history)
        with warnings.catch_warnings():  # fast-forwarding the schedule, no optimizer step is due
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for _ in range(first * steps_per_epoch):
                sched.step()
    h = cfg.reg_h if "curvature" in cfg.regularizer else 0.0
    t_start = time.perf_counter()
    for epoch in range(first, cfg.epochs):
        t0 = time.perf_counter()
        g = generator(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)[d.rank * per_rank : (d.rank + 1) * per_rank]
        net.train()
        tot_loss = tot_reg = correct = seen = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = data.float(data.x_train[idx]).to(rt.device, non_blocking=True)
            y = data.y_train[idx].to(rt.device, non_blocking=True)
            x = train_augment(x, hflip=data.hflip, generator=g, kind=cfg.augment)
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with rt.autocast():
                loss, logits, parts = objective(
                    net,
                    x,
                    y,
                    cfg.regularizer,
                    lam=cfg.reg_lambda,
                    h=h,
                    eps=cfg.reg_eps,
                    label_smoothing=cfg.label_smoothing,
                    generator=g,
                    fraction=cfg.reg_fraction,
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(y)
            tot_reg += parts.get("reg", 0.0) * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        rec = {
            "epoch": epoch + 1,
            "loss": tot_loss / seen,
            "train_top1": correct / seen,
            "seconds": time.perf_counter() - t0,
        }
        if "reg" in parts:  # the penalty's mean value, before its weight λ (not for fgsm/pgd)
            rec["reg"] = tot_reg / seen
        history.append(rec)
        log(
            f"epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f} train {rec['train_top1']:.3f} "
            + (f"reg {rec['reg']:.4g} " if "reg" in rec else "")
            + f"({rec['seconds']:.1f}s)"
        )
        if on_epoch is not None:
            on_epoch(TrainState(epoch + 1, model.state_dict(), opt.state_dict(), history))
    model.eval()
    top1, top5 = accuracy(model, data.x_test, data.y_test, rt, to_float=data.float)
    return TeacherResult(model, top1, top5, history, time.perf_counter() - t_start, h)
