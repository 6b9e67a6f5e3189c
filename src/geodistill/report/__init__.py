"""Reports: metrics.json, a Markdown summary, a terminal table and image grids."""

from __future__ import annotations

from pathlib import Path

from ..distilled import DistilledSet
from ..files import atomic_path, write_json, write_text


def image_grid(ds: DistilledSet, path: str | Path, *, max_per_class: int = 10, title: str = "") -> Path:
    """A PNG grid of the distilled images: one row per class, labelled with its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(ds.class_names)
    cols = min(max_per_class, ds.ipc)
    fig, axes = plt.subplots(k, cols, figsize=(cols * 0.9 + 1.2, k * 0.9 + 0.4), squeeze=False)
    for c in range(k):
        imgs = ds.images[ds.labels == c][:cols]
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(imgs):
                im = imgs[j].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                ax.imshow(
                    im.squeeze(-1) if im.shape[-1] == 1 else im,
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                    interpolation="nearest",
                )
            if j == 0:
                ax.set_ylabel(ds.class_names[c][:14], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _robust_keys(metrics: dict) -> list[str]:
    keys: list[str] = []
    for m in metrics["methods"].values():
        keys += [k for k in m.get("robust", {}) if k != "clean" and k not in keys]
    return keys


def _rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (shared by Markdown and the terminal)."""
    t = metrics["teacher"]
    rkeys = _robust_keys(metrics)
    head = [
        "method",
        "top-1 %",
        "± std",
        "top-5 %",
        "% of teacher",
        *[f"{k} %" for k in rkeys],
        "seeds",
        "seconds",
    ]
    rows = []
    for name, m in metrics["methods"].items():
        own = metrics.get(m.get("teacher", "teacher")) or t
        base = own["top1"]  # each method relative to the teacher that made and relabelled it
        for arch, sc in [(m.get("student"), m), *m.get("by_student", {}).items()]:
            rel = sc["top1"] / base if base else float("nan")
            rob = [_pct(sc.get("robust", {}).get(k)) for k in rkeys]
            label = name if arch in (None, own["arch"]) and sc is m else f"{name} ({arch})"
            rows.append(
                [
                    label,
                    _pct(sc["top1"]),
                    _pct(sc["top1_std"]),
                    _pct(sc.get("top5")),
                    f"{100 * rel:.1f}",
                    *rob,
                    str(sc["seeds"]),
                    f"{m['seconds']:.1f}",
                ]
            )
    return head, rows


def _teacher_line(label: str, t: dict) -> str:
    line = (
        f"- {label}: `{t['arch']}`, regularizer `{t.get('regularizer', 'none')}`, top-1 {_pct(t['top1'])} %"
    )
    if t.get("seconds_per_epoch"):
        line += f", {t['seconds_per_epoch']:.1f} s/epoch"
    if t.get("robust"):
        line += "; " + ", ".join(f"{k} {_pct(v)} %" for k, v in t["robust"].items())
    return line


def markdown(metrics: dict, grids: dict[str, str] | None = None) -> str:
    head, rows = _rows(metrics)
    lines = [
        f"# geodistill report: {metrics['dataset']}",
        "",
        f"- classes: {metrics['num_classes']}, images per class (IPC): {metrics['ipc']}; students scored on "
        f"the {metrics.get('split', 'test')} split",
        _teacher_line("teacher", metrics["teacher"]),
    ]
    if metrics.get("teacher_guard") and metrics["teacher_guard"].get("sha256") != metrics["teacher"].get(
        "sha256"
    ):
        lines.append(_teacher_line("GUARD teacher (for `+guard` methods)", metrics["teacher_guard"]))
    lines += [
        f"- device: {metrics.get('device', '?')}; date: {metrics.get('date', '?')}",
        "",
        "Students are trained on the distilled images with knowledge distillation from the teacher "
        "and tested on the real test split; mean ± std over seeds. Robust columns: accuracy under "
        "L∞ attacks of radius ε (pixel units) on a fixed, seeded test subset, mean over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *["| " + " | ".join(r) + " |" for r in rows],
    ]
    for flag in metrics.get("flags", []):
        lines += ["", f"> **Warning:** {flag}"]
    if grids:
        lines += ["", "## Distilled images", ""]
        for name, rel in grids.items():
            lines += [f"### {name}", "", f"![{name}]({rel})", ""]
    return "\n".join(lines) + "\n"


def print_table(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = metrics["teacher"]
    head, rows = _rows(metrics)
    table = Table(
        title=f"{metrics['dataset']}: IPC {metrics['ipc']}, teacher {t['arch']} top-1 {_pct(t['top1'])} %"
    )
    for col in head:
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        table.add_row(*r)
    console = Console()
    console.print(table)
    for flag in metrics.get("flags", []):
        console.print(f"[bold red]warning:[/] {flag}")


def write_report(out: str | Path, metrics: dict, sets: dict[str, DistilledSet]) -> dict[str, Path]:
    """Write ``metrics.json``, ``grid_<method>.png`` and ``report.md`` into ``out``."""
    out = Path(out)
    grids = {}
    for name, ds in sets.items():
        fname = f"grid_{name.replace('+', '_')}.png"
        image_grid(ds, out / fname, title=f"{name}, IPC {ds.ipc}")
        grids[name] = fname
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.md", markdown(metrics, grids))
    return {
        "metrics": out / "metrics.json",
        "report": out / "report.md",
        **{k: out / v for k, v in grids.items()},
    }


__all__ = ["image_grid", "markdown", "print_table", "write_report"]
