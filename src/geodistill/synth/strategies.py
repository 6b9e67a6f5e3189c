"""One small strategy per method: what the shared synthesis loop optimizes, and how it starts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Strategy:
    """``barycenter``: match each image's features to a per-class Wasserstein barycenter atom
    (and weight it by the atom's mass). ``bn``: ``"class"`` (per-class BN moments) or
    ``"global"`` (the teacher's running statistics). ``synthesize``: False for selection
    baselines that only pick real images."""

    name: str
    barycenter: bool
    bn: str
    synthesize: bool = True


STRATEGIES = {
    "wmdd": Strategy("wmdd", barycenter=True, bn="class"),
    "sre2l": Strategy("sre2l", barycenter=False, bn="global"),
    "random": Strategy("random", barycenter=False, bn="global", synthesize=False),
}


def get_strategy(name: str) -> Strategy:
    from ..files import GeodistillError

    try:
        return STRATEGIES[name]
    except KeyError:
        raise GeodistillError(f"unknown method {name!r}; available: {sorted(STRATEGIES)}") from None
