"""The finished students of a (possibly unfinished) ``geodistill run``: mean ± std over seeds of
top-1 and of every robust score, per method, from each method's ``students.json``.

A run writes ``metrics.json`` and its report only when every stage is done, including the
teachers' attacks; this script reports the students as soon as they exist, so a session that
must stop before the end still commits what it measured. It copies each ``students.json`` to
``benchmarks/results/NAME/`` and writes ``benchmarks/results/NAME.md``.

    python benchmarks/students_table.py runs/bench/NAME --note "what was cut and why"
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from geodistill.evaluate.robust import ATTACK_CONFIG, attack_keys
from geodistill.runtime import machine


def mean_std(values: list[float]) -> str:
    m = 100 * statistics.mean(values)
    return f"{m:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{m:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the run's --out folder, runs/bench/NAME")
    ap.add_argument("--note", default="", help="a paragraph for the report (what was cut, why)")
    args = ap.parse_args(argv)
    name = args.run.name
    res = Path("benchmarks/results")
    (res / name).mkdir(parents=True, exist_ok=True)
    rows, keys, protocol = [], [], None
    for path in sorted(args.run.glob("*/students.json")):
        saved = json.loads(path.read_text())
        runs = sorted(saved["runs"], key=lambda r: r["seed"])
        if not runs:
            continue
        shutil.copy(path, res / name / f"{path.parent.name}_students.json")
        protocol = protocol or saved["key"]["evaluate"]
        ev = saved["key"]["evaluate"]  # the scores asked for (a resumed run's files may hold more)
        asked = ["clean", *attack_keys(ev["attacks"], ev["eps"])] if ev["attacks"] else []
        keys = keys or [k for k in asked if all(k in r.get("robust", {}) for r in runs)]
        cells = [mean_std([r["top1"] for r in runs])]
        cells += [mean_std([r["robust"][k] for r in runs]) for k in keys]
        secs = statistics.mean(r["seconds"] for r in runs)
        rows.append([path.parent.name, str(len(runs)), str(runs[0]["steps"]), *cells, f"{secs:.0f}"])
    if not rows:
        print(f"no students.json with finished students under {args.run}", file=sys.stderr)
        return 1
    head = ["method", "seeds", "steps", "top-1 % (whole split)", *[f"{k} %" for k in keys], "train s"]
    lines = [
        f"# {name}: students (mean ± std over seeds)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        f"Split `{protocol['split']}`; students {protocol['epochs']} epochs, batch {protocol['batch_size']}, "
        f"KD temperature {protocol['temperature']}; attacks on a seeded subset of "
        f"{protocol['attack_samples']} images (the `clean` column is that subset), ε in pixel units:",
        "",
        *[f"- `{a.split('@')[0]}`: {ATTACK_CONFIG[a.split('@')[0]]}" for a in protocol["attacks"]],
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    lines += [
        f"Per-student runs: `{name}/*_students.json`.  ",
        f"Table: `python benchmarks/students_table.py {args.run}`  ",
        f"Machine: {machine()}  ",
        f"Written {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} (UTC).",
    ]
    (res / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
