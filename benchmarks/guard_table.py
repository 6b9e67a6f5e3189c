"""One table from several committed robustness pieces: per set and teacher, students' top-1 and
every attack at every ε (mean ± std over seeds), each cell with the file it comes from.

The GUARD benchmark ran in pieces (one ``bench.sh --evaluate`` per set, teacher and attack list,
some stopped after the students by ``students_table.py``); this merges them without retyping a
number. A row is a set label and a teacher (by the weights' sha256, named after the matching file
in ``benchmarks/cache``). Where two pieces trained the same students (same label, teacher and
seeds), the first piece named gives top-1 and the others are listed under the table, which shows
whether the retrained students reproduced.

    python benchmarks/guard_table.py NAME benchmarks/results/PIECE ... [--note TEXT]

Writes ``benchmarks/results/NAME.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

from students_table import mean_std  # this folder is on sys.path when run as a script

from geodistill.models.registry import file_sha256
from geodistill.runtime import machine


def teacher_names(cache: Path = Path("benchmarks/cache")) -> dict[str, str]:
    """sha256 of each committed teacher → its file name."""
    return {file_sha256(p): p.name for p in sorted(cache.glob("*.safetensors"))}


PROTOCOL = ("split", "attack_samples", "epochs", "batch_size", "temperature", "seed")


def protocol(evaluate: dict, runs: list[dict]) -> dict:
    """What must match across pieces: the evaluate settings above and the students' optimizer
    steps, which at equal epochs and batch tell sets of different size (IPC) apart."""
    return {**{k: evaluate[k] for k in PROTOCOL}, "steps": sorted({r["steps"] for r in runs})}


def pieces(folder: Path) -> tuple[list[dict], list[tuple[str, str, list[dict]]]]:
    """The student protocols and ``(set label, teacher sha256, runs)`` of one committed piece: a
    finished run's ``metrics.json`` (its teacher's own scores become a ``teacher`` row, top-1 on
    the whole split) or the ``*_students.json`` of a run stopped after its students."""
    m = folder / "metrics.json"
    if m.exists():
        d = json.loads(m.read_text())
        t = d["teacher"]
        rows = [(label, t["sha256"], v["runs"]) for label, v in d["methods"].items()]
        protocols = [protocol(d["protocol"], runs) for _, _, runs in rows]
        if "robust" in t:
            rows.append(("teacher", t["sha256"], [{"top1": t["top1"], "robust": t["robust"]}]))
        return protocols, rows
    out, protocols = [], []
    for p in sorted(folder.glob("*_students.json")):
        d = json.loads(p.read_text())
        label = p.name.removesuffix("_students.json").replace("_guard", "+guard")
        out.append((label, d["key"]["teacher"], d["runs"]))
        protocols.append(protocol(d["key"]["evaluate"], d["runs"]))
    if not out:
        raise SystemExit(f"{folder}: neither metrics.json nor *_students.json")
    return protocols, out


def code_span(text: str) -> str:
    """``text`` as one Markdown code span: fenced by one backtick more than its longest backtick
    run, so a command whose arguments contain backticks still renders (and copies) whole."""
    fence = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    pad = " " if fence != "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def attack_order(k: str) -> tuple:
    name, _, eps = k.partition("@")
    return (name != "pgd100", name, float(eps.split("/")[0]) if eps else 0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("pieces", nargs="+", type=Path)
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    names = teacher_names()
    rows: dict[tuple[str, str], dict] = {}
    protocols = {}
    for folder in args.pieces:
        protocols[folder.name], found = pieces(folder)
        for label, sha, runs in found:
            row = rows.setdefault((label, sha), {"top1": None, "cells": {}, "again": []})
            top1 = (mean_std([r["top1"] for r in runs]), len(runs), folder.name)
            if row["top1"] is None:
                row["top1"] = top1
            else:
                row["again"].append(top1)
            for k in {k for r in runs for k in r.get("robust", {})} - {"clean"}:
                vals = [r["robust"][k] for r in runs if k in r.get("robust", {})]
                row["cells"].setdefault(k, (mean_std(vals), folder.name))
    if len({json.dumps(p, sort_keys=True) for ps in protocols.values() for p in ps}) > 1:  # not comparable
        raise SystemExit("pieces with different protocols:\n" + json.dumps(protocols, indent=1))
    attacks = sorted({k for row in rows.values() for k in row["cells"]}, key=attack_order)
    files = sorted(
        {f for row in rows.values() for _, f in row["cells"].values()} | {r["top1"][2] for r in rows.values()}
    )
    ref = {f: i + 1 for i, f in enumerate(files)}
    head = "| set | teacher | seeds | top-1 % | " + " | ".join(f"{k} %" for k in attacks) + " |"
    lines = [head, "|" + "---|" * (4 + len(attacks))]
    order = lambda kv: (
        kv[0][0] != "teacher",
        kv[0][0].split("+")[0],
        "+" in kv[0][0],
        names.get(kv[0][1], ""),
    )
    for (label, sha), row in sorted(rows.items(), key=order):
        t1, n, f = row["top1"]
        cells = [
            f"{row['cells'][k][0]} [{ref[row['cells'][k][1]]}]" if k in row["cells"] else "—" for k in attacks
        ]
        seeds = "—" if label == "teacher" else n
        head = f"| {label} | `{names.get(sha, sha[:12])}` | {seeds} | {t1} [{ref[f]}] | "
        lines.append(head + " | ".join(cells) + " |")
    again = [
        f"- {label}: {t1} ({n} seeds) in [{ref[f]}] again"
        for (label, _), row in rows.items()
        for t1, n, f in row["again"]
    ]
    cmd = "python benchmarks/guard_table.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    md = "\n".join(
        [
            f"# {args.name}: robustness pieces in one table",
            "",
            *lines,
            "",
            "Mean ± std over the student seeds (a `teacher` row: the teacher itself, top-1 on the whole"
            " split); every attack on the same seeded subset of the split. Protocol shared by every piece"
            f" (checked): {json.dumps(next(iter(protocols.values()))[0])}."
            " [n]: the piece the cell comes from:",
            "",
            *(f"{i}. `benchmarks/results/{f}.md`" for f, i in ref.items()),
            "",
            *(["The same students trained again in a later piece (top-1):", "", *again, ""] if again else []),
            *([args.note, ""] if args.note else []),
            f"Command: {code_span(cmd)}  ",
            f"Machine (this table; each piece names its own): {machine()}  ",
            f"Written {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} (UTC).",
            "",
        ]
    )
    out = Path("benchmarks/results") / f"{args.name}.md"
    out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
