"""Model registry (timm style): ``create_model(name, num_classes=..., ...)``.

Every model is a :class:`Classifier`: images in [0, 1] go in, normalization happens
inside, and ``features(x)`` gives the penultimate features that WMDD matches.
"""

from . import convnet, torchvision_models  # noqa: F401  (register architectures)
from .registry import (
    Classifier,
    create_model,
    list_models,
    load_checkpoint,
    register,
    save_checkpoint,
)

__all__ = ["Classifier", "create_model", "list_models", "load_checkpoint", "register", "save_checkpoint"]
