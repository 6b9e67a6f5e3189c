"""One report from many runs: ``report.md`` and a self-contained ``report.html``.

Runs are grouped into one table per dataset x IPC x scored split. Rows whose protocols differ
(teacher, student recipe, attacks) are never merged silently: the table is split and the
differing fields are named. Plots: accuracy vs IPC, accuracy vs synthesis iterations, robust
accuracy vs ε, time per stage; and the per-class image grid of every method.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from ..files import GeodistillError, atomic_path, read_json, write_text

# fields of the evaluation protocol that make numbers comparable (seeds and split excluded:
# more seeds do not change what is measured, the split is part of the table key)
PROTOCOL = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "temperature",
    "cutmix",
    "crop_scale",
    "weighted",
    "attack_samples",
)


def load_runs(dirs: list[Path]) -> list[dict]:
    runs = []
    for d in dirs:
        f = d / "metrics.json" if d.is_dir() else d
        if not f.exists():
            raise GeodistillError(f"{d}: no metrics.json (not a finished geodistill run or evaluation)")
        m = read_json(f)
        if not isinstance(m, dict) or not isinstance(m.get("methods"), dict) or "teacher" not in m:
            raise GeodistillError(f"{f}: not a geodistill metrics.json (no methods/teacher)")
        m["_dir"] = f.parent
        m["_name"] = f.parent.resolve().name
        runs.append(m)
    names = [r["_name"] for r in runs]
    for r in runs:  # runs in folders of the same name: add the parent folder
        if names.count(r["_name"]) > 1:
            r["_name"] = f"{r['_dir'].resolve().parent.name}/{r['_name']}"
    return runs


def _teacher_key(t: dict) -> str:
    return t.get("sha256") or f"{t.get('arch')}@{t.get('top1')}"


def protocol_of(run: dict, entry: dict) -> dict:
    """The comparability-defining fields of one row."""
    p = run.get("protocol", {})
    t = run.get(entry.get("teacher", "teacher")) or run["teacher"]
    out = {k: p.get(k) for k in PROTOCOL}
    out["teacher"] = _teacher_key(t)
    out["attacks"] = sorted(p.get("attacks") or [])
    out["eps"] = p.get("eps") if p.get("attacks") else None
    return out


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def rows_of(run: dict) -> list[dict]:
    """One row per method x student of a run."""
    rows = []
    for name, entry in run["methods"].items():
        t = run.get(entry.get("teacher", "teacher")) or run["teacher"]
        refs = (run.get("protocol") or {}).get("reference_top1") or {}
        for arch, sc in [
            (entry.get("student") or t.get("arch"), entry),
            *entry.get("by_student", {}).items(),
        ]:
            robust = defaultdict(list)
            for r in sc.get("runs", []):
                for k, v in (r.get("robust") or {}).items():
                    robust[k].append(v)
            ref = refs.get(arch) if arch != t.get("arch") else None
            base = ref or t.get("top1")
            rows.append(
                {
                    "run": run["_name"],
                    "method": name,
                    "student": arch,
                    "top1": sc["top1"],
                    "top1_std": sc["top1_std"],
                    "top5": sc.get("top5"),
                    "recovery": sc["top1"] / base if base else None,
                    "recovery_of": "full-data student" if ref else "teacher",
                    "seeds": sc["seeds"],
                    "steps": (sc.get("runs") or [{}])[0].get("steps"),
                    "robust": {k: _ms(v) for k, v in robust.items()},
                    "distill_seconds": entry.get("distill_seconds"),
                    "eval_seconds": entry.get("eval_seconds", sc.get("seconds")),
                    "protocol": protocol_of(run, entry),
                    "iterations": ((entry.get("distill") or {}).get("config") or {}).get("iterations"),
                    "config": (entry.get("distill") or {}).get("config") or {},
                    "settings": settings_of(entry),
                }
            )
    return rows


def settings_of(entry: dict) -> str:
    """The synthesis settings a row's images were made with, resolved (labels such as
    ``wmdd[r_feat=0]`` are relative to the defaults of the version that ran them)."""
    d = entry.get("distill") or {}
    cfg = d.get("config") or {}
    res = {**cfg, **(d.get("resolved") or {})}
    if cfg.get("method") not in ("wmdd", "sre2l"):
        return ""
    parts = [
        f"{res.get('init')} init",
        f"lr {res.get('lr')}",
        f"CE {res.get('r_ce')}",
        f"BN {res.get('r_bn')}"
        + (f" (first x{res['first_bn']:g})" if res.get("first_bn") not in (None, 1) else ""),
    ]
    if cfg["method"] == "wmdd":
        parts.append(f"feat {res.get('r_feat')}" + (" paper" if res.get("feat_loss") == "paper" else ""))
    parts.append(f"{res.get('iterations')} it")
    return ", ".join(parts)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _split_by_protocol(rows: list[dict]) -> list[tuple[dict, list[dict], list[str]]]:
    """Rows grouped by identical protocol; each group with the fields that differ from the others."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps(r["protocol"], sort_keys=True), []).append(r)
    protos = [json.loads(k) for k in groups]
    differ = sorted({k for p in protos for k in p if len({json.dumps(q.get(k)) for q in protos}) > 1})
    return [(json.loads(k), v, differ) for k, v in groups.items()]


