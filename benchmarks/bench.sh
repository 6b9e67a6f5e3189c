#!/usr/bin/env bash
# Run one benchmark piece (resumable) and copy its metrics, report and grids into
# benchmarks/results/NAME.{json,md} with the exact command, machine and dates.
# From the repository root:
#   bash benchmarks/bench.sh benchmarks/configs/NAME.yaml [run flags]   # geodistill run, NAME = file name
#   bash benchmarks/bench.sh --evaluate NAME [evaluate flags]           # geodistill evaluate of existing sets
set -euo pipefail
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1000000000000} MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-1000000000}
if [ "$1" = "--evaluate" ]; then
  name=$2; shift 2
  out=runs/bench/$name
  cmd="geodistill evaluate $* --out $out --resume"  # finished students and teacher scores are kept
else
  cfg=$1; shift
  name=$(basename "$cfg" .yaml)
  out=runs/bench/$name
  for t in $(grep -o 'benchmarks/cache/[A-Za-z0-9_.-]*safetensors' "$cfg" | sort -u); do
    [ -f "$t" ] || { echo "missing teacher $t: run benchmarks/train_teacher.py first" >&2; exit 2; }
  done
  cmd="geodistill run $cfg --out $out --resume $*"
fi
start=$(date -u +%FT%TZ)
$cmd
python - "$out" "$name" "$cmd" "$start" <<'PY'
import json, shutil, sys, time
from pathlib import Path
from geodistill.runtime import machine
out, name, cmd, start = sys.argv[1:]
res = Path("benchmarks/results")
res.mkdir(parents=True, exist_ok=True)
m = json.load(open(f"{out}/metrics.json"))
m["name"] = name
m["benchmark"] = {"command": cmd, "started": start, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "machine": machine()}
(res / name).mkdir(exist_ok=True)
json.dump(m, open(res / name / "metrics.json", "w"), indent=2)
for grid in Path(out).glob("grid_*.png"):
    shutil.copy(grid, res / name / grid.name)
report = open(f"{out}/report.md").read().split("## Plots")[0].split("## Distilled images")[0]
(res / f"{name}.md").write_text(
    report + f"\nCommand: `{cmd}`  \nMachine: {m['benchmark']['machine']}  \n"
    f"Started {start}, finished {m['benchmark']['finished']} (UTC). Full metrics: `{name}/metrics.json`\n")
PY
