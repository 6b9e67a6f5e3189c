"""Command line: ``geodistill {demo,run,squeeze,distill,evaluate,models}``.

The only module that reads argv. Stage flags are generated from the config dataclasses
(``--epochs``, ``--ipc``...); ``run`` takes a YAML file (or preset name) whose values are
defaults, overridden by dotted flags such as ``--distill.ipc 50``.
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
    SqueezeConfig,
    from_dict,
    resolve,
)
from .files import GeodistillError, prepare_out_dir


def _add_fields(p: argparse.ArgumentParser, cls, *, skip=()) -> None:
    """One ``--field-name`` flag per dataclass field; values are parsed by the config module."""
    g = p.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        g.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            default=None,
            metavar="V",
            help=f"default: {default!r}",
        )


def _build(cls, ns: argparse.Namespace):
    """The stage config from its generated flags (unset flags keep the dataclass defaults)."""
    raw = {f.name: v for f in dataclasses.fields(cls) if (v := getattr(ns, f.name, None)) is not None}
    return from_dict(cls, raw)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (CUDA only)")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing output directory")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in its output directory"
    )
    p.add_argument("--quiet", action="store_true")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="digits | folder:PATH | npz:FILE | cifar10:ROOT | ...")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--skip-bad-images", action="store_true")


def _data_cfg(ns) -> DataConfig:
    return DataConfig(source=ns.data, image_size=ns.image_size, skip_bad_images=ns.skip_bad_images)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="geodistill", description=__doc__.split("\n")[0])
    from . import __version__

    ap.add_argument("--version", action="version", version=f"geodistill {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("demo", help="the whole pipeline on scikit-learn's digits (no download)")
    p.add_argument("--out", default="runs/demo")
    _common(p)

    p = sub.add_parser("run", help="the whole pipeline from a YAML config; --section.key VALUE overrides")
    p.add_argument("config", help="a YAML file or a preset name (see `geodistill presets`)")
    p.add_argument("--out", default=None, help="output directory (default runs/<name>)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. distill.ipc=50"
    )
    _common(p)

    p = sub.add_parser("squeeze", help="train a teacher and save it as safetensors")
    _data_args(p)
    p.add_argument("--out", required=True, help="teacher checkpoint path (.safetensors)")
    _add_fields(p, SqueezeConfig, skip=("checkpoint",))
    _common(p)

    p = sub.add_parser("distill", help="distill a dataset with a teacher")
    _data_args(p)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.safetensors)")
    p.add_argument("--out", required=True, help="output directory for the distilled set")
    _add_fields(p, DistillConfig)
    _common(p)

    p = sub.add_parser("evaluate", help="train students on distilled sets and report accuracy")
    _data_args(p)
    p.add_argument("--teacher", required=True)
    p.add_argument(
        "--distilled", nargs="+", required=True, help="distilled set directories (NAME=DIR allowed)"
    )
    p.add_argument("--out", required=True, help="directory for metrics.json and report.md")
    _add_fields(p, EvalConfig)
    _common(p)

    sub.add_parser("models", help="list registered model names")
    sub.add_parser("presets", help="list packaged configs")
    return ap


def _parse_overrides(extra: list[str], sets: list[str]) -> dict:
    out: dict = {}
    for s in sets:
        if "=" not in s:
            raise GeodistillError(f"--set {s!r}: expected KEY=VALUE")
        k, v = s.split("=", 1)
        out[k] = v
    i = 0
    while i < len(extra):
        a = extra[i]
        if not a.startswith("--") or "." not in a:
            raise GeodistillError(f"unrecognized argument {a!r}; overrides look like --distill.ipc 50")
        if "=" in a:
            k, v = a[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise GeodistillError(f"{a}: missing value")
            k, v = a[2:], extra[i + 1]
            i += 2
        out[k.replace("-", "_")] = v
    return out


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    if extra and args.cmd != "run":
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
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

    rt = make_runtime(args.device, amp=args.amp, channels_last=args.channels_last)
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


def _dispatch(args, extra) -> int:
    from . import pipeline

    if args.cmd == "models":
        from .models import list_models

        print("\n".join(list_models()))
        return 0
    if args.cmd == "presets":
        from importlib import resources

        for r in sorted((resources.files("geodistill") / "presets").iterdir(), key=lambda r: r.name):
            if r.name.endswith(".yaml"):
                print(r.name[:-5])
        return 0
    if args.cmd in ("demo", "run"):
        if args.cmd == "demo":
            cfg = resolve("demo", {})
            out = Path(args.out)
        else:
            cfg = resolve(args.config, _parse_overrides(extra, args.set))
            out = Path(args.out or f"runs/{cfg.name}")
        args.device = args.device if args.device != "auto" else cfg.device
        args.amp, args.channels_last = args.amp or cfg.amp, args.channels_last or cfg.channels_last
        prepare_out_dir(out, overwrite=args.overwrite, resume=args.resume)
        rt = _runtime(args)
        log = _logger(args)
        metrics = pipeline.run_pipeline(cfg, out, rt, resume=args.resume, log=log)
        log(f"wrote {out / 'metrics.json'}, {out / 'report.md'} and image grids in {metrics['seconds']:.1f}s")
        return 0
    # check the output before the process group exists: no rank can have written to it yet
    if args.cmd == "squeeze":
        out = Path(args.out)
        if out.exists() and not (args.overwrite or args.resume):
            raise GeodistillError(f"{out}: exists; pass --overwrite to replace it")
    else:
        out = prepare_out_dir(args.out, overwrite=args.overwrite, resume=args.resume)
    rt = _runtime(args)
    log = _logger(args)
    data = pipeline.load_data(_data_cfg(args))
    if args.cmd == "squeeze":
        pipeline.squeeze_stage(data, _build(SqueezeConfig, args), rt, out, resume=args.resume, log=log)
        log(f"wrote {out}")
        return 0
    from .models import load_checkpoint

    teacher, tmeta = load_checkpoint(args.teacher, class_names=data.class_names, image_shape=data.image_shape)
    teacher = rt.prepare(teacher)
    if args.cmd == "distill":
        ds = pipeline.distill_stage(
            teacher, tmeta, data, _build(DistillConfig, args), rt, out, resume=args.resume, log=log
        )
        log(f"wrote {len(ds.labels)} images to {out}")
        return 0
    from .distilled import DistilledSet

    sets = {}
    for item in args.distilled:
        name, _, path = item.rpartition("=")
        ds = DistilledSet.load(path)
        sets[name or ds.manifest.get("method", Path(path).name)] = ds
    pipeline.evaluate_stage(teacher, tmeta, data, sets, _build(EvalConfig, args), rt, out, log=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
