"""geodistill: dataset distillation with Wasserstein barycenters (WMDD) and
curvature-regularized teachers (GUARD)."""

__version__ = "0.1.0"