def table(rows: list[dict], robust_keys: list[str]) -> list[str]:
    head = ["method", "student", "top-1 %", "± std", "top-5 %", "recovery", *[f"{k} %" for k in robust_keys]]
    head += ["seeds", "steps", "distill s", "eval s", "run", "synthesis settings"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: -r["top1"]):
        rob = []
        for k in robust_keys:
            m = r["robust"].get(k)
            rob.append("—" if m is None else f"{100 * m[0]:.2f} ± {100 * m[1]:.2f}")
        rec = "—" if r["recovery"] is None else f"{r['recovery']:.3f}"
        cells = [r["method"], r["student"], _pct(r["top1"]), _pct(r["top1_std"]), _pct(r["top5"]), rec, *rob]
        cells += [str(r["seeds"]), str(r["steps"] or "—")]
        cells += [f"{r['distill_seconds']:.0f}" if r["distill_seconds"] is not None else "—"]
        cells += [f"{r['eval_seconds']:.0f}" if r["eval_seconds"] is not None else "—", r["run"]]
        cells += [r.get("settings") or ""]
        out.append("| " + " | ".join(cells) + " |")
    return out


def protocol_lines(run: dict) -> list[str]:
    p = run.get("protocol", {})
    lines = []
    for key in ("teacher", "teacher_guard"):
        t = run.get(key)
        if not t:
            continue
        sq = t.get("squeeze") or {}
        lines.append(
            f"- {'GUARD teacher (+guard rows)' if key == 'teacher_guard' else 'teacher'}: `{t.get('arch')}`, "
            f"regularizer `{t.get('regularizer', 'none')}`"
            + (
                f" (λ {sq.get('reg_lambda') or 'default'}, h {sq.get('reg_h')})"
                if "curvature" in str(t.get("regularizer"))
                else ""
            )
            + f", top-1 {_pct(t.get('top1'))} % on {t.get('split', 'test')}"
            + (f", {sq.get('epochs')} epochs" if sq else "")
            + (f", {t['seconds_per_epoch']:.1f} s/epoch" if t.get("seconds_per_epoch") else "")
            + (f", sha256 {t['sha256'][:12]}" if t.get("sha256") else "")
            + (
                ("; robust " + ", ".join(f"{k} {_pct(v)} %" for k, v in t["robust"].items()))
                if t.get("robust")
                else ""
            )
        )
    if p:
        lines.append(
            f"- students: {p.get('epochs')} epochs (every image once per epoch), "
            f"batch {p.get('batch_size')}, "
            f"{p.get('optimizer')} lr {p.get('lr')} wd {p.get('weight_decay')}, cosine; KD temperature "
            f"{p.get('temperature')}; random-resized-crop {p.get('crop_scale')}, CutMix β {p.get('cutmix')}; "
            f"loss weighted by barycenter mass: {p.get('weighted')}; {p.get('seeds')} seeds; scored on the "
            f"{p.get('split')} split"
        )
        if p.get("val_split"):
            lines.append(f"- validation split: {p['val_split']} of train, unseen by teachers and methods")
        for a, c in (p.get("attack_config") or {}).items():
            lines.append(
                f"- attack `{a}` at ε {p.get('eps')} on {p.get('attack_samples') or 'all'} images: {c}"
            )
        if p.get("versions"):
            lines.append(f"- attack library: {p['versions']}")
    lines.append(
        f"- device: {run.get('device', '?')}; date {run.get('date', '?')}; geodistill "
        f"{(run.get('versions') or {}).get('geodistill', '?')}"
    )
    return lines


