"""Command line: ``geodistill {demo,run,squeeze,distill,evaluate,convert-checkpoint,report,...}``.

The only module that reads argv. Stage flags are generated from the config dataclasses, with
the help text, allowed values and bounds documented on each field (``config.opt``). ``run``
takes a YAML file (or preset name) whose values are defaults, overridden by dotted flags such
as ``--distill.ipc 50``. Every error a user can cause exits with status 2 and one message;
nothing is written before the inputs have been checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path

from .config import (
    DataConfig,
    DistillConfig,
    EvalConfig,
    RunConfig,
    SqueezeConfig,
    from_dict,
    help_text,
    resolve,
)
from .files import GeodistillError, prepare_out_dir

DATA_FLAGS = {"source": "data"}  # DataConfig.source is spelled --data


def _add_fields(p: argparse.ArgumentParser, cls, *, skip=(), rename=None) -> None:
    """One flag per dataclass field, its help from the field's documentation."""
    rename = rename or {}
    g = p.add_argument_group(f"{cls.__name__} (see `geodistill run` for the YAML form)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = f"--{rename.get(f.name, f.name).replace('_', '-')}"
        if f.type in ("bool", bool):
            g.add_argument(
                flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text(f)
            )
        else:
            g.add_argument(flag, dest=f.name, default=None, metavar="V", help=help_text(f))


def _build(cls, ns: argparse.Namespace):
    """The stage config from its generated flags (unset flags keep the dataclass defaults)."""
    raw = {f.name: v for f in dataclasses.fields(cls) if (v := getattr(ns, f.name, None)) is not None}
    return from_dict(cls, raw, "flags")


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument(
        "--amp",
        action="store_true",
        help="bfloat16 autocast (CUDA; on CPUs with bf16 instructions ~1.7x faster student steps)",
    )
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (CUDA only)")
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile student training (CPU: 1.3-1.8x faster steps; needs a C++ compiler)",
    )
    g.add_argument("--overwrite", action="store_true", help="replace files in an existing output directory")
    g.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in its output directory"
    )
    g.add_argument("--quiet", action="store_true", help="print nothing but errors")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="geodistill", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=f"geodistill {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole pipeline on scikit-learn's digits (no download)")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    _common(p)

    p = sub.add_parser("run", help="the whole pipeline from a YAML config; --section.key VALUE overrides")
    p.add_argument("config", help="a YAML file or a preset name (see `geodistill presets`)")
    p.add_argument("--out", default=None, help="output directory (default runs/<name>)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. distill.ipc=50"
    )
    _common(p)

    p = sub.add_parser("squeeze", help="train a teacher and save it as safetensors")
    p.add_argument("--out", required=True, help="teacher checkpoint path (.safetensors)")
    _add_fields(p, DataConfig, rename=DATA_FLAGS)
    _add_fields(p, SqueezeConfig, skip=("checkpoint",))
    _common(p)

    p = sub.add_parser("distill", help="distill a dataset with a teacher")
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.safetensors)")
    p.add_argument("--out", required=True, help="output directory for the distilled set")
    _add_fields(p, DataConfig, rename=DATA_FLAGS)
    _add_fields(p, DistillConfig)
    _common(p)

    p = sub.add_parser("evaluate", help="train students on distilled sets and report accuracy")
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.safetensors) that relabels")
    p.add_argument(
        "--distilled",
        nargs="+",
        required=True,
        metavar="[NAME=]SET",
        help="distilled sets: a geodistill output directory, or folder:PATH for an ImageFolder of images",
    )
    p.add_argument("--out", required=True, help="directory for metrics.json and report.md")
    _add_fields(p, DataConfig, rename=DATA_FLAGS)
    _add_fields(p, EvalConfig)
    _common(p)

    p = sub.add_parser(
        "convert-checkpoint", help="import a PyTorch state dict (.pt/.pth) as a geodistill teacher"
    )
    p.add_argument("input", help="a .pt/.pth file saved with torch.save(model.state_dict(), ...)")
    p.add_argument("--arch", required=True, help="registry architecture (see `geodistill models`)")
    p.add_argument("--num-classes", type=int, required=True, help="number of classes of its classifier")
    p.add_argument("--image-size", type=int, required=True, help="input image size it was trained at")
    p.add_argument("--in-chans", type=int, default=3, help="input channels (default 3)")
    p.add_argument(
        "--mean", default=None, help="normalization mean it was trained with, e.g. 0.4914,0.4822,0.4465"
    )
    p.add_argument(
        "--std", default=None, help="normalization std it was trained with, e.g. 0.2470,0.2435,0.2616"
    )
    p.add_argument(
        "--arch-kwargs", default=None, help="extra architecture arguments as YAML, e.g. '{width: 64}'"
    )
    p.add_argument(
        "--data", default=None, help="dataset spec: take its class names and measure accuracy on it"
    )
    p.add_argument("--class-names", default=None, help="comma-separated class names (without --data)")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--device", default="auto", help="device used to measure accuracy")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")

    p = sub.add_parser("report", help="merge run directories into one report (report.md + report.html)")
    p.add_argument("runs", nargs="+", help="run directories holding metrics.json")
    p.add_argument("--out", required=True, help="output directory for report.md, report.html and plots")
    p.add_argument("--title", default="geodistill report", help="report title")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing output directory")

    sub.add_parser("models", help="list registered model names")
    sub.add_parser("presets", help="list packaged configs")
    return ap


