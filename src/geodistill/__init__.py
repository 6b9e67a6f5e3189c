"""geodistill: dataset distillation with Wasserstein barycenters (WMDD) and
curvature-regularized teachers (GUARD).

The pipeline, one function per stage::

    data = load_dataset("digits")                                  # ClassData
    teacher = train_teacher(data, SqueezeConfig(), rt).model       # squeeze
    stats = compute_class_stats(teacher, data, rt)                 # ClassStats
    ds = distill(teacher, data, stats, DistillConfig(), rt)        # DistilledSet
    score = evaluate_distilled(ds, teacher, data, EvalConfig(), rt)
"""

__version__ = "0.1.0"

from .barycenter import w2_cost, wasserstein_barycenter  # noqa: E402
from .config import DataConfig, DistillConfig, EvalConfig, RunConfig, SqueezeConfig  # noqa: E402
from .data import ClassData, load_dataset  # noqa: E402
from .distilled import DistilledSet  # noqa: E402
from .evaluate import evaluate_distilled, robust_accuracy  # noqa: E402
from .files import GeodistillError  # noqa: E402
from .models import create_model, list_models, load_checkpoint, save_checkpoint  # noqa: E402
from .runtime import make_runtime  # noqa: E402
from .stats import ClassStats, compute_class_stats  # noqa: E402
from .synth import distill  # noqa: E402
from .teacher import train_teacher  # noqa: E402

__all__ = [
    "ClassData",
    "ClassStats",
    "DataConfig",
    "DistillConfig",
    "DistilledSet",
    "EvalConfig",
    "GeodistillError",
    "RunConfig",
    "SqueezeConfig",
    "compute_class_stats",
    "create_model",
    "distill",
    "evaluate_distilled",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "make_runtime",
    "robust_accuracy",
    "save_checkpoint",
    "train_teacher",
    "w2_cost",
    "wasserstein_barycenter",
]
