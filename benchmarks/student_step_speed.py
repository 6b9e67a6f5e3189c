"""Speed of one KD student step (ConvNet-3 student and teacher, CIFAR-10 shapes 3x32x32, batch 50,
random-resized-crop + CutMix, KD at temperature 20, AdamW) on this machine's CPU, by precision
(fp32 / bfloat16 autocast = ``--amp``), ``--compile`` and channels-last memory format.

Each setting runs in its own process (``--threads`` threads) after 5 warm-up steps (which also
compile); rounds are interleaved so that background load shifts every setting alike. Student
training is these steps plus one evaluation at the end, so images/s here bounds a student's speed.

    python benchmarks/student_step_speed.py [--rounds 2] [--steps 40] [--threads 2]

Writes benchmarks/results/student_step_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = [(p, c, cl) for c in (False, True) for p in ("fp32", "bf16") for cl in (False, True)]


def one(precision: str, compile: bool, channels_last: bool, steps: int, threads: int) -> None:
    import torch

    from geodistill.data import cutmix, random_resized_crop
    from geodistill.evaluate.student import kd_loss
    from geodistill.models import create_model
    from geodistill.runtime import generator, make_runtime

    torch.set_num_threads(threads)
    rt = make_runtime("cpu", amp=precision == "bf16", compile=compile)
    spec = {"num_classes": 10, "in_chans": 3, "image_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25] * 3}
    student, teacher = (
        create_model("convnet3", **spec, seed=0),
        create_model("convnet3", **spec, seed=1).eval(),
    )
    if channels_last:  # Runtime.prepare applies it on CUDA only; here it is forced to measure it
        student, teacher = (m.to(memory_format=torch.channels_last) for m in (student, teacher))
    fs, ft = rt.compiled(student), rt.compiled(teacher)
    opt = torch.optim.AdamW(student.parameters(), 1e-3, weight_decay=0.01)
    g = generator(0)
    images = torch.rand(100, 3, 32, 32)
    times = []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        x = random_resized_crop(images[torch.randperm(100, generator=g)[:50]], generator=g)
        x, _, _ = cutmix(x, alpha=1.0, generator=g)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), rt.autocast():
            t = ft(x).float()
        with rt.autocast():
            s = fs(x).float()
        loss = kd_loss(s, t, 20.0).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"s_per_step": statistics.median(times)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        p, c, cl = args.one
        return one(p, c == "1", cl == "1", args.steps, args.threads)
    from geodistill.runtime import machine

    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res: dict[tuple, list[float]] = {}
    for _ in range(args.rounds):
        for p, c, cl in SETTINGS:
            cmd = [sys.executable, __file__, "--one", p, str(int(c)), str(int(cl))]
            cmd += ["--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            s = json.loads(out.strip().splitlines()[-1])["s_per_step"]
            res.setdefault((p, c, cl), []).append(s)
            print(f"{p} compile={c} channels_last={cl}: {1000 * s:.1f} ms/step", flush=True)
    base = statistics.median(res["fp32", False, False])
    rows = [
        "| precision | compile | channels-last | ms / step | images / s | vs fp32 eager |",
        "|---|---|---|---|---|---|",
    ]
    for (p, c, cl), v in res.items():
        s = statistics.median(v)
        rows.append(
            f"| {p} | {'yes' if c else 'no'} | {'yes' if cl else 'no'} | {1000 * s:.1f} "
            f"| {50 / s:.0f} | {base / s:.2f}x |"
        )
    cmd = "python benchmarks/student_step_speed.py " + shlex.join(sys.argv[1:])
    meta = {
        "command": cmd,
        "machine": machine(),
        "started": start,
        "threads": args.threads,
        "s_per_step": {f"{p} compile={int(c)} channels_last={int(cl)}": v for (p, c, cl), v in res.items()},
    }
    out = Path("benchmarks/results")
    (out / "student_step_speed.json").write_text(json.dumps(meta, indent=2))
    md = (
        "# KD student step speed on CPU (ConvNet-3, 3x32x32, batch 50)\n\n" + "\n".join(rows) + "\n\n"
        f"Each setting in its own process, {args.threads} threads, median step time over {args.steps} steps "
        f"after 5 warm-up steps, median of {args.rounds} interleaved rounds.  \n"
        f"Command: `{cmd}`  \nMachine: {meta['machine']}  \nDate: {start} (UTC)\n"
    )
    (out / "student_step_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
