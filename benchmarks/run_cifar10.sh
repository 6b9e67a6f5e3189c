#!/usr/bin/env bash
# Run one CIFAR-10 benchmark config and copy its metrics and report into benchmarks/results/
# with the exact command, machine and date.  Usage (from the repository root):
#   bash benchmarks/run_cifar10.sh benchmarks/configs/cifar10_ipc10.yaml [extra geodistill flags]
set -euo pipefail
cfg=$1; shift
name=$(basename "$cfg" .yaml)
out=runs/bench/$name
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1000000000000} MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-1000000000}
[ -f benchmarks/cache/cifar10-convnet3-teacher.safetensors ] || python benchmarks/train_teacher.py
cmd="geodistill run $cfg --out $out --resume $*"
start=$(date -u +%FT%TZ)
$cmd
mkdir -p benchmarks/results
python - "$out" "$name" "$cmd" "$start" <<'PY'
import json, sys
from geodistill.runtime import machine
out, name, cmd, start = sys.argv[1:]
m = json.load(open(f"{out}/metrics.json"))
m["benchmark"] = {"command": cmd, "started": start, "machine": machine()}
json.dump(m, open(f"benchmarks/results/{name}.json", "w"), indent=2)
report = open(f"{out}/report.md").read().split("## Distilled images")[0]
open(f"benchmarks/results/{name}.md", "w").write(
    report + f"\nCommand: `{cmd}`  \nMachine: {m['benchmark']['machine']}  \nStarted: {start}\n")
PY
cp "$out"/grid_wmdd.png "benchmarks/results/${name}_grid_wmdd.png" 2>/dev/null || true
