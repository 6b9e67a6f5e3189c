r"""Wasserstein barycenters of one empirical measure with a fixed number of support points.

Given features :math:`x_1..x_n \in \mathbb{R}^d` with uniform mass
:math:`\mu = \frac1n\sum_i \delta_{x_i}`, find :math:`k` atoms :math:`y_j` and weights
:math:`b \in \Delta_k` minimizing

.. math::  W_2^2\Big(\mu, \sum_j b_j \delta_{y_j}\Big)
           = \min_{T \in \Pi(\frac1n \mathbf 1, b)} \sum_{ij} T_{ij} \|x_i - y_j\|^2 .

With ``weighted=False`` the weights are fixed to :math:`b_j = 1/k` (the authors' runs); with
``weighted=True`` they are optimized too, and then the problem is exactly k-means:
:math:`\min_b W_2^2 = \frac1n \sum_i \min_j \|x_i - y_j\|^2` with :math:`b_j` the mass of
atom :math:`j`'s Voronoi cell.

Shapes: ``features [n, d]`` → ``atoms [k, d]``, ``weights [k]`` (sum 1), float32 tensors.
"""

from __future__ import annotations

import numpy as np
import torch

METHODS = ("exact", "fast", "sliced")


def _as_tensor(features) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if x.ndim != 2:
        raise ValueError(f"features must be [n, d], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or Inf")
    return x.detach().to(torch.float64).cpu()


