r"""Selection baselines: which ``k`` real images of one class to keep, chosen in the teacher's
feature space. Each is a plain function of the class's features ``feats [n, d]`` returning
``k`` distinct row indices ``[k]`` (a LongTensor into ``feats``).

- ``select_random``: ``k`` indices uniformly without replacement.
- ``select_herding``: greedy mean matching (Welling 2009; Chen et al. 2010): step ``t`` adds the
  point minimising :math:`\|\mu - \frac1t\sum_{s\le t} f_{i_s}\|`, :math:`\mu` the class mean.
- ``select_kcenter``: greedy farthest-first traversal (Gonzalez 1985; Sener & Savarese 2018):
  start at the point nearest the class mean, then repeatedly add the point farthest from
  everything chosen so far (a 2-approximation of the k-center objective).
- ``select_kmeans``: the distinct real images nearest to the ``k`` Wasserstein-barycenter atoms
  (one-to-one, by the Hungarian algorithm): exactly WMDD's initial images, i.e. WMDD with zero
  synthesis iterations.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from ..barycenter import sqdist, wasserstein_barycenter


def select_random(feats: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    return torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed))[:k]


def select_herding(feats: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    f = feats.double()
    mu = f.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    free = torch.ones(len(f), dtype=torch.bool)
    for t in range(1, k + 1):
        # ||mu - (total + f_i) / t|| for every candidate i
        err = ((mu - (total + f) / t) ** 2).sum(1)
        err[~free] = float("inf")
        i = int(err.argmin())
        chosen.append(i)
        free[i] = False
        total += f[i]
    return torch.tensor(chosen)


def select_kcenter(feats: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    f = feats.double()
    first = int(((f - f.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    dist = ((f - f[first]) ** 2).sum(1)
    for _ in range(1, k):
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, ((f - f[i]) ** 2).sum(1))
    return torch.tensor(chosen)


def nearest_distinct(atoms: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """For atoms ``[k, d]``, ``k`` distinct rows of ``feats [n, d]`` minimising the summed squared
    distance atom-to-row (Hungarian algorithm); entry ``j`` is the row matched to atom ``j``."""
    _, cols = linear_sum_assignment(sqdist(atoms.double(), feats.double()).numpy())
    return torch.as_tensor(cols)


def select_kmeans(
    feats: torch.Tensor, k: int, seed: int, *, barycenter: str = "exact", weighted: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(indices [k], atoms [k, d], weights [k])``: the barycenter's atoms and the distinct real
    points nearest to them (``indices[j]`` is matched to ``atoms[j]``)."""
    atoms, weights = wasserstein_barycenter(feats, k, weighted=weighted, method=barycenter, seed=seed)
    return nearest_distinct(atoms, feats), atoms, weights


SELECTORS = {"random": select_random, "herding": select_herding, "kcenter": select_kcenter}
