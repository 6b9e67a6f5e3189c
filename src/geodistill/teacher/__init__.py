"""Squeeze: train (or load) the teacher, optionally with a robustness regularizer."""

from .regularizers import (
    REGULARIZERS,
    curvature_penalty,
    curvature_simple_penalty,
    objective,
)
from .squeeze import TeacherResult, TrainState, train_teacher

__all__ = [
    "REGULARIZERS",
    "TeacherResult",
    "TrainState",
    "curvature_penalty",
    "curvature_simple_penalty",
    "objective",
    "train_teacher",
]
