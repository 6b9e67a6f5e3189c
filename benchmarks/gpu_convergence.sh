#!/usr/bin/env bash
# Issue #9's open question on a lent GPU: at which student budget does the KD protocol converge?
# Trains the student ladder of `student_budget.py` (IPC 10, wmdd and random, validation split,
# 3 seeds, doubling budgets) on CUDA, resumably, and copies what finished to $OUT.
#
# Prepare here, once (the GPU machine cannot read ../shared; what travels must stay < 64 MiB):
#   python benchmarks/export_val.py runs/gpu/cifar10-val.safetensors   # 15 MB
#   mkdir -p runs/gpu/sets && cp -r runs/sets/ipc10/wmdd runs/sets/ipc10/random runs/gpu/sets/
# Run through the device tool with carry ["runs/gpu"]; to resume a stopped ladder, first copy
# the returned students.jsonl to runs/bench/$NAME/ and carry ["runs/gpu", "runs/bench/$NAME"]:
#   bash benchmarks/gpu_convergence.sh
# EPOCHS, VIEWS (e.g. "1 8": repeated augmentation, cheap on a GPU), SEEDS, WORKERS, LIMIT (s) override.
# Dry run on the CPU: DEVICE=cpu EPOCHS="2 4" SEEDS=2 NAME=gpu_dry OUT=runs/gpu_dry_out bash benchmarks/gpu_convergence.sh
set -uo pipefail
name=${NAME:-gpu_val_ipc10_convergence}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
args=(
  "$name" --device "${DEVICE:-cuda}" --workers "${WORKERS:-4}"
  --data classdata:runs/gpu/cifar10-val.safetensors
  --teacher benchmarks/cache/cifar10-convnet3-plain.safetensors
  --sets wmdd=runs/gpu/sets/wmdd random=runs/gpu/sets/random --split val
  --epochs ${EPOCHS:-2400 4800 9600 19200} --views ${VIEWS:-1} --seeds "${SEEDS:-3}" --batch-size 50
  --precision bf16
)
[ "${DEVICE:-cuda}" = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# stop before the call's limit so the report and the copy still run; finished students are kept
timeout "${LIMIT:-480}" python benchmarks/student_budget.py "${args[@]}"
python benchmarks/student_budget.py "${args[@]}" --report-only > /dev/null
mkdir -p "$OUT" && cp -r "runs/bench/$name" "benchmarks/results/$name.md" "$OUT/"
cat "benchmarks/results/$name.md"
