"""Stage runners that read and write artifacts: what the CLI calls. Each stage can run alone
(``squeeze``, ``distill``, ``evaluate``) or chained (``run_pipeline``); with ``resume`` a
finished artifact or epoch is loaded instead of recomputed."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from .config import (
    DataConfig,
    DistillConfig,
    EvalConfig,
    RunConfig,
    SqueezeConfig,
    config_matches,
    from_dict,
    save_config,
    to_dict,
)
from .data import ClassData, load_dataset
from .data.sources import default_cache_dir
from .distilled import DistilledSet
from .distributed import barrier, current
from .evaluate import (
    ATTACK_CONFIG,
    accuracy,
    asked_scores,
    attack_scores,
    attack_versions,
    complete_scores,
    evaluate_distilled,
    sanity_flags,
    wanted_scores,
)
from .files import GeodistillError, load_tensors, read_json, save_tensors, write_json
from .models import Classifier, load_checkpoint, save_checkpoint
from .runtime import Runtime, device_name, versions
from .stats import ClassStats, compute_class_stats
from .synth import distill, get_strategy, needs_stats
from .teacher import TrainState, train_teacher

Log = Callable[[str], None]


def load_data(cfg: DataConfig) -> ClassData:
    return load_dataset(
        cfg.source,
        image_size=cfg.image_size,
        skip_bad_images=cfg.skip_bad_images,
        cache_dir=default_cache_dir() if cfg.cache else None,
        val_fraction=cfg.val_fraction,
        val_seed=cfg.val_seed,
    )


def teacher_scores_dir() -> Path:
    """Where teacher scores are kept across output folders (see :func:`teacher_entry`)."""
    return default_cache_dir() / "teacher-scores"


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
    if not config_matches(meta.get("squeeze"), cfg):
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


def check_teacher_split(path, meta: dict, data: ClassData) -> None:
    """Refuse a teacher trained on a train split that overlaps this run's validation split."""
    trained = (meta.get("dataset") or {}).get("val_split")
    if trained is not None and data.val_spec and trained != data.val_spec:
        raise GeodistillError(
            f"{path}: the teacher was trained with validation split {trained or 'none'}, this run holds out "
            f"{data.val_spec}; its training images would overlap the validation split (match "
            "data.val_fraction/val_seed to the teacher's)"
        )


def guard_config(cfg: RunConfig) -> SqueezeConfig:
    """The squeeze config of the ``+guard`` teacher: ``cfg.squeeze`` overridden by ``cfg.guard``."""
    return from_dict(SqueezeConfig, {**to_dict(cfg.squeeze), "checkpoint": None, **cfg.guard}, "guard")


def check_run(cfg: RunConfig, data: ClassData) -> dict[str, tuple[DistillConfig, str]]:
    """Everything about a run that can be checked before any file is written: the methods and
    their overrides, the IPC, the scored split, and the teacher checkpoints it names."""
    parsed = {m: parse_method(m, cfg.distill) for m in cfg.methods}
    data.check_ipc(max([cfg.distill.ipc, *(c.ipc for c, _ in parsed.values())]))
    data.split(cfg.evaluate.split)
    variants = {v for _, v in parsed.values()}
    configs = [cfg.squeeze] if "" in variants else []
    configs += [guard_config(cfg)] if "guard" in variants else []
    for sc in configs:
        for path in (sc.checkpoint, sc.init_checkpoint):
            if path:
                _, meta = load_checkpoint(path, class_names=data.class_names, image_shape=data.image_shape)
                if path == sc.checkpoint:
                    check_teacher_split(path, meta, data)
    return parsed


