"""Stage runners that read and write artifacts: what the CLI calls. Each stage can run alone
(``squeeze``, ``distill``, ``evaluate``) or chained (``run_pipeline``); with ``resume`` a
finished artifact or epoch is loaded instead of recomputed."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from .config import (
    DataConfig,
    DistillConfig,
    EvalConfig,
    RunConfig,
    SqueezeConfig,
    from_dict,
    save_config,
    to_dict,
)
from .data import ClassData, load_dataset
from .data.sources import default_cache_dir
from .distilled import DistilledSet
from .distributed import barrier, current
from .evaluate import attack_scores, evaluate_distilled, sanity_flags
from .files import GeodistillError, load_tensors, read_json, save_tensors, write_json
from .models import Classifier, load_checkpoint, save_checkpoint
from .runtime import Runtime, device_name, versions
from .stats import ClassStats, compute_class_stats
from .synth import distill, get_strategy
from .teacher import TrainState, train_teacher

Log = Callable[[str], None]


def load_data(cfg: DataConfig) -> ClassData:
    return load_dataset(
        cfg.source,
        image_size=cfg.image_size,
        skip_bad_images=cfg.skip_bad_images,
        cache_dir=default_cache_dir() if cfg.cache else None,
    )


# --- squeeze -------------------------------------------------------------------------------


def _save_state(path: Path, st: TrainState, cfg: SqueezeConfig) -> None:
    opt = st.optimizer
    tensors = {f"model/{k}": v for k, v in st.model.items()}
    plain: dict = {}
    for idx, s in opt["state"].items():
        for k, v in s.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt/{idx}/{k}"] = v
            else:
                plain[f"{idx}/{k}"] = v
    save_tensors(
        path,
        tensors,
        {
            "epoch": st.epoch,
            "history": st.history,
            "param_groups": opt["param_groups"],
            "plain": plain,
            "squeeze": to_dict(cfg),
        },
    )


def _load_state(path: Path, cfg: SqueezeConfig) -> TrainState | None:
    """The saved training state, or ``None`` when it belongs to a different squeeze config."""
    t, meta = load_tensors(path)
    if meta.get("squeeze") != to_dict(cfg):
        return None
    state: dict = {}
    for key, v in t.items():
        if key.startswith("opt/"):
            _, idx, k = key.split("/", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta["plain"].items():
        idx, k = key.split("/", 1)
        state.setdefault(int(idx), {})[k] = v
    model = {k[6:]: v for k, v in t.items() if k.startswith("model/")}
    return TrainState(
        meta["epoch"], model, {"state": state, "param_groups": meta["param_groups"]}, meta["history"]
    )


def squeeze_stage(
    data: ClassData, cfg: SqueezeConfig, rt: Runtime, out: Path, *, resume: bool = False, log: Log = print
) -> tuple[Classifier, dict]:
    """Train a teacher (or load ``cfg.checkpoint``) and save it to ``out`` (safetensors)."""
    if cfg.checkpoint:
        model, meta = load_checkpoint(
            cfg.checkpoint, class_names=data.class_names, image_shape=data.image_shape
        )
        return rt.prepare(model), meta
    if resume and out.exists():
        model, meta = load_checkpoint(out, class_names=data.class_names, image_shape=data.image_shape)
        if meta.get("squeeze") == to_dict(cfg):
            log(f"teacher: reusing {out} (top-1 {meta['top1']:.4f})")
            return rt.prepare(model), meta
        raise GeodistillError(
            f"{out}: exists but was trained with a different squeeze config; "
            "use another output path or --overwrite"
        )
    state_path = out.with_name(out.stem + ".state.safetensors")
    start = _load_state(state_path, cfg) if resume and state_path.exists() else None
    if start is not None:
        log(f"teacher: resuming after epoch {start.epoch} from {state_path}")
    d = current()
    on_epoch = (lambda st: _save_state(state_path, st, cfg)) if d.main else None
    res = train_teacher(data, cfg, rt, start=start, on_epoch=on_epoch, log=log)
    meta = {
        "class_names": data.class_names,
        "dataset": data.summary(),
        "top1": res.top1,
        "top5": res.top5,
        "squeeze": to_dict(cfg),
        "epoch": cfg.epochs,
        "history": res.history,
        "h": res.h,
        "seconds": res.seconds,
        "seconds_per_epoch": res.seconds_per_epoch,
        "versions": versions(),
        "device": device_name(rt.device),
    }
    if d.main:
        meta["sha256"] = save_checkpoint(out, res.model, meta)
        state_path.unlink(missing_ok=True)
    barrier()
    log(f"teacher {cfg.arch}: top-1 {res.top1:.4f} top-5 {res.top5:.4f} ({res.seconds:.1f}s)")
    return res.model, meta


# --- distill -------------------------------------------------------------------------------


def stats_stage(
    teacher: Classifier, tmeta: dict, data: ClassData, rt: Runtime, path: Path | None, *, resume: bool = False
) -> ClassStats:
    """Class statistics of ``teacher``; with ``resume``, reused only if saved for the same teacher."""
    sha = tmeta.get("sha256")
    if path is not None and resume and path.exists():
        st = ClassStats.load(path)
        if (
            st.teacher_sha256 == sha
            and st.class_names == list(data.class_names)
            and len(st.labels) == len(data.y_train)
        ):
            return st
    st = compute_class_stats(teacher, data, rt)
    st.teacher_sha256 = sha
    if path is not None and current().main:
        st.save(path)
    return st


def distill_stage(
    teacher: Classifier,
    teacher_meta: dict,
    data: ClassData,
    cfg: DistillConfig,
    rt: Runtime,
    out: Path,
    *,
    stats: ClassStats | None = None,
    resume: bool = False,
    log: Log = print,
) -> DistilledSet:
    """Distill into ``out`` (PNG folder + safetensors + manifest), one part file per finished
    class group so that ``resume`` never recomputes a finished class."""
    if resume and (out / "distilled.safetensors").exists():
        ds = DistilledSet.load(out)
        if ds.manifest.get("config") == to_dict(cfg) and ds.manifest.get("teacher", {}).get(
            "sha256"
        ) == teacher_meta.get("sha256"):
            log(f"{cfg.method}: reusing {out}")
            return ds
    strategy = get_strategy(cfg.method)
    data.check_ipc(cfg.ipc)
    if stats is None and strategy.synthesize and strategy.barycenter:
        stats = compute_class_stats(teacher, data, rt)
    parts = out / "parts"
    key = {"config": to_dict(cfg), "teacher": teacher_meta.get("sha256")}
    completed = {}
    if resume and parts.exists():
        for f in sorted(parts.glob("group_*.safetensors")):
            t, meta = load_tensors(f)
            if meta.get("key") == key:
                completed[meta["index"]] = {**meta["group"], "images": t["images"], "weights": t["weights"]}
        if completed:
            log(f"{cfg.method}: resuming, {len(completed)} class group(s) already done")

    def on_group(i: int, group: dict) -> None:
        meta = {k: v for k, v in group.items() if k not in ("images", "weights")}
        save_tensors(
            parts / f"group_{i:05d}.safetensors",
            {"images": group["images"], "weights": group["weights"]},
            {"index": i, "key": key, "group": meta},
        )

    log(f"{cfg.method}: distilling {data.num_classes} classes x IPC {cfg.ipc}")
    ds = distill(
        teacher,
        data,
        stats,
        cfg,
        rt,
        teacher_meta=teacher_meta,
        completed=completed,
        on_group=on_group,
        log=lambda s: log(f"  {s}"),
    )
    ds.manifest["dataset"] = data.summary()
    if current().main:
        ds.save(out)
        for f in parts.glob("group_*.safetensors"):
            f.unlink()
        if parts.exists():
            parts.rmdir()
    barrier()
    return ds


# --- the whole pipeline --------------------------------------------------------------------


def evaluate_resumable(
    ds: DistilledSet,
    teacher: Classifier,
    tmeta: dict,
    data: ClassData,
    cfg: EvalConfig,
    rt: Runtime,
    folder: Path,
    *,
    resume: bool = False,
    log: Log = print,
):
    """Evaluate, recording each finished student in ``folder/students.json`` so that a resumed
    run does not retrain it (entries are keyed by the eval config, teacher and images)."""
    path = folder / "students.json"
    key = {
        "evaluate": to_dict(cfg),
        "teacher": tmeta.get("sha256"),
        "images": hashlib.sha256(ds.images.numpy().tobytes()).hexdigest(),
    }
    runs: list[dict] = []
    if resume and path.exists():
        saved = read_json(path)
        if saved.get("key") == key:
            runs = saved["runs"]
            if runs:
                log(f"  resuming evaluation: seeds {[r['seed'] for r in runs]} already done")

    def on_student(_model, run):
        runs.append(run)
        if current().main:
            write_json(path, {"key": key, "runs": runs})

    return evaluate_distilled(
        ds, teacher, data, cfg, rt, log=log, on_student=on_student, completed=list(runs)
    )


def parse_method(name: str) -> tuple[str, str]:
    """``"wmdd+guard"`` -> ``("wmdd", "guard")``: the method and its teacher variant."""
    base, _, variant = name.partition("+")
    get_strategy(base)
    if variant not in ("", "guard"):
        raise GeodistillError(f"method {name!r}: unknown variant {variant!r}; use <method> or <method>+guard")
    return base, variant


def teacher_entry(model: Classifier, meta: dict, data: ClassData, cfg: EvalConfig, rt: Runtime) -> dict:
    entry = {
        "arch": model.arch,
        "top1": meta["top1"],
        "top5": meta.get("top5"),
        "sha256": meta.get("sha256"),
        "regularizer": meta.get("squeeze", {}).get("regularizer", "none"),
        "seconds_per_epoch": meta.get("seconds_per_epoch"),
    }
    if cfg.attacks:
        entry["robust"] = attack_scores(model, data, cfg, rt)
    return entry


def run_pipeline(cfg: RunConfig, out: Path, rt: Runtime, *, resume: bool = False, log: Log = print) -> dict:
    """Data → teacher(s) → class stats → one distilled set per method → scores → report.

    A method ``"<m>+guard"`` runs method ``m`` on a second teacher trained with the squeeze
    config overridden by ``cfg.guard`` (GUARD's curvature regularizer by default); its
    students are relabelled by that teacher too.
    """
    from .report import print_table, write_report

    t0 = time.perf_counter()
    d = current()
    if d.main:
        save_config(cfg, out / "config.yaml")
    parsed = {m: parse_method(m) for m in cfg.methods}
    data = load_data(cfg.data)
    data.check_ipc(cfg.distill.ipc)
    log(
        f"data {data.name}: {len(data.y_train)} train / {len(data.y_test)} test, "
        f"{data.num_classes} classes, images {data.image_shape}"
    )
    teachers = {}
    variants = {v for _, v in parsed.values()}
    for variant in sorted(variants):
        scfg = cfg.squeeze
        if variant == "guard":
            scfg = from_dict(
                SqueezeConfig, {**to_dict(cfg.squeeze), "checkpoint": None, **cfg.guard}, "guard"
            )
        suffix = f"_{variant}" if variant else ""
        log(f"teacher{suffix or ''}: regularizer {scfg.regularizer}")
        model, meta = squeeze_stage(
            data, scfg, rt, out / f"teacher{suffix}.safetensors", resume=resume, log=log
        )
        st = stats_stage(model, meta, data, rt, out / f"stats{suffix}.safetensors", resume=resume)
        teachers[variant] = (model, meta, st)
    methods, sets, flags = {}, {}, []
    for m, (base, variant) in parsed.items():
        teacher, tmeta, stats = teachers[variant]
        dcfg = DistillConfig(**{**asdict(cfg.distill), "method": base})
        t1 = time.perf_counter()
        ds = distill_stage(
            teacher, tmeta, data, dcfg, rt, out / m.replace("+", "_"), stats=stats, resume=resume, log=log
        )
        t_distill = time.perf_counter() - t1
        log(f"{m}: evaluating {cfg.evaluate.seeds} student(s)")
        score = evaluate_resumable(
            ds, teacher, tmeta, data, cfg.evaluate, rt, out / m.replace("+", "_"), resume=resume, log=log
        )
        methods[m] = {
            **score.as_dict(),
            "seconds": t_distill + score.seconds,
            "distill_seconds": t_distill,
            "eval_seconds": score.seconds,
        }
        flags += [f"{m}, {f}" for f in score.flags]
        sets[m] = ds
    metrics = {
        "dataset": data.name,
        "num_classes": data.num_classes,
        "ipc": cfg.distill.ipc,
        "teacher": teacher_entry(*teachers[""][:2], data, cfg.evaluate, rt) if "" in teachers else None,
        "methods": methods,
    }
    if "guard" in teachers:
        metrics["teacher_guard"] = teacher_entry(*teachers["guard"][:2], data, cfg.evaluate, rt)
    if metrics["teacher"] is None:
        metrics["teacher"] = metrics["teacher_guard"]
    for key in ("teacher", "teacher_guard"):
        if metrics.get(key) and "robust" in metrics[key]:
            flags += sanity_flags(metrics[key]["robust"], key)
    metrics |= {
        "flags": flags,
        "seconds": time.perf_counter() - t0,
        "device": device_name(rt.device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
        "config": to_dict(cfg),
    }
    if d.main:
        write_report(out, metrics, sets)
        print_table(metrics)
    return metrics


def evaluate_stage(
    teacher: Classifier,
    tmeta: dict,
    data: ClassData,
    sets: dict[str, DistilledSet],
    cfg: EvalConfig,
    rt: Runtime,
    out: Path,
    *,
    log: Log = print,
) -> dict:
    """Score already distilled sets and write metrics.json / report.md into ``out``."""
    from .report import print_table, write_report

    methods, flags = {}, []
    for name, ds in sets.items():
        log(f"{name}: evaluating {cfg.seeds} student(s)")
        score = evaluate_distilled(ds, teacher, data, cfg, rt, log=log)
        methods[name] = score.as_dict()
        flags += [f"{name}, {f}" for f in score.flags]
    tentry = teacher_entry(teacher, tmeta, data, cfg, rt)
    flags += sanity_flags(tentry.get("robust", {}), "teacher")
    metrics = {
        "dataset": data.name,
        "num_classes": data.num_classes,
        "ipc": max(ds.ipc for ds in sets.values()),
        "teacher": tentry,
        "methods": methods,
        "flags": flags,
        "device": device_name(rt.device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
        "evaluate": to_dict(cfg),
    }
    if current().main:
        write_report(out, metrics, sets)
        print_table(metrics)
    return metrics