def _parse_overrides(extra: list[str], sets: list[str]) -> dict:
    """``--section.key VALUE``, ``--key=VALUE`` and ``--set key=value`` into a dotted dict."""
    top = {f.name for f in dataclasses.fields(RunConfig)}
    out: dict = {}
    for s in sets:
        if "=" not in s:
            raise GeodistillError(f"--set {s!r}: expected KEY=VALUE")
        k, v = s.split("=", 1)
        out[k] = v
    i = 0
    while i < len(extra):
        a = extra[i]
        key = a[2:].split("=", 1)[0].replace("-", "_") if a.startswith("--") else ""
        if not key or ("." not in key and key not in top):
            raise GeodistillError(
                f"unrecognized argument {a!r}; overrides look like --distill.ipc 50 or --methods wmdd,random"
            )
        if "=" in a:
            v = a.split("=", 1)[1]
            i += 1
        else:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise GeodistillError(f"{a}: missing value")
            v = extra[i + 1]
            i += 2
        out[key] = v
    return out


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (never raises ``SystemExit``)."""
    ap = build_parser()
    try:
        args, extra = ap.parse_known_args(argv)
        if extra and args.cmd != "run":
            ap.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # argparse printed the usage and the message
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    previous = signal.signal(signal.SIGTERM, _terminate)  # unwind (temp files removed) on SIGTERM
    try:
        return _dispatch(args, extra)
    except GeodistillError as e:
        print(f"geodistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "geodistill: interrupted; finished work is saved, rerun with --resume to continue",
            file=sys.stderr,
        )
        return 130
    except MemoryError:
        print("geodistill: error: out of memory; lower the batch size (see --max-memory)", file=sys.stderr)
        return 3
    except RuntimeError as e:
        if "out of memory" not in str(e).lower():
            raise
        print(
            f"geodistill: error: out of device memory ({str(e).splitlines()[0]}); lower the batch "
            "size or pass --max-memory to check batches before starting",
            file=sys.stderr,
        )
        return 3
    finally:
        signal.signal(signal.SIGTERM, previous)


def _runtime(args):
    from .distributed import init_distributed
    from .runtime import make_runtime

    rt = make_runtime(
        args.device,
        amp=getattr(args, "amp", False),
        channels_last=getattr(args, "channels_last", False),
        compile=getattr(args, "compile", False),
    )
    init_distributed(rt.device)
    return rt


def _logger(args):
    from .distributed import current

    t0 = time.perf_counter()
    quiet = args.quiet or not current().main
    return (
        (lambda s: None)
        if quiet
        else (lambda s: print(f"[{time.perf_counter() - t0:7.1f}s] {s}", flush=True))
    )


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise GeodistillError(f"{flag} {text!r}: expected comma-separated numbers") from None


def _top_level_eq(text: str) -> int:
    """Index of the first ``=`` outside brackets (``wmdd[r_feat=1]=DIR`` -> before ``DIR``), or -1."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "=" and depth == 0:
            return i
    return -1


