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
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
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
            "test": len(self.y_test),
            "skipped": self.skipped,
        }

    def save(self, path: str | Path) -> None:
        save_tensors(
            path,
            {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test},
            {
                "name": self.name,
                "class_names": self.class_names,
                "hflip": self.hflip,
                "skipped": self.skipped,
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> ClassData:
        t, meta = load_tensors(path)
        return cls(
            meta["name"],
            meta["class_names"],
            t["x_train"],
            t["y_train"],
            t["x_test"],
            t["y_test"],
            hflip=meta.get("hflip", True),
            skipped=meta.get("skipped", []),
        )
