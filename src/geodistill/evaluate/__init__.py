"""Student training with KD from the teacher, accuracy, and (robust) scoring."""

from .metrics import accuracy
from .student import MethodScore, evaluate_distilled, image_weights, kd_loss, train_student

__all__ = ["MethodScore", "accuracy", "evaluate_distilled", "image_weights", "kd_loss", "train_student"]
