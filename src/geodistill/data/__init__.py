"""Data sources, the validated in-memory ``ClassData`` artifact, and batched augmentation."""

from .augment import cutmix, random_resized_crop, roll_jitter, shift_crop, train_augment
from .classdata import ClassData
from .sources import load_dataset

__all__ = [
    "ClassData",
    "cutmix",
    "load_dataset",
    "random_resized_crop",
    "roll_jitter",
    "shift_crop",
    "train_augment",
]