def _load_sets(items: list[str], data) -> dict:
    from .distilled import DistilledSet

    sets = {}
    for item in items:
        cut = _top_level_eq(item)
        head, tail = (item[:cut], item[cut + 1 :]) if cut >= 0 else ("", item)
        name, spec = (head, tail) if cut >= 0 and not any(ch in head for ch in ":/\\") else ("", item)
        if spec.startswith("folder:"):
            ds = DistilledSet.from_folder(spec[7:], data.class_names, data.image_shape)
        else:
            ds = DistilledSet.load(spec)
            if tuple(ds.images.shape[1:]) != tuple(data.image_shape):
                raise GeodistillError(
                    f"{spec}: distilled images are {tuple(ds.images.shape[1:])}, the data's are "
                    f"{tuple(data.image_shape)} (evaluate an ImageFolder of images as folder:PATH to resize)"
                )
        key = name or ds.manifest.get("method") or Path(spec.split(":", 1)[-1]).name
        if key in sets:
            raise GeodistillError(f"two distilled sets are named {key!r}; name them with NAME=SET")
        sets[key] = ds
    return sets


def _dispatch(args, extra) -> int:
    from . import pipeline

    if args.cmd == "models":
        from .models import list_models

        print("\n".join(list_models()))
        return 0
    if args.cmd == "presets":
        from .config import preset_names

        print("\n".join(preset_names()))
        return 0
    if args.cmd == "report":
        from .report.merge import build_report

        out = prepare_out_dir(args.out, overwrite=args.overwrite)
        paths = build_report([Path(r) for r in args.runs], out, title=args.title)
        print(f"wrote {paths['md']} and {paths['html']}")
        return 0
    if args.cmd == "convert-checkpoint":
        return _convert(args)
    if args.cmd in ("demo", "run"):
        if args.cmd == "demo":
            cfg, out = resolve("demo", {}), Path(args.out)
        else:
            cfg = resolve(args.config, _parse_overrides(extra, args.set))
            out = Path(args.out or f"runs/{cfg.name}")
        args.device = args.device if args.device != "auto" else cfg.device
        args.amp, args.channels_last = args.amp or cfg.amp, args.channels_last or cfg.channels_last
        args.compile = args.compile or cfg.compile
        data = pipeline.load_data(cfg.data)
        pipeline.check_run(cfg, data)  # methods, IPC, split, teachers: before anything is written
        prepare_out_dir(out, overwrite=args.overwrite, resume=args.resume)
        rt = _runtime(args)
        log = _logger(args)
        metrics = pipeline.run_pipeline(cfg, out, rt, resume=args.resume, log=log, data=data)
        log(f"wrote {out / 'metrics.json'}, {out / 'report.md'} and image grids in {metrics['seconds']:.1f}s")
        return 0
    dcfg = _build(DataConfig, args)
    stage_cfg = _build(
        {"squeeze": SqueezeConfig, "distill": DistillConfig, "evaluate": EvalConfig}[args.cmd], args
    )
    data = pipeline.load_data(dcfg)
    if args.cmd == "squeeze":
        out = Path(args.out)
        if out.exists() and not (args.overwrite or args.resume):
            raise GeodistillError(f"{out}: exists; pass --overwrite to replace it")
        rt = _runtime(args)
        log = _logger(args)
        pipeline.squeeze_stage(data, stage_cfg, rt, out, resume=args.resume, log=log)
        log(f"wrote {out}")
        return 0
    from .models import load_checkpoint

    teacher, tmeta = load_checkpoint(args.teacher, class_names=data.class_names, image_shape=data.image_shape)
    if args.cmd == "distill":
        data.check_ipc(stage_cfg.ipc)
        out = prepare_out_dir(args.out, overwrite=args.overwrite, resume=args.resume)
        rt = _runtime(args)
        log = _logger(args)
        ds = pipeline.distill_stage(
            rt.prepare(teacher), tmeta, data, stage_cfg, rt, out, resume=args.resume, log=log
        )
        log(f"wrote {len(ds.labels)} images to {out}")
        return 0
    sets = _load_sets(args.distilled, data)
    data.split(stage_cfg.split)
    out = prepare_out_dir(args.out, overwrite=args.overwrite, resume=args.resume)
    rt = _runtime(args)
    pipeline.evaluate_stage(
        rt.prepare(teacher),
        tmeta,
        data,
        sets,
        stage_cfg,
        rt,
        out,
        resume=args.resume,
        shared=pipeline.teacher_scores_dir() if dcfg.cache else None,
        log=_logger(args),
    )
    return 0