def _plot(path: Path, draw) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def plots(rows: list[dict], runs: list[dict], out: Path) -> dict[str, Path]:
    made: dict[str, Path] = {}
    # accuracy vs IPC, per dataset and method (default student)
    by = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for r in rows_of(run):
            if r["student"] == (run["teacher"].get("arch")):
                by[(run["dataset"], run.get("split", "test"))][r["method"]].append(
                    (run["ipc"], r["top1"], r["top1_std"])
                )
    for (ds, split), methods in by.items():
        if len({i for v in methods.values() for i, _, _ in v}) < 2:
            continue

        def draw(ax, methods=methods, ds=ds, split=split):
            for m, pts in sorted(methods.items()):
                pts = sorted(pts)
                ax.errorbar(
                    [p[0] for p in pts],
                    [100 * p[1] for p in pts],
                    yerr=[100 * p[2] for p in pts],
                    marker="o",
                    capsize=3,
                    label=m,
                )
            ax.set_xscale("log")
            ax.set_xlabel("images per class")
            ax.set_ylabel(f"top-1 % ({split})")
            ax.set_title(f"{ds}: accuracy vs IPC")
            ax.legend(fontsize=7)

        made[f"accuracy vs IPC ({ds}, {split})"] = _plot(out / f"plot_ipc_{ds}_{split}.png", draw)
    # accuracy vs synthesis iterations: rows of one run and method whose configs differ only there
    for run in runs:
        curves = defaultdict(list)
        rr = rows_of(run)
        for r in rr:
            if r["iterations"] is None or r["config"].get("method") not in ("wmdd", "sre2l"):
                continue
            key = json.dumps({k: v for k, v in r["config"].items() if k != "iterations"}, sort_keys=True)
            curves[(r["config"]["method"], key)].append((r["iterations"], r["top1"], r["top1_std"]))
        km = next((r for r in rr if r["config"].get("method") == "kmeans"), None)
        curves = {k: v for k, v in curves.items() if len({i for i, _, _ in v}) >= 2}
        if not curves:
            continue

        def draw(ax, curves=curves, km=km, run=run):
            for (m, _), pts in curves.items():
                if m == "wmdd" and km is not None:
                    pts = [(0, km["top1"], km["top1_std"]), *pts]
                pts = sorted(pts)
                ax.errorbar(
                    [p[0] for p in pts],
                    [100 * p[1] for p in pts],
                    yerr=[100 * p[2] for p in pts],
                    marker="o",
                    capsize=3,
                    label=m + (" (0 = kmeans)" if m == "wmdd" and km else ""),
                )
            ax.set_xlabel("synthesis iterations")
            ax.set_ylabel(f"top-1 % ({run.get('split')})")
            ax.set_title(f"{run['_name']}: accuracy vs iterations")
            ax.legend(fontsize=7)

        made[f"accuracy vs iterations ({run['_name']})"] = _plot(
            out / f"plot_iterations_{run['_name']}.png", draw
        )
    # robust accuracy vs eps
    for run in runs:
        rr = [r for r in rows_of(run) if r["robust"]]
        attacks = sorted({k.split("@")[0] for r in rr for k in r["robust"] if "@" in k})
        for a in attacks:
            if len({k for r in rr for k in r["robust"] if k.startswith(a + "@")}) < 2:
                continue

            def draw(ax, rr=rr, a=a, run=run):
                for r in rr:
                    pts = sorted((_eps(k), v) for k, v in r["robust"].items() if k.startswith(a + "@"))
                    pts = [(0.0, (r["top1"], r["top1_std"]))] + pts
                    ax.errorbar(
                        [255 * p[0] for p in pts],
                        [100 * p[1][0] for p in pts],
                        yerr=[100 * p[1][1] for p in pts],
                        marker="o",
                        capsize=3,
                        label=r["method"],
                    )
                ax.set_xlabel("ε × 255 (0 = clean)")
                ax.set_ylabel(f"{a} accuracy %")
                ax.set_title(f"{run['_name']}: {a} vs ε")
                ax.legend(fontsize=7)

            made[f"{a} vs ε ({run['_name']})"] = _plot(out / f"plot_eps_{a}_{_safe(run)}.png", draw)
    # time per stage
    stages = []
    for run in runs:
        for k, v in (run.get("timing") or {}).items():
            stages.append((f"{run['_name']}: {k}", v))
        for m, e in run["methods"].items():
            if e.get("distill_seconds") is not None:
                stages.append((f"{run['_name']}: {m} distill", e["distill_seconds"]))
            if e.get("eval_seconds") is not None:
                stages.append((f"{run['_name']}: {m} students", e["eval_seconds"]))
    if stages:

        def draw(ax):
            ax.barh([s for s, _ in stages], [v for _, v in stages])
            ax.set_xlabel("seconds")
            ax.set_title("time per stage")
            ax.tick_params(axis="y", labelsize=6)

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 0.22 * len(stages) + 1.2))
        draw(ax)
        fig.tight_layout()
        with atomic_path(out / "plot_time.png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        made["time per stage"] = out / "plot_time.png"
    return made


def _safe(run: dict) -> str:
    from ..pipeline import method_dir

    return method_dir(run["_name"])


def _eps(label: str) -> float:
    e = label.split("@", 1)[1]
    num, _, den = e.partition("/")
    return float(num) / float(den) if den else float(num)


def build_report(dirs: list[Path], out: Path, *, title: str = "geodistill report") -> dict[str, Path]:
    """Merge the runs in ``dirs`` into ``out/report.md`` and ``out/report.html``."""
    runs = load_runs(dirs)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", ""]
    sections: list[tuple[str, list[str]]] = []
    groups = defaultdict(list)
    for run in runs:
        groups[(run["dataset"], run["ipc"], run.get("split", "test"))].append(run)
    all_rows = []
    for (ds, ipc, split), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        rows = [r for run in rs for r in rows_of(run)]
        all_rows += rows
        parts = _split_by_protocol(rows)
        lines = []
        for run in rs:
            lines += [f"Protocol of `{run['_name']}`:", "", *protocol_lines(run), ""]
        if len(parts) > 1:
            lines += [
                f"> These runs differ in {', '.join(parts[0][2])}; their rows are in separate tables.",
                "",
            ]
        for i, (proto, prow, _) in enumerate(parts):
            keys = sorted(
                {k for r in prow for k in r["robust"]}, key=lambda k: (k.split("@")[0] != "clean", k)
            )
            keys = [k for k in keys if k != "clean"]
            if len(parts) > 1:
                lines += [f"Table {i + 1}: " + ", ".join(f"{k} = {proto.get(k)}" for k in parts[0][2]), ""]
            lines += table(prow, keys) + [""]
        sections.append((f"{ds}, IPC {ipc}, scored on {split}", lines))
    for name, lines in sections:
        md += [f"## {name}", "", *lines]
    flags = [f for run in runs for f in run.get("flags", [])]
    if flags:
        md += ["## Warnings", "", *[f"- {f}" for f in flags], ""]
    figs = plots(all_rows, runs, out)
    if figs:
        md += ["## Plots", ""]
        for name, p in figs.items():
            md += [f"### {name}", "", f"![{name}]({p.name})", ""]
    grids = []
    for run in runs:
        for m in run["methods"]:
            g = _grid_path(run["_dir"], m)
            if g is None:
                continue
            if g.parent.resolve() != out.resolve():  # keep the report folder self-contained
                from ..pipeline import method_dir

                dest = out / "grids" / f"{method_dir(run['_name'])}_{g.name}"
                dest.parent.mkdir(exist_ok=True)
                shutil.copyfile(g, dest)
                g = dest
            grids.append((f"{run['_name']}: {m}", g))
    if grids:
        md += ["## Distilled images (one row per class)", ""]
        for name, g in grids:
            md += [f"### {name}", "", f"![{name}]({g.relative_to(out).as_posix()})", ""]
    write_text(out / "report.md", "\n".join(md) + "\n")
    write_text(out / "report.html", to_html(title, sections, flags, figs, grids))
    return {"md": out / "report.md", "html": out / "report.html"}


def _grid_path(run_dir: Path, method: str) -> Path | None:
    from ..pipeline import method_dir

    for name in (f"grid_{method_dir(method)}.png", f"grid_{method.replace('+', '_')}.png"):
        if (run_dir / name).exists():
            return run_dir / name
    return None


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _md_table_to_html(lines: list[str]) -> str:
    out, rows = [], [line for line in lines if line.startswith("|")]
    if not rows:
        return ""
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    out.append(
        "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
    )
    for r in rows[2:]:
        out.append(
            "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r.strip("|").split("|")) + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def to_html(title: str, sections, flags, figs: dict[str, Path], grids) -> str:
    css = (
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        "img{max-width:100%;border:1px solid #eee;margin:4px 0}.warn{color:#a00}"
        "li{margin:2px 0;font-size:14px}"
    )
    body = [f"<h1>{html.escape(title)}</h1>"]
    for name, lines in sections:
        body.append(f"<h2>{html.escape(name)}</h2>")
        block: list[str] = []
        for line in [*lines, ""]:
            if line.startswith("|"):
                block.append(line)
                continue
            if block:
                body.append(_md_table_to_html(block))
                block = []
            if line.startswith("- "):
                body.append(f"<li>{html.escape(line[2:])}</li>")
            elif line.startswith("> "):
                body.append(f'<p class="warn">{html.escape(line[2:])}</p>')
            elif line.strip():
                body.append(f"<p>{html.escape(line)}</p>")
    if flags:
        body.append(
            "<h2>Warnings</h2><ul>"
            + "".join(f'<li class="warn">{html.escape(f)}</li>' for f in flags)
            + "</ul>"
        )
    if figs:
        body.append("<h2>Plots</h2>")
        for name, p in figs.items():
            body.append(f"<h3>{html.escape(name)}</h3>{_img(p, name)}")
    if grids:
        body.append("<h2>Distilled images (one row per class)</h2>")
        for name, g in grids:
            body.append(f"<h3>{html.escape(name)}</h3>{_img(g, name)}")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
