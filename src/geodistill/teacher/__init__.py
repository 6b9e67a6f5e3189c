"""Squeeze: train (or load) the teacher, optionally with a robustness regularizer."""

from .regularizers import (
    REGULARIZERS,
    curvature_penalty,
    curvature_simple_penalty,
    default_h,
    objective,
)
from .squeeze import TeacherResult, TrainState, train_teacher

__all__ = [
    "REGULARIZERS",
    "TeacherResult",
    "TrainState",
    "curvature_penalty",
    "curvature_simple_penalty",
    "default_h",
    "objective",
    "train_teacher",
]
