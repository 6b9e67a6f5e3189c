"""Summarize a finished ``mutmut run`` into ``results/mutation.{md,json}``.

Reads mutmut's per-file ``mutants/**/*.py.meta`` (exit code per mutant), counts the verdicts per
module and lists every survivor with its diff (``mutmut show``), so each can be judged: a missing
test, or an equivalent mutant (one that cannot change any observable value). From the repository
root, after ``OMP_NUM_THREADS=1 mutmut run``::

    python benchmarks/mutation_summary.py [--notes benchmarks/mutation_notes.md]

Survivors named in ``benchmarks/mutation_judged.tsv`` (read by hand, with the reason) are filed
as ``equivalent (judged)``, or under the kind a reason starts with in brackets (e.g.
``[stopping rule]``: changes only when an iterative solver stops); the rest are sorted by their
diff alone.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

from geodistill.runtime import machine

RESULTS = Path(__file__).parent / "results"
JUDGED = Path(__file__).parent / "mutation_judged.tsv"


def judged_kind(reason: str) -> str:
    """``[stopping rule] ...`` files a survivor under that kind; any other reason is an equivalent."""
    m = re.match(r"\[([^\]]+)\]", reason)
    return f"{m.group(1)} (judged)" if m else "equivalent (judged)"


def read_judged(path: Path = JUDGED) -> dict[str, str]:
    """``{mutant name: reason}`` from the hand-judged list (tab-separated, ``#`` comments)."""
    if not path.exists():
        return {}
    rows = [
        ln.split("\t", 1) for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    return {name.strip(): reason.strip() for name, reason in rows}


# Survivors whose every changed line matches one of these are classified by that kind (a first
# sort, by the diff alone); every other survivor is "to judge" (mutation_survivors.md has each diff).
KINDS = [
    ("message text", re.compile(r"raise |Error\(|warn|log\(|print\(|help=")),
    (
        "device / dtype placement (CPU tests)",
        re.compile(r"\.to\(None\)|device=None|dtype=None|\.to\(\)|device=\"(XXcpuXX|CPU)\""),
    ),
    (
        "random stream (seed arithmetic, generator)",
        re.compile(r"generator=None|manual_seed|1_?000_?00\d|79(19|20) \*"),
    ),
    ("default of an argument every caller passes", re.compile(r"^[+-]\s+\w+: [\w\[\]| .]+ = ")),
    ("inf spelling", re.compile(r"float\(\"-?(INF|inf)\"\)")),
]


def kind_of(diff: str) -> str:
    changed = [ln for ln in diff.splitlines() if ln.startswith("+")]
    for name, pattern in KINDS:
        if changed and all(pattern.search(ln) for ln in changed):
            return name
    return "to judge"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", default="mutants", help="mutmut's working directory")
    ap.add_argument("--notes", default=None, help="Markdown judged by hand, appended verbatim")
    args = ap.parse_args()
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for meta in sorted(Path(args.mutants, "src").rglob("*.py.meta")):
        module = str(meta.relative_to(Path(args.mutants, "src"))).removesuffix(".py.meta")
        module = module.replace("/", ".")
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = status_by_exit_code[code]
            counts[module][status] += 1
            if status == "survived":
                survivors[module].append(name)
    statuses = ["killed", "survived", "timeout", "no tests", "not checked", "suspicious", "segfault"]
    total = Counter()
    for c in counts.values():
        total.update(c)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Mutation testing",
        "",
        f"mutmut over the math modules (`[tool.mutmut]` in `pyproject.toml`), {stamp}, {machine()}.",
        "Command: `OMP_NUM_THREADS=1 mutmut run --max-children 1 && python benchmarks/mutation_summary.py`",
        "",
        "| module | " + " | ".join(statuses) + " |",
        "|---|" + "---:|" * len(statuses),
    ]
    for module in sorted(counts):
        lines.append(f"| `{module}` | " + " | ".join(str(counts[module][s]) for s in statuses) + " |")
    lines.append("| **all** | " + " | ".join(f"**{total[s]}**" for s in statuses) + " |")
    lines += [
        "",
        "`killed`: some test failed; `survived`: every selected test passed; `no tests`: no test of",
        "the selection executes the mutated function. The full diff of every survivor is in",
        "`mutation_survivors.md`.",
        "",
    ]
    diffs = ["# Surviving mutants", "", f"{stamp}; `mutmut show NAME` for each.", ""]
    kinds: dict[str, Counter] = defaultdict(Counter)
    judged = read_judged()
    for module in sorted(survivors):
        diffs.append(f"## {module} ({len(survivors[module])})\n")
        for name in survivors[module]:
            shown = get_diff_for_mutant(name, path=Path("src", *module.split(".")).with_suffix(".py"))
            diff = "\n".join(
                ln
                for ln in shown.splitlines()
                if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))
            )
            kind = judged_kind(judged[name]) if name in judged else kind_of(diff)
            kinds[module][kind] += 1
            why = [f"Judged: {judged[name]}", ""] if name in judged else []
            diffs += [f"`{name}` ({kind})", *why, "```diff", diff, "```", ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mutation_survivors.md").write_text("\n".join(diffs) + "\n")
    names = sorted({k for c in kinds.values() for k in c})
    lines += [
        "Survivors by kind: `equivalent (judged)` were read by hand (`benchmarks/mutation_judged.tsv`",
        "gives each one's reason); the others are sorted by their diff alone (messages, device",
        "placement, random streams, defaults every caller overrides, spellings); `to judge` are not",
        "yet read:",
        "",
        "| module | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    lines += [f"| `{m}` | " + " | ".join(str(kinds[m][k]) for k in names) + " |" for m in sorted(kinds)]
    lines.append("")
    if args.notes:
        lines += [Path(args.notes).read_text()]
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")
    summary = {
        "date": stamp,
        "machine": machine(),
        "counts": {m: dict(c) for m, c in counts.items()},
        "survivor_kinds": {m: dict(c) for m, c in kinds.items()},
        "survivors": survivors,
    }
    (RESULTS / "mutation.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines[5:]))


if __name__ == "__main__":
    main()
