"""Does the student protocol converge? Train KD students on distilled sets at several budgets
(and learning rates) and report, per setting, mean ± std over seeds and the change from the
previous (half) budget. A budget has converged when doubling it changes the mean by less than
the larger seed std of the two.

Resumable: every finished student is appended to ``runs/bench/NAME/students.jsonl`` and skipped
on a rerun; ``--workers`` trains that many students at once, sharing the cores' threads
between them.

    python benchmarks/student_budget.py NAME --teacher benchmarks/cache/cifar10-convnet3-plain.safetensors \\
        --sets wmdd=runs/sets/ipc1/wmdd random=runs/sets/ipc1/random --split val \\
        --epochs 1200 2400 4800 --lr 0.001 0.003 --seeds 3 --batch-size 10

Writes ``benchmarks/results/NAME.md`` and ``NAME/metrics.json`` with the command, machine and dates.

On a GPU machine that cannot read the ImageFolder data, export the scored split here first
(``python benchmarks/export_val.py runs/gpu/cifar10-val.safetensors``: 15 MB for CIFAR-10) and pass
``--data classdata:THAT_FILE --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("name", help="the run's name (runs/bench/NAME, benchmarks/results/NAME.md)")
ap.add_argument(
    "--data",
    default="folder:../shared/datasets/cifar10",
    help="a geodistill dataset spec, or classdata:FILE written by export_val.py",
)
ap.add_argument("--device", default="cpu", help="cpu or cuda (workers share the one GPU)")
ap.add_argument("--teacher", required=True)
ap.add_argument("--sets", nargs="+", required=True, help="NAME=DIR distilled sets")
ap.add_argument("--split", default="val", choices=("val", "test"))
ap.add_argument("--epochs", type=int, nargs="+", required=True)
ap.add_argument("--lr", type=float, nargs="+", default=[0.001])
ap.add_argument("--batch-size", type=int, nargs="+", default=[50])
ap.add_argument("--views", type=int, nargs="+", default=[1], help="augmented views per image per step")
ap.add_argument("--seeds", type=int, default=3)
ap.add_argument("--workers", type=int, default=2)
ap.add_argument("--compile", action="store_true", help="torch.compile the students (geodistill --compile)")
ap.add_argument(
    "--precision",
    nargs="+",
    default=["fp32"],
    choices=("fp32", "bf16"),
    help="bf16: autocast (geodistill --amp)",
)
ap.add_argument("--report-only", action="store_true", help="write the report from the students done so far")
ap.add_argument("--eval", default="", help="extra EvalConfig fields as JSON, e.g. '{\"cutmix\": 0}'")


_LOADED: dict = {}


def load_scored_data(spec: str):
    """``--data`` with the validation split carved as in every benchmark (10 %, seed 0), or a
    ``classdata:FILE`` written by ``export_val.py`` (which already holds that split)."""
    from geodistill.config import DataConfig
    from geodistill.data import ClassData
    from geodistill.pipeline import load_data

    if spec.startswith("classdata:"):
        return ClassData.load(spec.partition(":")[2])
    return load_data(DataConfig(source=spec, val_fraction=0.1, val_seed=0))


def train_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    from geodistill.config import EvalConfig
    from geodistill.distilled import DistilledSet
    from geodistill.evaluate.metrics import accuracy
    from geodistill.evaluate.student import train_student
    from geodistill.models import load_checkpoint
    from geodistill.runtime import make_runtime

    rt = make_runtime(job["device"], amp=job["amp"], compile=job["compile"])
    if (job["data"], job["teacher"]) not in _LOADED:  # once per worker process
        data = load_scored_data(job["data"])
        teacher, _ = load_checkpoint(job["teacher"], class_names=data.class_names)
        _LOADED[job["data"], job["teacher"]] = data, rt.prepare(teacher), {}
    data, teacher, teacher_top1 = _LOADED[job["data"], job["teacher"]]
    if job["split"] not in teacher_top1:  # the teacher's own top-1, float32, for the recovery column
        xs, ys = data.split(job["split"])
        rt32 = make_runtime(job["device"])
        teacher_top1[job["split"]] = accuracy(teacher, xs, ys, rt32, to_float=data.float)[0]
    ds = DistilledSet.load(job["set_dir"])
    fields = {
        "epochs": job["epochs"],
        "lr": job["lr"],
        "batch_size": job["batch_size"],
        "views": job["views"],
        "split": job["split"],
    }
    cfg = EvalConfig(**fields, **job["eval"])
    _, run = train_student(ds, teacher, data, cfg, rt, seed=job["seed"])
    return {
        **{k: job[k] for k in ("set", "lr", "batch_size", "views", "epochs", "seed", "amp")},
        **run,
        "teacher_top1": teacher_top1[job["split"]],
    }


def key(r: dict) -> tuple:
    return (
        r["set"],
        r.get("amp", False),
        r["lr"],
        r["batch_size"],
        r.get("views", 1),
        r["epochs"],
        r["seed"],
    )


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r)[:-1], []).append(r)
    lines = [
        "| set | precision | lr | batch | views | epochs | steps | top-1 (%) mean ± std | top-5 (%) "
        "| recovery | seeds | change from half the budget | converged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    stats = {}
    for g in sorted(groups):
        acc = [100 * r["top1"] for r in groups[g]]
        stats[g] = (statistics.mean(acc), statistics.stdev(acc) if len(acc) > 1 else float("nan"), len(acc))
    for g, (m, s, n) in stats.items():
        half = (*g[:5], g[5] // 2)
        delta, conv = "", ""
        if half in stats:
            hm, hs, _ = stats[half]
            delta = f"{m - hm:+.2f}"
            stds = [v for v in (s, hs) if v == v]  # a single-seed row has no std
            conv = "yes" if stds and abs(m - hm) < max(stds) else "no"
        rs = groups[g]
        top5 = f"{statistics.mean(100 * r['top5'] for r in rs):.2f}"
        # recovery = mean student top-1 / the teacher's top-1 on the same split (rows written
        # before the teacher's accuracy was recorded have none)
        t1 = [r["teacher_top1"] for r in rs if "teacher_top1" in r]
        rec = f"{m / (100 * statistics.mean(t1)):.3f}" if t1 else "—"
        lines.append(
            f"| {g[0]} | {'bf16' if g[1] else 'fp32'} | {g[2]:g} | {g[3]} | {g[4]} | {g[5]} "
            f"| {rs[0]['steps']} "
            f"| {m:.2f}{f' ± {s:.2f}' if n > 1 else ''} | {top5} | {rec} | {n} | {delta} | {conv} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = ap.parse_args()
    from geodistill.runtime import machine

    if args.data.startswith("classdata:") and args.split != "val":
        ap.error(f"{args.data} holds only the validation split; use --split val")

    out = Path("runs/bench") / args.name
    out.mkdir(parents=True, exist_ok=True)
    log = out / "students.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    have = {key(r) for r in done}
    extra = json.loads(args.eval) if args.eval else {}
    sets = dict(s.split("=", 1) for s in args.sets)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    jobs = [
        {
            "set": name,
            "set_dir": d,
            "lr": lr,
            "batch_size": bs,
            "views": views,
            "epochs": ep,
            "seed": seed,
            "eval": extra,
            "data": args.data,
            "teacher": args.teacher,
            "split": args.split,
            "threads": threads,
            "device": args.device,
            "compile": args.compile,
            "amp": prec == "bf16",
        }
        for ep in sorted(args.epochs)
        for name, d in sets.items()
        for lr in args.lr
        for bs in args.batch_size
        for views in args.views
        for seed in range(args.seeds)
        for prec in args.precision
    ]
    todo = [] if args.report_only else [j for j in jobs if key(j) not in have]
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{len(jobs) - len(todo)} students done, {len(todo)} to train ({args.workers} at once)", flush=True)
    # spawned workers (CUDA cannot run in a forked child), on the CPU too so both take one path
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for fut in as_completed([pool.submit(train_one, j) for j in todo]):
            r = fut.result()
            done.append(r)
            with log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(
                f"{r['set']}{' bf16' if r['amp'] else ''} lr {r['lr']:g} bs {r['batch_size']} x{r['views']} "
                f"{r['epochs']} ep seed {r['seed']}: "
                f"{100 * r['top1']:.2f} ({r['seconds']:.0f} s)",
                flush=True,
            )
    wanted = {key(j) for j in jobs}
    rows = [r for r in done if key(r) in wanted]
    cmd = "python benchmarks/student_budget.py " + shlex.join(sys.argv[1:])
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res = Path("benchmarks/results")
    (res / args.name).mkdir(parents=True, exist_ok=True)
    meta = {
        "command": cmd,
        "machine": machine(),
        "started": start,
        "finished": finished,
        "split": args.split,
        "eval": extra,
        "students": rows,
    }
    (res / args.name / "metrics.json").write_text(json.dumps(meta, indent=2))
    md = (
        f"# Student budget: {args.name} ({args.split} split)\n\n{table(rows)}\n\n"
        "Converged: doubling the budget changed the mean by less than the larger seed std of the two.  \n"
        "Each student: KD (temperature 20) from the teacher, AdamW, cosine schedule, CutMix, RRC; "
        f"{extra or 'other settings: the defaults'}; "
        f"seconds per student are in `{args.name}/metrics.json`.\n\n"
        f"Command: `{cmd}`  \nMachine: {meta['machine']}  \nStarted {start}, finished {finished} (UTC; "
        "a resumed run keeps the students it had).\n"
    )
    (res / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