def w2_cost(features, atoms, weights=None) -> float:
    """Exact :math:`W_2^2` between the uniform measure on ``features [n, d]`` and
    ``sum_j weights[j] δ(atoms[j])`` (uniform weights when ``None``)."""
    import ot  # POT is imported where it is used: training students needs none of it

    x, y = _as_tensor(features).numpy(), _as_tensor(atoms).numpy()
    b = np.full(len(y), 1 / len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    b = b / b.sum()
    return float(ot.emd2(np.full(len(x), 1 / len(x)), b, ot.dist(x, y), numItermax=10_000_000))


def wasserstein_barycenter(
    features,
    n_atoms: int,
    *,
    weighted: bool = False,
    method: str = "exact",
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Free-support barycenter of ``features [n, d]`` with ``n_atoms`` atoms (module docstring).

    - ``exact``: the paper's alternation. Positions by POT's free-support barycenter (exact
      OT plan, then barycentric projection) from ``n_atoms`` random data points; with
      ``weighted=True`` alternated with the exact weight update (Voronoi-cell masses).
    - ``fast``: two seeded starts, ``exact``'s own and a k-means++ one (float32 Lloyd in
      torch). Uniform weights: both refined by alternating exact balanced assignments (OT
      to uniform atoms) and centroid updates, the better kept, so never above ``exact``.
      ``weighted=True``: Lloyd (the optimum's form) from POT's uniform solution and from the
      k-means++ start, the better kept, so never above POT's uniform barycenter.
    - ``sliced``: sliced-Wasserstein ablation — minimizes the average over random 1-D
      projections of :math:`W_2^2`, from the ``fast`` initialization (uniform weights).

    Returns ``(atoms [n_atoms, d], weights [n_atoms])`` as float32 tensors.
    """
    x = _as_tensor(features)
    n = len(x)
    if not 1 <= n_atoms <= n:
        raise ValueError(f"n_atoms={n_atoms} must be between 1 and the number of points ({n})")
    if method not in METHODS:
        raise ValueError(f"unknown barycenter method {method!r}; use one of {METHODS}")
    g = torch.Generator().manual_seed(seed)
    if method == "exact":
        y, b = _exact(x, n_atoms, weighted, g, max_iter, tol)
    elif method == "fast":
        y, b = _fast(x, n_atoms, weighted, g, max_iter, tol)
    else:
        y, _ = _fast(x, n_atoms, True, g, max_iter, tol)
        y, b = _sliced(x, y, g, max_iter), torch.full((n_atoms,), 1 / n_atoms, dtype=torch.float64)
    return y.float(), b.float()


def sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[n, k]`` between rows of ``x [n, d]`` and ``y [k, d]``."""
    return ((x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None]).clamp_min_(0)


def _voronoi(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest atom of every point and the (non-squared) distance to it."""
    d2, idx = sqdist(x, y).min(1)
    return idx, d2.sqrt()


def _reseed_empty(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, dist: torch.Tensor) -> bool:
    """Move atoms with empty cells to the points farthest from their atoms."""
    mass = torch.bincount(idx, minlength=len(y))
    empty = (mass == 0).nonzero().flatten()
    if len(empty) == 0:
        return False
    far = dist.argsort(descending=True)[: len(empty)]
    y[empty] = x[far]
    return True


def _exact(x, k, weighted, g, max_iter, tol):
    import ot

    n = len(x)
    y = x[torch.randperm(n, generator=g)[:k]].clone()
    a = np.full(n, 1 / n)
    b = torch.full((k,), 1 / k, dtype=torch.float64)
    prev = np.inf
    for _ in range(max_iter if weighted else 1):
        y = torch.from_numpy(
            ot.lp.free_support_barycenter(
                [x.numpy()], [a], y.numpy(), b=b.numpy(), numItermax=max_iter, stopThr=tol
            )
        )
        if not weighted:
            break
        idx, dist = _voronoi(x, y)
        if _reseed_empty(x, y, idx, dist):
            idx, dist = _voronoi(x, y)
        b = torch.bincount(idx, minlength=k).double() / n
        cost = float((dist**2).mean())
        if cost >= prev * (1 - tol):
            break
        prev = cost
    return y, b


def _kmeanspp(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: ``k`` data points, each drawn with probability ∝ squared distance."""
    n = len(x)
    first = torch.randint(n, (1,), generator=g)
    y = [x[first]]
    d2 = ((x - y[0]) ** 2).sum(1)
    for _ in range(1, k):
        nxt = (
            torch.multinomial(d2 / d2.sum(), 1, generator=g)
            if d2.sum() > 0
            else torch.randint(n, (1,), generator=g)
        )
        y.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    return torch.cat(y).clone()


def lloyd(x: torch.Tensor, y: torch.Tensor, *, max_iter: int = 100, tol: float = 1e-7):
    """Lloyd iterations from atoms ``y [k, d]`` (float32 distances, float64 means).

    Returns ``(centroids [k, d], masses [k], labels [n], inertia)``; the inertia
    ``mean_i min_j ||x_i - y_j||^2`` never increases along the iterations. An atom whose
    cell empties is moved to the point farthest from its atom.
    """
    n, k = len(x), len(y)
    x32 = x.float()
    xx = (x32 * x32).sum(1, keepdim=True)
    y = y.clone()

    def assign(y):
        y32 = y.float()
        d2 = (xx - 2 * x32 @ y32.T + (y32 * y32).sum(1)).clamp_min_(0)
        return d2.min(1)

    prev = np.inf
    for _ in range(max_iter):
        dmin, idx = assign(y)
        inertia = float(dmin.double().mean())
        if inertia >= prev * (1 - tol):
            break
        prev = inertia
        mass = torch.bincount(idx, minlength=k)
        sums = torch.zeros(k, x.shape[1], dtype=x32.dtype).index_add_(0, idx, x32).to(y.dtype)
        full = mass > 0
        y[full] = sums[full] / mass[full, None]
        _reseed_empty(x, y, idx, dmin)  # dmin is squared: same order of distances
    dmin, idx = assign(y)
    inertia = float(sqdist(x, y).gather(1, idx[:, None]).mean())
    return y, torch.bincount(idx, minlength=k).double() / n, idx, inertia


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    generator: torch.Generator,
    n_init: int = 3,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means++ then Lloyd. ``x [n, d]`` → ``(centroids [k, d], masses [k], labels [n])``,
    best of ``n_init`` restarts by inertia."""
    best = min(
        (lloyd(x, _kmeanspp(x, k, generator), max_iter=max_iter, tol=tol) for _ in range(n_init)),
        key=lambda r: r[3],
    )
    return best[0], best[1], best[2]


def _fast(x, k, weighted, g, max_iter, tol):
    """Two starts: ``exact``'s own (POT's alternation from the same seeded data points) and a
    k-means++ start. Uniform weights: both refined by the balanced alternation, best kept, so
    never above ``exact``. Learned weights: Lloyd from POT's uniform solution (cell masses
    can only lower its cost) and from the k-means++ start, best kept."""
    y_ref, b_ref, cost_ref = _balanced_refine(
        x, x[torch.randperm(len(x), generator=g)[:k]].clone(), max_iter, tol
    )
    y_pp = _kmeanspp(x, k, g)
    if weighted:
        cands = [lloyd(x, y0, max_iter=max_iter, tol=tol) for y0 in (y_ref, y_pp)]
        y, mass, _, _ = min(cands, key=lambda r: r[3])
        return y, mass
    y2, b2, cost2 = _balanced_refine(x, lloyd(x, y_pp, max_iter=max_iter, tol=tol)[0], max_iter, tol)
    return (y_ref, b_ref) if cost_ref <= cost2 else (y2, b2)


def _balanced_refine(x, y, max_iter, tol):
    """Alternate exact balanced assignment (OT to uniform atoms) and centroid updates."""
    import ot

    n, k = len(x), len(y)
    a, b = np.full(n, 1 / n), np.full(k, 1 / k)
    xn = x.numpy()
    prev = np.inf
    for _ in range(max_iter):
        m = ot.dist(xn, y.numpy())
        plan = ot.emd(a, b, m, numItermax=10_000_000)
        cost = float((plan * m).sum())
        if cost >= prev * (1 - tol):
            break
        prev = cost
        y = torch.from_numpy(plan.T @ xn / b[:, None])
    return y, torch.from_numpy(b), min(cost, prev)


def _sliced(
    x: torch.Tensor, y: torch.Tensor, g: torch.Generator, iters: int, n_proj: int = 128, step: float = 1.0
) -> torch.Tensor:
    """Block-coordinate descent on the sliced W2 between ``x`` and uniform atoms ``y``.

    Each iteration draws ``n_proj`` orthonormal directions and moves every atom, along each
    direction, to its 1-D optimal (quantile) position: iterative distribution transfer
    (Pitié et al. 2007; Bonneel et al. 2015) restricted to a random subspace.
    """
    n, d = x.shape
    k = len(y)
    bounds = torch.round(torch.arange(k + 1, dtype=torch.float64) * n / k).long()
    y = y.clone()
    for _ in range(iters):
        theta, _ = torch.linalg.qr(torch.randn(d, min(n_proj, d), generator=g, dtype=torch.float64))
        px = (x @ theta).sort(0).values  # [n, L]
        cs = torch.cat([torch.zeros(1, px.shape[1], dtype=torch.float64), px.cumsum(0)])
        target = (cs[bounds[1:]] - cs[bounds[:-1]]) / (bounds[1:] - bounds[:-1])[:, None]  # [k, L]
        py = y @ theta
        rank = py.argsort(0).argsort(0)  # each atom's rank along every direction
        y += step * (torch.gather(target, 0, rank) - py) @ theta.T
    return y
