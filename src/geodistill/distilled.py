"""The ``DistilledSet`` artifact: images + labels + per-image barycenter weights + manifest.

On disk (``save``): ``images/<class>/<class>_<k>.png`` (an ImageFolder any tool can read),
``distilled.safetensors`` (the exact float tensors) and ``manifest.json``. ``load`` reads that
layout back and validates every tensor; ``from_folder`` reads an ImageFolder of images written
by another tool (SRe2L, RDED, WMDD, DD-Ranking) with uniform weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .files import (
    GeodistillError,
    atomic_path,
    check_tensor,
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
        """Read and validate a set written by :meth:`save` (or its ``distilled.safetensors``)."""
        out = Path(out)
        if out.is_file() and out.suffix == ".safetensors":
            out, file = out.parent, out
        else:
            file = out / "distilled.safetensors"
        if not file.exists():
            hint = (
                f"; it looks like an ImageFolder of images: pass folder:{out}"
                if out.is_dir() and any(p.is_dir() for p in out.iterdir())
                else ""
            )
            raise GeodistillError(f"{out}: not a distilled set (no distilled.safetensors){hint}")
        t, meta = load_tensors(file)
        manifest = {}
        if (out / "manifest.json").exists():
            manifest = read_json(out / "manifest.json")
            if not isinstance(manifest, dict):
                raise GeodistillError(f"{out / 'manifest.json'}: expected a JSON object")
        names = meta.get("class_names") or manifest.get("class_names")
        if not names or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise GeodistillError(
                f"{file}: no class names (neither in its safetensors metadata nor in manifest.json); "
                "was it rewritten without its metadata? Save it with geodistill or evaluate the images "
                "as folder:PATH"
            )
        images = check_tensor(file, "images", t.get("images"), ndim=4, lo=0.0, hi=1.0)
        n = len(images)
        labels = check_tensor(
            file, "labels", t.get("labels"), ndim=1, kind="int", length=n, lo=0, hi=len(names) - 1
        )
        if "weights" in t:
            weights = check_tensor(file, "weights", t["weights"], ndim=1, length=n, lo=0.0)
        else:
            weights = uniform_weights(labels, len(names))
        labels = labels.long()
        for c in torch.unique(labels).tolist():
            if weights[labels == c].sum() <= 0:
                raise GeodistillError(f"{file}: the weights of class {names[c]!r} sum to 0")
        return cls(images.float(), labels, weights.float(), list(names), manifest)

    @classmethod
    def from_folder(
        cls, root: str | Path, class_names: list[str], image_shape: tuple[int, int, int]
    ) -> DistilledSet:
        """An ImageFolder ``root/<class>/*.png|jpg`` of distilled images, resized to ``image_shape``
        ``(C, H, W)``, labelled by folder name against ``class_names``, with uniform weights."""
        from .data.sources import IMAGE_EXTS, _read_image

        root = Path(root)
        if not root.is_dir():
            raise GeodistillError(f"{root}: no such folder of distilled images")
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        by_safe = {safe_component(n): n for n in class_names}  # our PNG folders use safe names
        extra = [f for f in folders if f not in class_names and f not in by_safe]
        missing = [n for n in class_names if n not in folders and safe_component(n) not in folders]
        if extra or missing:
            raise GeodistillError(
                f"{root}: class folders do not match the dataset's classes: "
                f"unknown folders {extra[:10]}, classes without a folder {missing[:10]}"
                + (f" (the dataset's classes: {class_names[:10]})" if extra else "")
            )
        c, h, w = image_shape
        mode = "L" if c == 1 else "RGB"
        imgs, labels = [], []
        for k, name in enumerate(class_names):
            folder = root / (name if (root / name).is_dir() else safe_component(name))
            files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
            if not files:
                raise GeodistillError(f"{folder}: no images (png, jpg, ...) for class {name!r}")
            for p in files:
                a = _read_image(p, mode, None)
                if isinstance(a, str):
                    raise GeodistillError(f"{p}: {a}")
                x = torch.from_numpy(np.array(a)).float().div(255)
                x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
                if x.shape[-2:] != (h, w):
                    x = F.interpolate(
                        x[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False
                    )[0]
                imgs.append(x.clamp(0, 1))
                labels.append(k)
        labels_t = torch.tensor(labels)
        manifest = {
            "method": root.name,
            "source": f"folder:{root}",
            "ipc": int(torch.bincount(labels_t).max()),
        }
        return cls(
            torch.stack(imgs),
            labels_t,
            uniform_weights(labels_t, len(class_names)),
            list(class_names),
            manifest,
        )


def uniform_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``1 / n_c`` for every image of class ``c``."""
    counts = torch.bincount(labels.long(), minlength=num_classes).clamp_min(1).float()
    return 1.0 / counts[labels.long()]


def save_png(img: torch.Tensor, path: Path) -> None:
    """Save a ``[C, H, W]`` image in [0, 1] as an 8-bit PNG (atomically)."""
    a = (img.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    with atomic_path(path) as tmp:
        Image.fromarray(a).save(tmp, format="PNG")