def _convert(args) -> int:
    import yaml

    from .evaluate.metrics import accuracy
    from .models import save_checkpoint
    from .models.convert import import_state_dict
    from .runtime import make_runtime, versions

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise GeodistillError(f"{out}: the output must be a .safetensors file")
    if out.exists() and not args.overwrite:
        raise GeodistillError(f"{out}: exists; pass --overwrite to replace it")
    data = None
    if args.data:
        from .pipeline import load_data

        data = load_data(DataConfig(source=args.data, image_size=args.image_size, val_fraction=0.0))
        if data.num_classes != args.num_classes or data.image_shape[0] != args.in_chans:
            raise GeodistillError(
                f"--data {args.data} has {data.num_classes} classes and {data.image_shape[0]} channels; "
                f"the checkpoint has --num-classes {args.num_classes} --in-chans {args.in_chans}"
            )
    names = (
        list(data.class_names)
        if data
        else [s.strip() for s in args.class_names.split(",")]
        if args.class_names
        else None
    )
    if names is not None and len(names) != args.num_classes:
        raise GeodistillError(f"--class-names lists {len(names)} names for --num-classes {args.num_classes}")
    mean, std = _floats(args.mean, "--mean"), _floats(args.std, "--std")
    if (mean is None) != (std is None):
        raise GeodistillError("give both --mean and --std, or neither")
    if mean is None:  # what the model most likely saw: the data's statistics, else ImageNet's
        if data is not None:
            mean, std = data.channel_stats()
        else:
            mean, std = [0.485, 0.456, 0.406][: args.in_chans], [0.229, 0.224, 0.225][: args.in_chans]
    kwargs = yaml.safe_load(args.arch_kwargs) if args.arch_kwargs else {}
    if not isinstance(kwargs, dict):
        raise GeodistillError(f"--arch-kwargs {args.arch_kwargs!r}: expected a YAML mapping")
    model = import_state_dict(
        args.input,
        arch=args.arch,
        num_classes=args.num_classes,
        image_size=args.image_size,
        in_chans=args.in_chans,
        mean=mean,
        std=std,
        arch_kwargs=kwargs,
    )
    from .models.registry import file_sha256

    meta = {
        "class_names": names,
        "top1": None,
        "top5": None,
        "converted_from": {"path": str(args.input), "sha256": file_sha256(args.input)},
        "versions": versions(),
    }
    if data is not None:
        rt = make_runtime(args.device)
        top1, top5 = accuracy(rt.prepare(model), data.x_test, data.y_test, rt, to_float=data.float)
        meta |= {"top1": top1, "top5": top5, "dataset": data.summary()}
        if not args.quiet:
            print(f"{args.input}: top-1 {top1:.4f}, top-5 {top5:.4f} on the {data.name} test split")
        if top1 < 1.5 / data.num_classes:
            print(
                "geodistill: warning: accuracy is near chance; check --mean/--std and --image-size",
                file=sys.stderr,
            )
    save_checkpoint(out, model, meta)
    if not args.quiet:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