def squeeze_stage(
    data: ClassData, cfg: SqueezeConfig, rt: Runtime, out: Path, *, resume: bool = False, log: Log = print
) -> tuple[Classifier, dict]:
    """Train a teacher (or load ``cfg.checkpoint``) and save it to ``out`` (safetensors)."""
    if cfg.checkpoint:
        model, meta = load_checkpoint(
            cfg.checkpoint, class_names=data.class_names, image_shape=data.image_shape
        )
        check_teacher_split(cfg.checkpoint, meta, data)
        return rt.prepare(model), meta
    if resume and out.exists():
        model, meta = load_checkpoint(out, class_names=data.class_names, image_shape=data.image_shape)
        if config_matches(meta.get("squeeze"), cfg):
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
        if config_matches(ds.manifest.get("config"), cfg) and ds.manifest.get("teacher", {}).get(
            "sha256"
        ) == teacher_meta.get("sha256"):
            log(f"{cfg.method}: reusing {out}")
            return ds
    data.check_ipc(cfg.ipc)
    if stats is None and needs_stats(get_strategy(cfg.method)):
        stats = compute_class_stats(teacher, data, rt)
    parts = out / "parts"
    key = {"config": to_dict(cfg), "teacher": teacher_meta.get("sha256")}
    completed = {}
    if resume and parts.exists():
        for f in sorted(parts.glob("group_*.safetensors")):
            t, meta = load_tensors(f)
            saved = meta.get("key") or {}
            if config_matches(saved.get("config"), cfg) and saved.get("teacher") == key["teacher"]:
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
    folder: Path | None,
    *,
    arch: str | None = None,
    resume: bool = False,
    log: Log = print,
):
    """Evaluate, recording each finished student in ``folder/students.json`` and its weights in
    ``folder/student_seed<N>.safetensors`` so that a resumed run does not retrain it. Entries are
    keyed by the eval config, student, teacher, images and the dataset the students are scored
    on; a config that differs only in its attacks (``attacks``, ``eps``, ``attack_samples``)
    reuses the students and runs just the attacks whose scores are missing."""
    path = folder / "students.json" if folder is not None else None
    key = {
        "evaluate": to_dict(cfg),
        "student": arch,
        "teacher": tmeta.get("sha256"),
        "images": hashlib.sha256(ds.images.numpy().tobytes()).hexdigest(),
        "data": data.summary(),
    }
    runs: list[dict] = []
    if resume and path is not None and path.exists():
        saved = read_json(path)
        old = {"student": arch, **(saved.get("key") or {})}  # keys written before "student" existed
        same = {k: v for k, v in old.items() if k != "evaluate"} == {
            k: v for k, v in key.items() if k != "evaluate"
        }
        was = old.get("evaluate")
        if same and isinstance(was, dict) and config_matches({**was, **_attack_fields(cfg)}, cfg):
            runs = saved["runs"]
            if runs:
                log(f"  resuming evaluation: seeds {[r['seed'] for r in runs]} already trained")
            if any(was.get(k) != v for k, v in _attack_fields(cfg, subset=True).items()):
                runs = [{k: v for k, v in r.items() if k != "robust"} for r in runs]  # other images attacked

    def weights(seed: int) -> Path:
        return folder / f"student_seed{seed}.safetensors"

    def on_student(model, run):
        runs[:] = [r for r in runs if r["seed"] != run["seed"]] + [run]
        if current().main and path is not None:
            save_checkpoint(weights(run["seed"]), model, {"seed": run["seed"], "top1": run["top1"]})
            write_json(path, {"key": key, "runs": runs})

    def restore(run: dict) -> Classifier | None:
        """The run's student from its saved weights, if they are the ones it was scored with."""
        file = weights(run["seed"]) if path is not None else None
        if file is None or not file.exists():
            return None
        model, meta = load_checkpoint(file, class_names=data.class_names, arch=arch or teacher.arch)
        if (meta.get("seed"), meta.get("top1")) != (run["seed"], run["top1"]):
            return None
        return rt.prepare(model)

    return evaluate_distilled(
        ds, teacher, data, cfg, rt, arch=arch, log=log, on_student=on_student, completed=list(runs),
        restore=restore,
    )  # fmt: skip


def _attack_fields(cfg: EvalConfig, subset: bool = False) -> dict:
    """The eval fields that choose only the attacks (``subset``: only which images are attacked)."""
    d = to_dict(cfg)
    return {k: d[k] for k in (("attack_samples",) if subset else ("attacks", "eps", "attack_samples"))}


_METHOD = re.compile(r"(?P<base>[a-z0-9_-]+)(?P<guard>\+guard)?(?:\[(?P<over>[^\]]*)\])?(?P<guard2>\+guard)?")


