"""Reports: metrics.json, a Markdown summary, a terminal table and image grids."""

from __future__ import annotations

from pathlib import Path

from ..distilled import DistilledSet
from ..files import atomic_path, write_json


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
    """Write ``metrics.json``, ``grid_<method>.png``, ``report.md`` and ``report.html`` into ``out``."""
    from ..pipeline import method_dir
    from .merge import build_report

    out = Path(out)
    grids = {}
    for name, ds in sets.items():
        grids[name] = image_grid(ds, out / f"grid_{method_dir(name)}.png", title=f"{name}, IPC {ds.ipc}")
    write_json(out / "metrics.json", metrics)
    paths = build_report([out], out, title=f"geodistill report: {metrics['dataset']}")
    return {"metrics": out / "metrics.json", "report": paths["md"], "html": paths["html"], **grids}


__all__ = ["image_grid", "print_table", "write_report"]
