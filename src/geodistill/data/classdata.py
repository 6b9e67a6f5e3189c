"""The ``ClassData`` artifact: a labelled train/test split held as tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import GeodistillError, load_tensors, save_tensors


@dataclass
class ClassData:
    """Images as ``[N, C, H, W]`` tensors (uint8 in 0..255 or float in [0, 1]).

    Labels index ``class_names``; that order is recorded in every downstream artifact.
    """

    name: str
    class_names: list[str]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    hflip: bool = True  # whether horizontal flips preserve the label (False for digits)
    skipped: list[str] = field(default_factory=list)  # files skipped by --skip-bad-images
    x_val: torch.Tensor | None = None  # the validation split carved out of train (carve_val)
    y_val: torch.Tensor | None = None
    val_spec: dict = field(default_factory=dict)  # {"fraction", "seed"} of the carved split

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def validate(self) -> None:
        k = self.num_classes
        if k < 2:
            raise GeodistillError(f"dataset {self.name!r}: needs at least 2 classes, got {k}")
        if len(set(self.class_names)) != k:
            raise GeodistillError(f"dataset {self.name!r}: duplicate class names")
        splits = [("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)]
        if self.x_val is not None:
            splits.append(("val", self.x_val, self.y_val))
        for split, x, y in splits:
            if x.ndim != 4 or x.shape[0] != y.shape[0]:
                raise GeodistillError(
                    f"dataset {self.name!r} {split}: images {tuple(x.shape)} and labels "
                    f"{tuple(y.shape)} do not match (want [N, C, H, W] and [N])"
                )
            if x.shape[1:] != self.x_train.shape[1:]:
                raise GeodistillError(
                    f"dataset {self.name!r}: {split} images are {tuple(x.shape[1:])}, train are "
                    f"{tuple(self.x_train.shape[1:])}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
                bad = y[(y < 0) | (y >= k)][0].item()
                raise GeodistillError(
                    f"dataset {self.name!r} {split}: label {bad} out of range for {k} classes"
                )
            if x.is_floating_point():
                if not torch.isfinite(x).all():
                    raise GeodistillError(f"dataset {self.name!r} {split}: images contain NaN/Inf")
                if x.numel() and (x.min() < 0 or x.max() > 1):
                    raise GeodistillError(
                        f"dataset {self.name!r} {split}: float images must lie in [0, 1], found "
                        f"[{x.min().item():.3g}, {x.max().item():.3g}]"
                    )
        counts = torch.bincount(self.y_train, minlength=k)
        for c in (counts == 0).nonzero().flatten().tolist():
            raise GeodistillError(
                f"dataset {self.name!r}: class {self.class_names[c]!r} has no training images"
            )

    def carve_val(self, fraction: float, seed: int = 0) -> ClassData:
        """A copy whose train split gives up ``floor(fraction * n_c)`` seeded images of every class
        ``c`` (at least one when ``fraction > 0``) to a validation split; the test split is kept.

        Every later stage sees only the reduced train split, so defaults chosen on the
        validation split are chosen on images that no teacher, statistic or method has seen.
        """
        if fraction <= 0:
            return self
        if self.x_val is not None:
            raise GeodistillError(f"dataset {self.name!r} already has a validation split")
        g = torch.Generator().manual_seed(int(seed))
        val = []
        for c in range(self.num_classes):
            idx = self.class_indices(c)
            k = max(1, int(len(idx) * fraction))
            if k >= len(idx):
                raise GeodistillError(
                    f"dataset {self.name!r}: class {self.class_names[c]!r} has {len(idx)} training "
                    f"images, too few to hold out {fraction:.0%} for validation (lower --val-fraction)"
                )
            val.append(idx[torch.randperm(len(idx), generator=g)[:k]])
        v = torch.cat(val).sort().values
        keep = torch.ones(len(self.y_train), dtype=torch.bool)
        keep[v] = False
        return ClassData(
            self.name,
            list(self.class_names),
            self.x_train[keep],
            self.y_train[keep],
            self.x_test,
            self.y_test,
            hflip=self.hflip,
            skipped=list(self.skipped),
            x_val=self.x_train[v],
            y_val=self.y_train[v],
            val_spec={"fraction": fraction, "seed": int(seed)},
        )

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of split ``name`` (``train``, ``val`` or ``test``)."""
        if name == "val":
            if self.x_val is None:
                raise GeodistillError(
                    f"dataset {self.name!r} has no validation split; set data.val_fraction > 0"
                )
            return self.x_val, self.y_val
        if name in ("train", "test"):
            return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")
        raise GeodistillError(f"unknown split {name!r}; use train, val or test")

    def float(self, x: torch.Tensor) -> torch.Tensor:
        """Convert a batch to float in [0, 1]."""
        return x.float().div_(255) if x.dtype == torch.uint8 else x.float()

    def class_indices(self, c: int) -> torch.Tensor:
        return (self.y_train == c).nonzero().flatten()

    def class_counts(self) -> list[int]:
        return torch.bincount(self.y_train, minlength=self.num_classes).tolist()

    def check_ipc(self, ipc: int) -> None:
        """Raise if a class has fewer than ``ipc`` training images."""
        if ipc < 1:
            raise GeodistillError(f"ipc must be >= 1, got {ipc}")
        for name, n in zip(self.class_names, self.class_counts()):
            if n < ipc:
                raise GeodistillError(
                    f"ipc={ipc} is larger than class {name!r} of dataset {self.name!r}, "
                    f"which has {n} training images"
                )

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images (for the model's normalization)."""
        n = len(self.x_train)
        x = self.float(self.x_train[torch.linspace(0, n - 1, min(n, 20000)).long()])
        return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).clamp_min(1e-3).tolist()

    def summary(self) -> dict:
        return {
            "name": self.name,
            "classes": self.class_names,
            "image_shape": list(self.image_shape),
            "train": len(self.y_train),
            "val": 0 if self.y_val is None else len(self.y_val),
            "test": len(self.y_test),
            "val_split": self.val_spec,
            "skipped": self.skipped,
        }

    def save(self, path: str | Path) -> None:
        t = {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test}
        if self.x_val is not None:  # a carved validation split travels with the data
            t |= {"x_val": self.x_val, "y_val": self.y_val}
        meta = {
            "name": self.name,
            "class_names": self.class_names,
            "hflip": self.hflip,
            "skipped": self.skipped,
            "val_split": self.val_spec,
        }
        save_tensors(path, t, meta)

    @classmethod
    def load(cls, path: str | Path) -> ClassData:
        t, meta = load_tensors(path)
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in t]
        if missing or "class_names" not in meta:
            raise GeodistillError(
                f"{path}: not a geodistill dataset cache (missing {missing or 'class_names'})"
            )
        return cls(
            meta["name"],
            meta["class_names"],
            t["x_train"],
            t["y_train"],
            t["x_test"],
            t["y_test"],
            hflip=meta.get("hflip", True),
            skipped=meta.get("skipped", []),
            x_val=t.get("x_val"),
            y_val=t.get("y_val"),
            val_spec=meta.get("val_split", {}),
        )