def parse_method(name: str, base: DistillConfig) -> tuple[DistillConfig, str]:
    """``"wmdd"``, ``"wmdd+guard"``, ``"wmdd[r_feat=0,iterations=300]"`` -> the method's distill
    config (``base`` with the bracketed fields overridden) and its teacher variant (``"guard"``
    for the GUARD teacher, else ``""``)."""
    m = _METHOD.fullmatch(name.strip())
    if m is None:
        raise GeodistillError(
            f"method {name!r}: expected NAME, NAME+guard or NAME[key=value,...], e.g. wmdd[r_feat=0]+guard"
        )
    get_strategy(m["base"])
    over: dict = {}
    if m["over"]:
        try:
            over = yaml.safe_load("{" + re.sub(r"\s*=\s*", ": ", m["over"]) + "}") or {}
        except yaml.YAMLError as e:
            raise GeodistillError(f"method {name!r}: cannot read the overrides {m['over']!r} ({e})") from None
    if "method" in over:
        raise GeodistillError(f"method {name!r}: the method is the name before the brackets")
    cfg = from_dict(DistillConfig, {**to_dict(base), **over, "method": m["base"]}, f"method {name}")
    return cfg, "guard" if m["guard"] or m["guard2"] else ""


def method_dir(name: str) -> str:
    """A folder name for a method spec (``wmdd[r_feat=0]+guard`` -> ``wmdd_r_feat-0_guard``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("=", "-")).strip("_")


def teacher_entry(
    model: Classifier,
    meta: dict,
    data: ClassData,
    cfg: EvalConfig,
    rt: Runtime,
    path: Path | None = None,
    *,
    resume: bool = False,
    shared: Path | None = None,
    log: Log = print,
) -> dict:
    """The teacher's row: its accuracy on the split the students are scored on (for recovery),
    its test accuracy as trained, its regularizer and cost, and its robust accuracy.

    Saved to ``path``; with ``resume`` a saved row is reused when the teacher, the dataset and the
    fields its scores depend on (split, attacked subset) are unchanged, and only the attacks it
    lacks are run, so that a resumed evaluation does not attack the teacher again.

    ``shared``: a folder of rows kept across output folders (the CLI's is
    ``$GEODISTILL_CACHE/teacher-scores``). Every row is also written there, under a stricter key
    (:func:`_shared_key`), and with ``resume`` a row found there is reused when ``path`` has none,
    so a teacher is attacked once however many folders evaluate sets against it."""
    d = to_dict(cfg)
    key = {
        "teacher": meta.get("sha256"),
        "data": data.summary(),
        **{k: d[k] for k in ("split", "attack_samples", "seed")},
    }
    wanted = asked_scores(cfg)
    store = None
    if shared is not None and key["teacher"]:  # a teacher without a hash is never shared
        skey = _shared_key(key, data, cfg, rt)
        digest = hashlib.sha256(json.dumps(skey, sort_keys=True).encode()).hexdigest()
        store = (Path(shared) / f"{key['teacher'][:16]}-{digest[:16]}.json", skey)
    found = _saved_teacher(path, key, store) if resume else None
    if found is not None:
        where, entry = found
        where = "" if where == path else f" (shared: {where})"
        missing = set(wanted) - set(entry.get("robust", {}))
        if missing:
            log(f"  resuming evaluation: teacher scored{where}, {len(missing)} score(s) missing")
            entry["robust"] = complete_scores(model, data, cfg, rt, entry.get("robust", {}), log=log)
        else:
            log(f"  resuming evaluation: teacher already scored{where}")
        return _save_teacher(path, key, entry, wanted, store, log)
    xs, ys = data.split(cfg.split)
    top1, top5 = accuracy(model, xs, ys, rt, to_float=data.float)
    entry = {
        "arch": model.arch,
        "top1": top1,
        "top5": top5,
        "split": cfg.split,
        "top1_test_at_training": meta.get("top1"),
        "sha256": meta.get("sha256"),
        "regularizer": meta.get("squeeze", {}).get("regularizer", "none"),
        "squeeze": meta.get("squeeze"),
        "seconds_per_epoch": meta.get("seconds_per_epoch"),
    }
    if cfg.attacks:
        entry["robust"] = attack_scores(model, data, cfg, rt, log=log)
    return _save_teacher(path, key, entry, wanted, store, log)


def _shared_key(key: dict, data: ClassData, cfg: EvalConfig, rt: Runtime) -> dict:
    """``key`` plus what a row shared across folders also depends on: the scored split's pixels and
    labels (two datasets may share a name and sizes), autocast, and the versions of the code that
    computed the scores."""
    xs, ys = data.split(cfg.split)
    h = hashlib.sha256()
    for t in (xs, ys):  # hashed in place as bytes (no copy of a large split; any dtype)
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy())
    v = versions()
    return key | {
        "split_sha256": h.hexdigest(),
        "amp": rt.amp,
        "versions": {k: v[k] for k in ("torch", "geodistill")} | attack_versions(),
    }


def _saved_teacher(path: Path | None, key: dict, store: tuple[Path, dict] | None) -> tuple[Path, dict] | None:
    """The row saved in ``path`` for ``key``, else the one in the shared ``store`` (file, key)."""
    if path is not None and path.exists():
        row = read_json(path)
        old = {k: v for k, v in (row.get("key") or {}).items() if k not in ("attacks", "eps")}
        if old == key:
            return path, row["entry"]
    if store is not None and store[0].exists():
        row = read_json(store[0])
        if row.get("key") == json.loads(json.dumps(store[1])):
            return store[0], row["entry"]
    return None


def _save_teacher(
    path: Path | None,
    key: dict,
    entry: dict,
    wanted: list[str],
    store: tuple[Path, dict] | None = None,
    log: Log = print,
) -> dict:
    """Save the entry with every score it has (also to the shared ``store``, which only warns if it
    cannot be written); return it with the ``wanted`` ones."""
    if current().main:
        if path is not None:
            write_json(path, {"key": key, "entry": entry})
        if store is not None:
            try:
                store[0].parent.mkdir(parents=True, exist_ok=True)
                write_json(store[0], {"key": store[1], "entry": entry})
            except OSError as e:
                log(f"  warning: teacher scores not shared ({store[0]}: {e.strerror or e})")
    return wanted_scores(entry, wanted)


def protocol(cfg: EvalConfig, data: ClassData) -> dict:
    """What the students' numbers depend on, stated once above every table."""
    d = to_dict(cfg)
    d.pop("max_memory", None)
    d["attack_config"] = {a.split("@")[0]: ATTACK_CONFIG[a.split("@")[0]] for a in cfg.attacks}
    d["versions"] = attack_versions() if cfg.attacks else {}
    d["val_split"] = data.val_spec
    return d


