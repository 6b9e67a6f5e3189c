"""Safe file handling: atomic writes, JSON, safetensors with metadata, output directories.

Every file geodistill writes goes to a temporary name in the same directory and is renamed
into place, so a killed run never leaves a half-written artifact behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file


class GeodistillError(Exception):
    """A user-facing error: bad input, a mismatched artifact, an unsafe path."""


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise GeodistillError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise GeodistillError(f"{path}: not valid JSON ({e})") from e


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict | None = None):
    """Save tensors to safetensors; ``meta`` (any JSON) is stored in the header."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"geodistill": json.dumps(meta or {}, default=_json_default)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a safetensors file written by :func:`save_tensors`; never executes code."""
    path = Path(path)
    if not path.is_file():
        raise GeodistillError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise GeodistillError(
            f"{path}: not a readable safetensors file ({e}). geodistill stores checkpoints as "
            "safetensors and never unpickles files"
        ) from e
    return tensors, json.loads(header.get("geodistill", "{}"))


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_component(name: str) -> str:
    """Turn a class name into one safe path component (no separators, no ``..``)."""
    clean = _SAFE_NAME.sub("_", str(name)).strip(" .")
    return clean or "_"


def prepare_out_dir(path: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create an output directory, refusing to clobber an existing non-empty one."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not (overwrite or resume):
        raise GeodistillError(
            f"{path}: output directory exists and is not empty; pass --overwrite to replace "
            "its files or --resume to continue the run in it"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_tensor(
    path: str | Path,
    name: str,
    t: torch.Tensor | None,
    *,
    ndim: int | None = None,
    kind: str = "float",
    length: int | None = None,
    lo: float | None = None,
    hi: float | None = None,
) -> torch.Tensor:
    """Raise a :class:`GeodistillError` naming ``path`` and ``name`` unless tensor ``t`` exists,
    has ``ndim`` dimensions (and ``length`` rows), the dtype ``kind`` (``float`` or ``int``), only
    finite values and values within ``[lo, hi]``. Returns ``t``."""
    where = f"{path}: tensor {name!r}"
    if t is None:
        raise GeodistillError(f"{path}: missing tensor {name!r}")
    if ndim is not None and t.ndim != ndim:
        raise GeodistillError(f"{where} has shape {tuple(t.shape)}; expected {ndim} dimensions")
    if length is not None and len(t) != length:
        raise GeodistillError(f"{where} has {len(t)} rows; expected {length}")
    if kind == "float" and not t.is_floating_point():
        raise GeodistillError(f"{where} has dtype {t.dtype}; expected a floating-point tensor")
    if kind == "int" and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise GeodistillError(f"{where} has dtype {t.dtype}; expected an integer tensor")
    if t.numel() == 0:
        return t
    if t.is_floating_point() and not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise GeodistillError(f"{where} contains NaN or Inf (first at index {tuple(bad)})")
    if lo is not None and t.min() < lo:
        raise GeodistillError(f"{where} has value {t.min().item():.6g} below the allowed minimum {lo}")
    if hi is not None and t.max() > hi:
        raise GeodistillError(f"{where} has value {t.max().item():.6g} above the allowed maximum {hi}")
    return t
