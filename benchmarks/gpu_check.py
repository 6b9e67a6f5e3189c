"""One-shot CUDA check and throughput measurement, for a machine with a GPU.

Checks that the CUDA paths run and agree with the CPU (AMP bfloat16, channels-last, many
classes per synthesis batch, stats, attacks, the whole demo under `--amp --channels-last`), then
measures throughput on CIFAR-shaped random data: teacher steps, each squeeze regularizer's cost
relative to plain training, synthesis iterations, student KD steps and PGD-100.

    python benchmarks/gpu_check.py --out runs/gpu        # writes gpu_check.json / gpu_check.md
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch

from geodistill.config import DistillConfig, EvalConfig, SqueezeConfig
from geodistill.data import ClassData, load_dataset
from geodistill.evaluate import evaluate_distilled, robust_accuracy
from geodistill.models import create_model
from geodistill.runtime import machine, make_runtime, versions
from geodistill.stats import compute_class_stats
from geodistill.synth import distill
from geodistill.teacher import train_teacher
from geodistill.teacher.regularizers import objective

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="runs/gpu")
ap.add_argument("--quick", action="store_true", help="fewer timing repeats")
ap.add_argument("--dry", action="store_true", help="logic check on the CPU: convnet3 only, tiny sizes")
args = ap.parse_args()
DEV = "cpu" if args.dry else "cuda"
ARCHS = ("convnet3",) if args.dry else ("convnet3", "resnet18")


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def peak_gib():
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEV == "cuda" else None


def reset_peak():
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()


out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
res: dict = {
    "machine": machine(),
    "versions": versions(),
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "checks": {},
}
REPS = 1 if args.dry else 3 if args.quick else 8


def save():
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2))


def check(name):
    def deco(fn):
        t0 = time.perf_counter()
        try:
            res["checks"][name] = {"ok": True, **(fn() or {})}
        except Exception as e:  # record and go on: one failure must not hide the others
            res["checks"][name] = {
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
                "trace": traceback.format_exc()[-2000:],
            }
        res["checks"][name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(name, res["checks"][name].get("ok"), res["checks"][name].get("error", ""), flush=True)
        save()
        return fn

    return deco


def timed(fn, reps=REPS, warmup=2) -> float:
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


cpu = make_runtime("cpu")
gpu = make_runtime(DEV)
amp = make_runtime(DEV, amp=True)
ampcl = make_runtime(DEV, amp=True, channels_last=True)
digits = load_dataset("digits", image_size=16, val_fraction=0.1)


@check("teacher_digits_fp32_amp_channels_last")
def _():
    accs = {}
    for name, rt in (("cpu", cpu), ("cuda_fp32", gpu), ("cuda_amp_cl", ampcl)):
        if args.dry and name != "cpu":
            continue
        r = train_teacher(
            digits, SqueezeConfig(arch="convnet", arch_kwargs={"width": 32}, epochs=10, batch_size=64), rt
        )
        accs[name] = r.top1
    assert all(a > 0.9 for a in accs.values()), accs
    m = ampcl.prepare(create_model("convnet3", num_classes=10, in_chans=3, image_size=32))
    assert DEV == "cpu" or m.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    return {"top1": accs}


teacher_cpu = train_teacher(
    digits, SqueezeConfig(arch="convnet", arch_kwargs={"width": 32}, epochs=10, batch_size=64), cpu
).model


@check("class_stats_cuda_equal_cpu")
def _():
    a = compute_class_stats(teacher_cpu, digits, cpu)
    tg = gpu.prepare(
        create_model(teacher_cpu.arch, **{k: v for k, v in teacher_cpu.spec.items() if k != "name"})
    )
    tg.load_state_dict(teacher_cpu.state_dict())
    b = compute_class_stats(tg, digits, gpu)
    diff = max(
        (a.features - b.features).abs().max().item(),
        *((a.bn_var[k] - b.bn_var[k]).abs().max().item() for k in a.bn_var),
    )
    assert diff < 5e-3, diff  # cuDNN uses TF32 for convolutions by default
    return {"max_abs_diff": diff}


@check("synthesis_multi_class_batches_and_amp")
def _():
    tg = gpu.prepare(
        create_model(teacher_cpu.arch, **{k: v for k, v in teacher_cpu.spec.items() if k != "name"})
    )
    tg.load_state_dict(teacher_cpu.state_dict())
    st = compute_class_stats(tg, digits, gpu)
    outs = {}
    for name, rt, bc in (("fp32_10", gpu, 10), ("fp32_3", gpu, 3), ("amp_10", amp, 10)):
        ds = distill(
            tg, digits, st, DistillConfig(method="wmdd", ipc=10, iterations=100, batch_classes=bc), rt
        )
        assert ds.images.shape == (100, 1, 16, 16) and 0 <= ds.images.min() and ds.images.max() <= 1
        outs[name] = ds
    # batching classes differently changes only the shared augmentation draws, not the losses:
    # the sets must be close in what students learn from them
    sc = {}
    for name, ds in outs.items():
        s = evaluate_distilled(ds, tg, digits, EvalConfig(epochs=100, seeds=1, split="val"), amp)
        sc[name] = s.top1
    assert min(sc.values()) > 0.8, sc
    return {"student_val_top1": sc}


@check("robust_pgd100_cuda")
def _():
    tg = gpu.prepare(
        create_model(teacher_cpu.arch, **{k: v for k, v in teacher_cpu.spec.items() if k != "name"})
    )
    tg.load_state_dict(teacher_cpu.state_dict())
    x, y = digits.float(digits.x_test[:200]), digits.y_test[:200]
    a = robust_accuracy(tg, x, y, ["pgd100", "mim"], [8 / 255], gpu, num_classes=10)
    b = robust_accuracy(teacher_cpu, x, y, ["pgd100", "mim"], [8 / 255], cpu, num_classes=10)
    assert abs(a["pgd100@8/255"] - b["pgd100@8/255"]) <= 0.03, (a, b)
    return {"cuda": a, "cpu": b}


@check("demo_cuda_amp_channels_last")
def _():
    from geodistill.cli import main

    if args.dry:
        return {"skipped": "dry run"}
    rc = main(
        [
            "demo",
            "--out",
            str(out / "demo"),
            "--device",
            DEV,
            "--amp",
            "--channels-last",
            "--overwrite",
            "--quiet",
        ]
    )
    assert rc == 0
    m = json.loads((out / "demo" / "metrics.json").read_text())
    return {"top1": {k: round(v["top1"], 4) for k, v in m["methods"].items()}, "seconds": m["seconds"]}


# --- throughput on CIFAR-shaped data ------------------------------------------------------------
g = torch.Generator().manual_seed(0)
N = 200 if args.dry else 2000
x32 = (torch.rand(N, 3, 32, 32, generator=g) * 255).to(torch.uint8)
y32 = torch.arange(10).repeat(N // 10)
fake = ClassData("fake-cifar", [str(i) for i in range(10)], x32, y32, x32[:500], y32[:500])
thr: dict = {}
res["throughput"] = thr


def model(arch, rt):
    m = rt.prepare(
        create_model(
            arch, num_classes=10, in_chans=3, image_size=32, mean=[0.49, 0.48, 0.45], std=[0.25] * 3, seed=0
        )
    )
    return m


@check("throughput_teacher_and_regularizers")
def _():
    for arch in ARCHS:
        for name, rt in (("fp32", gpu), ("amp_cl", ampcl)):
            m = model(arch, rt)
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            x = torch.rand(256, 3, 32, 32, device=DEV)
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (256,), device=DEV)
            row = {}
            for reg in ("none", "curvature", "curvature-simple", "gradnorm", "fgsm", "pgd", "trades"):

                def step(m=m, x=x, y=y, reg=reg, opt=opt, rt=rt):
                    with rt.autocast():
                        loss, _, _ = objective(
                            m, x, y, reg, generator=torch.Generator(device=DEV).manual_seed(0)
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                try:
                    reset_peak()
                    t = timed(step)
                    row[reg] = {"img_per_s": round(256 / t), "peak_gib": peak_gib()}
                except Exception as e:
                    row[reg] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            base = row["none"].get("img_per_s")
            for r in row.values():
                if "img_per_s" in r and base:
                    r["cost_vs_plain"] = round(base / r["img_per_s"], 2)
            thr[f"squeeze_{arch}_{name}_b256"] = row
            save()


@check("throughput_synthesis")
def _():
    for arch in ARCHS:
        m = model(arch, gpu)
        with torch.no_grad():
            m(torch.rand(256, 3, 32, 32, device=DEV))  # train-mode pass: BN running statistics
        m.eval()
        st = compute_class_stats(m, fake, gpu)
        for ipc in (10,) if args.dry else (10, 50):
            for name, rt in (("fp32", gpu), ("amp", amp)):
                iters = 2 if args.dry else 20
                t0 = time.perf_counter()
                distill(
                    m, fake, st, DistillConfig(method="wmdd", ipc=ipc, iterations=iters, batch_classes=10), rt
                )
                sync()
                secs = time.perf_counter() - t0
                thr[f"synthesis_{arch}_ipc{ipc}_{name}"] = {
                    "s_per_iteration_10_classes": round(secs / iters, 4),
                    "images": 10 * ipc,
                }
                save()


@check("throughput_students_and_pgd")
def _():
    for arch in ARCHS:
        t = model(arch, gpu).eval()
        ds = distill(t, fake, None, DistillConfig(method="random", ipc=10 if args.dry else 50), gpu)
        for name, rt in (("fp32", gpu), ("amp_cl", ampcl)):
            cfg = EvalConfig(epochs=5, seeds=1, batch_size=100)
            t0 = time.perf_counter()
            from geodistill.evaluate import train_student

            train_student(ds, t, fake, cfg, rt, 0)
            sync()
            thr[f"student_{arch}_{name}_b100"] = {
                "img_per_s": round(5 * len(ds.labels) / (time.perf_counter() - t0))
            }
        n = 50 if args.dry else 500
        x, y = fake.float(fake.x_test[:n]), fake.y_test[:n]
        t0 = time.perf_counter()
        robust_accuracy(t, x, y, ["pgd100"], [2 / 255], gpu, num_classes=10, batch_size=500)
        sync()
        thr[f"pgd100_{arch}"] = {"img_per_s": round(n / (time.perf_counter() - t0))}
        save()


lines = [
    f"# GPU check ({res['machine']}, {res['date']})",
    "",
    "| check | ok | seconds | detail |",
    "|---|---|---|---|",
]
for k, v in res["checks"].items():
    detail = v.get("error") or json.dumps({a: b for a, b in v.items() if a not in ("ok", "seconds", "trace")})
    lines.append(f"| {k} | {v['ok']} | {v['seconds']} | {detail[:300]} |")
lines += ["", "## Throughput", "", "```json", json.dumps(thr, indent=1), "```"]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
save()
print("\n".join(lines))
