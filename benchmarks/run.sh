#!/usr/bin/env bash
# Run one benchmark config (resumable) and copy its metrics, report and grids into
# benchmarks/results/<config name>.{json,md} with the exact command, machine and dates.
# Usage, from the repository root:  bash benchmarks/run.sh benchmarks/configs/NAME.yaml [flags]
set -euo pipefail
cfg=$1; shift
name=$(basename "$cfg" .yaml)
out=runs/bench/$name
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1000000000000} MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-1000000000}
for t in $(grep -o 'benchmarks/cache/[A-Za-z0-9_.-]*safetensors' "$cfg" | sort -u); do
  [ -f "$t" ] || { echo "missing teacher $t: run benchmarks/train_teacher.py first" >&2; exit 2; }
done
cmd="geodistill run $cfg --out $out --resume $*"
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
m["benchmark"] = {"command": cmd, "started": start, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "machine": machine()}
json.dump(m, open(res / f"{name}.json", "w"), indent=2)
report = open(f"{out}/report.md").read().split("## Distilled images")[0]
(res / f"{name}.md").write_text(
    report + f"\nCommand: `{cmd}`  \nMachine: {m['benchmark']['machine']}  \n"
    f"Started {start}, finished {m['benchmark']['finished']}\n")
for grid in Path(out).glob("grid_*.png"):
    shutil.copy(grid, res / f"{name}_{grid.name}")
PY