def score_sets(
    sets: dict[str, tuple[DistilledSet, Classifier, dict]],
    data: ClassData,
    cfg: EvalConfig,
    rt: Runtime,
    folder: Path | None,
    *,
    resume: bool = False,
    log: Log = print,
) -> tuple[dict, list[str]]:
    """Train and score students for every set (``name -> (set, teacher, teacher_meta)``) and every
    student architecture; one entry per method, extra architectures under ``by_student``."""
    methods, flags = {}, []
    for name, (ds, teacher, tmeta) in sets.items():
        archs = cfg.students or [teacher.arch]
        entry: dict = {}
        for k, arch in enumerate(archs):
            log(f"{name}: evaluating {cfg.seeds} {arch} student(s)")
            sub = (
                None if folder is None else folder / method_dir(name) / ("" if k == 0 else f"student_{arch}")
            )
            score = evaluate_resumable(
                ds, teacher, tmeta, data, cfg, rt, sub, arch=arch, resume=resume, log=log
            )
            d = {**score.as_dict(), "student": arch}
            d["seconds"] = sum(r.get("seconds", 0.0) for r in score.runs)  # compute time, also if resumed
            flags += [f"{name} ({arch}), {f}" for f in score.flags]
            if k == 0:
                entry = d
            else:
                entry.setdefault("by_student", {})[arch] = d
        entry["ipc"] = ds.ipc
        entry["distill"] = {
            "config": ds.manifest.get("config"),
            "resolved": ds.manifest.get("resolved"),
            "seconds": ds.manifest.get("seconds"),
            "source": ds.manifest.get("source"),
        }
        methods[name] = entry
    return methods, flags


