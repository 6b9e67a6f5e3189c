"""The DistilledSet artifact: images + labels + barycenter weights + manifest.

On disk (``save``): ``images/<class>/<class>_<k>.png`` (an ImageFolder any tool can read),
``distilled.safetensors`` (the exact float tensors) and ``manifest.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import (
    GeodistillError,
    atomic_path,
    load_tensors,
    read_json,
    safe_component,
    save_tensors,
    write_json,
)


@dataclass
class DistilledSet:
    """``images [N, C, H, W]`` in [0, 1], ``labels [N]``, ``weights [N]`` (each image's
    barycenter weight; they sum to 1 within a class), ``class_names`` and a manifest."""

    images: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    class_names: list[str]
    manifest: dict = field(default_factory=dict)

    @property
    def ipc(self) -> int:
        return int(torch.bincount(self.labels, minlength=len(self.class_names)).max())

    def save(self, out: str | Path, *, png: bool = True) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_tensors(
            out / "distilled.safetensors",
            {"images": self.images, "labels": self.labels, "weights": self.weights},
            {"class_names": self.class_names},
        )
        if png:
            for c, name in enumerate(self.class_names):
                folder = out / "images" / safe_component(name)
                folder.mkdir(parents=True, exist_ok=True)
                for k, img in enumerate(self.images[self.labels == c]):
                    save_png(img, folder / f"{safe_component(name)}_{k:04d}.png")
        write_json(
            out / "manifest.json",
            {**self.manifest, "class_names": self.class_names, "weights": self.weights.tolist()},
        )
        return out

    @classmethod
    def load(cls, out: str | Path) -> DistilledSet:
        out = Path(out)
        if not (out / "distilled.safetensors").exists():
            raise GeodistillError(f"{out}: not a distilled set (no distilled.safetensors)")
        t, meta = load_tensors(out / "distilled.safetensors")
        manifest = read_json(out / "manifest.json") if (out / "manifest.json").exists() else {}
        return cls(t["images"], t["labels"], t["weights"], meta["class_names"], manifest)


def save_png(img: torch.Tensor, path: Path) -> None:
    """Save a ``[C, H, W]`` image in [0, 1] as an 8-bit PNG (atomically)."""
    a = (img.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    with atomic_path(path) as tmp:
        Image.fromarray(a).save(tmp, format="PNG")
