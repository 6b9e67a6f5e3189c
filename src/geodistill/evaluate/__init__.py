"""Student training with KD from the teacher, accuracy, and (robust) scoring."""

from .metrics import accuracy
from .robust import ATTACK_CONFIG, attack_keys, attack_versions, robust_accuracy, sanity_flags
from .student import (
    MethodScore,
    asked_scores,
    attack_scores,
    complete_scores,
    evaluate_distilled,
    image_weights,
    kd_loss,
    make_student,
    train_student,
    wanted_scores,
)

__all__ = [
    "ATTACK_CONFIG",
    "MethodScore",
    "accuracy",
    "asked_scores",
    "attack_keys",
    "attack_scores",
    "attack_versions",
    "complete_scores",
    "evaluate_distilled",
    "image_weights",
    "kd_loss",
    "make_student",
    "robust_accuracy",
    "sanity_flags",
    "train_student",
    "wanted_scores",
]