def run_pipeline(
    cfg: RunConfig,
    out: Path,
    rt: Runtime,
    *,
    resume: bool = False,
    log: Log = print,
    data: ClassData | None = None,
) -> dict:
    """Data → teacher(s) → class stats → one distilled set per method → scores → report.

    A method ``"<m>+guard"`` runs method ``m`` on a second teacher trained with the squeeze
    config overridden by ``cfg.guard`` (GUARD's curvature regularizer by default); its
    students are relabelled by that teacher too. ``data`` may be passed already loaded.
    """
    from .report import print_table, write_report

    t0 = time.perf_counter()
    d = current()
    data = data if data is not None else load_data(cfg.data)
    parsed = check_run(cfg, data)
    if d.main:
        save_config(cfg, out / "config.yaml")
    log(
        f"data {data.name}: {len(data.y_train)} train / {0 if data.y_val is None else len(data.y_val)} val / "
        f"{len(data.y_test)} test, {data.num_classes} classes, images {data.image_shape}"
    )
    teachers = {}
    timing: dict[str, float] = {}
    shared = teacher_scores_dir() if cfg.data.cache else None
    for variant in sorted({v for _, v in parsed.values()}):
        scfg = cfg.squeeze
        if variant == "guard":
            scfg = from_dict(
                SqueezeConfig, {**to_dict(cfg.squeeze), "checkpoint": None, **cfg.guard}, "guard"
            )
        suffix = f"_{variant}" if variant else ""
        log(f"teacher{suffix}: regularizer {scfg.regularizer}")
        t1 = time.perf_counter()
        model, meta = squeeze_stage(
            data, scfg, rt, out / f"teacher{suffix}.safetensors", resume=resume, log=log
        )
        timing[f"squeeze{suffix}"] = time.perf_counter() - t1
        needed = any(needs_stats(get_strategy(c.method)) for c, v in parsed.values() if v == variant)
        t1 = time.perf_counter()
        st = (
            stats_stage(model, meta, data, rt, out / f"stats{suffix}.safetensors", resume=resume)
            if needed
            else None
        )
        timing[f"stats{suffix}"] = time.perf_counter() - t1
        teachers[variant] = (model, meta, st)
    sets, distill_seconds = {}, {}
    for m, (dcfg, variant) in parsed.items():
        teacher, tmeta, stats = teachers[variant]
        t1 = time.perf_counter()
        ds = distill_stage(
            teacher, tmeta, data, dcfg, rt, out / method_dir(m), stats=stats, resume=resume, log=log
        )
        distill_seconds[m] = ds.manifest.get("seconds", time.perf_counter() - t1)  # compute, also resumed
        sets[m] = (ds, teacher, tmeta)
    methods, flags = score_sets(sets, data, cfg.evaluate, rt, out, resume=resume, log=log)
    for m, entry in methods.items():
        entry |= {"distill_seconds": distill_seconds[m], "eval_seconds": entry["seconds"]}
        entry["seconds"] = distill_seconds[m] + entry["eval_seconds"]
        entry["teacher"] = "teacher_guard" if parsed[m][1] == "guard" else "teacher"
    metrics = {
        "name": cfg.name,
        "dataset": data.name,
        "num_classes": data.num_classes,
        "image_shape": list(data.image_shape),
        "ipc": cfg.distill.ipc,
        "split": cfg.evaluate.split,
        "protocol": protocol(cfg.evaluate, data),
        "methods": methods,
    }
    for variant, (model, meta, _) in teachers.items():
        key = "teacher_guard" if variant == "guard" else "teacher"
        if cfg.evaluate.attacks:
            log(f"{key}: attacks")
        metrics[key] = teacher_entry(
            model, meta, data, cfg.evaluate, rt, out / f"{key}_scores.json", resume=resume, shared=shared,
            log=log,
        )  # fmt: skip
        flags += sanity_flags(metrics[key].get("robust", {}), key)
    metrics.setdefault("teacher", metrics.get("teacher_guard"))
    metrics |= {
        "flags": flags,
        "timing": timing,
        "seconds": time.perf_counter() - t0,
        "device": device_name(rt.device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
        "config": to_dict(cfg),
    }
    if d.main:
        write_report(out, metrics, {m: v[0] for m, v in sets.items()})
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
    resume: bool = False,
    shared: Path | None = None,
    log: Log = print,
) -> dict:
    """Score already distilled sets and write metrics.json / report.md into ``out``; every finished
    student (``out/<method>/students.json``) and the teacher's scores are saved as they finish, and
    ``resume`` reuses them."""
    from .report import print_table, write_report

    t0 = time.perf_counter()
    methods, flags = score_sets(
        {k: (v, teacher, tmeta) for k, v in sets.items()}, data, cfg, rt, out, resume=resume, log=log
    )
    tentry = teacher_entry(
        teacher, tmeta, data, cfg, rt, out / "teacher_scores.json", resume=resume, shared=shared, log=log
    )
    flags += sanity_flags(tentry.get("robust", {}), "teacher")
    metrics = {
        "dataset": data.name,
        "num_classes": data.num_classes,
        "image_shape": list(data.image_shape),
        "ipc": max(ds.ipc for ds in sets.values()),
        "split": cfg.split,
        "protocol": protocol(cfg, data),
        "teacher": tentry,
        "methods": methods,
        "flags": flags,
        "seconds": time.perf_counter() - t0,
        "device": device_name(rt.device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
    }
    if current().main:
        write_report(out, metrics, sets)
        print_table(metrics)
    return metrics
