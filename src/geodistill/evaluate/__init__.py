"""Student training with KD from the teacher, accuracy, and (robust) scoring."""

from .metrics import accuracy
from .robust import ATTACKS, robust_accuracy, sanity_flags
from .student import MethodScore, attack_scores, evaluate_distilled, image_weights, kd_loss, train_student

__all__ = [
    "ATTACKS",
    "MethodScore",
    "accuracy",
    "attack_scores",
    "robust_accuracy",
    "sanity_flags",
    "evaluate_distilled",
    "image_weights",
    "kd_loss",
    "train_student",
]
