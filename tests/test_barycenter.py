import numpy as np
import ot
import pytest
import torch

from geodistill.barycenter import kmeans, w2_cost, wasserstein_barycenter


@pytest.mark.parametrize("method", ["exact", "fast", "sliced"])
def test_two_point_masses_one_atom_is_midpoint(method):
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    atoms, weights = wasserstein_barycenter(x, 1, method=method)
    assert atoms.shape == (1, 2) and weights.shape == (1,)
    torch.testing.assert_close(atoms[0], torch.tensor([1.0, 2.0]), atol=1e-4, rtol=0)
    assert weights.item() == pytest.approx(1.0)
    # W2^2 of the midpoint: each point is at squared distance 1^2 + 2^2 = 5
    assert w2_cost(x, atoms, weights) == pytest.approx(5.0, rel=1e-5)


@pytest.mark.parametrize("method", ["exact", "fast"])
@pytest.mark.parametrize("weighted", [False, True])
def test_as_many_atoms_as_points_gives_zero_cost(method, weighted):
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    atoms, w = wasserstein_barycenter(x, 6, method=method, weighted=weighted)
    assert w2_cost(x, atoms, w) == pytest.approx(0.0, abs=1e-6)


def test_weighted_recovers_unbalanced_clusters():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(90, 2, generator=g) * 0.05 + torch.tensor([5.0, 0.0])
    b = torch.randn(10, 2, generator=g) * 0.05 - torch.tensor([5.0, 0.0])
    x = torch.cat([a, b])
    for method in ("exact", "fast"):
        atoms, w = wasserstein_barycenter(x, 2, weighted=True, method=method)
        order = atoms[:, 0].argsort(descending=True)
        torch.testing.assert_close(w[order], torch.tensor([0.9, 0.1]), atol=1e-6, rtol=0)
        torch.testing.assert_close(atoms[order[0]], a.mean(0), atol=1e-4, rtol=0)
    # with uniform weights (1/2, 1/2) the big cluster must feed both atoms: a higher cost
    atoms_u, w_u = wasserstein_barycenter(x, 2, weighted=False, method="exact")
    torch.testing.assert_close(w_u, torch.tensor([0.5, 0.5]))
    assert w2_cost(x, atoms_u, w_u) > w2_cost(x, *wasserstein_barycenter(x, 2, weighted=True))


def test_weighted_optimum_is_kmeans_inertia():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(2))
    atoms, w = wasserstein_barycenter(x, 5, weighted=True, method="fast")
    inertia = torch.cdist(x.double(), atoms.double()).min(1).values.pow(2).mean().item()
    assert w2_cost(x, atoms, w) == pytest.approx(inertia, rel=1e-4)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_fast_never_costs_more_than_pot_reference(seed, weighted):
    """The reference: POT's free-support barycenter from ``exact``'s seeded init."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 0.6, size=(60, 8)) for c in rng.normal(0, 3, size=(6, 8))])
    k = 10
    init = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k].numpy()]
    a, b = np.full(len(x), 1 / len(x)), np.full(k, 1 / k)
    ref = ot.lp.free_support_barycenter([x], [a], init, b=b)
    atoms_e, w_e = wasserstein_barycenter(x, k, method="exact", weighted=weighted, seed=seed)
    if not weighted:  # exact *is* POT's solver
        assert w2_cost(x, atoms_e, w_e) == pytest.approx(w2_cost(x, ref), rel=1e-6)
    atoms, w = wasserstein_barycenter(x, k, method="fast", weighted=weighted, seed=seed)
    cost = w2_cost(x, atoms, w)
    assert cost <= w2_cost(x, ref) + 1e-9
    if not weighted:  # same start as exact, same alternation: never worse
        assert cost <= w2_cost(x, atoms_e, w_e) + 1e-9


def test_sliced_is_close_to_exact_in_1d():
    # in 1-D the sliced and exact W2 coincide: quantile atoms
    x = torch.linspace(0, 1, 100)[:, None]
    atoms, _ = wasserstein_barycenter(x, 4, method="sliced")
    expect = torch.tensor([0.125, 0.375, 0.625, 0.875])
    torch.testing.assert_close(atoms[:, 0].sort().values, expect, atol=0.01, rtol=0)


def test_sliced_finds_separated_clusters_in_2d():
    # four tight, equal blobs at the corners of a square: the sliced barycenter with four atoms
    # puts one atom on each blob (so its exact W2 is the blobs' own spread, like `exact`'s)
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    x = (centers[:, None] + 0.1 * torch.randn(4, 30, 2, generator=g)).reshape(-1, 2)
    atoms, _ = wasserstein_barycenter(x, 4, method="sliced")
    near = torch.cdist(centers, atoms).min(1).values
    assert near.max() < 0.3, near
    exact, _ = wasserstein_barycenter(x, 4, method="exact")
    assert w2_cost(x, atoms) <= 1.5 * w2_cost(x, exact)


def test_kmeans_is_seeded_and_reaches_lloyd_fixed_point():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g).double()
    y1, m1, lab1 = kmeans(x, 5, generator=torch.Generator().manual_seed(3))
    y2, _, lab2 = kmeans(x, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(y1, y2)
    # a fixed point of Lloyd: every point's nearest centroid is its label, every centroid is its
    # cell's mean (a stopped-too-early run fails this on unclustered data)
    assert torch.equal(torch.cdist(x, y1).argmin(1), lab1)
    for j in range(5):
        torch.testing.assert_close(y1[j], x[lab1 == j].mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(m1, torch.bincount(lab1, minlength=5).double() / 200)


def test_kmeans_masses_sum_to_one():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)).double()
    y, m, lab = kmeans(x, 4, generator=torch.Generator().manual_seed(0))
    assert y.shape == (4, 3) and lab.shape == (50,)
    assert m.sum().item() == pytest.approx(1.0)
    assert (m > 0).all()


def test_bad_arguments():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="n_atoms"):
        wasserstein_barycenter(x, 6)
    with pytest.raises(ValueError, match="method"):
        wasserstein_barycenter(x, 2, method="magic")
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        wasserstein_barycenter(torch.randn(5), 2)
    with pytest.raises(ValueError, match="NaN"):
        wasserstein_barycenter(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)


def test_accepts_numpy_and_returns_float32():
    atoms, w = wasserstein_barycenter(np.random.default_rng(0).normal(size=(20, 3)), 3, method="fast")
    assert atoms.dtype == torch.float32 and w.dtype == torch.float32
    assert w.sum().item() == pytest.approx(1.0)


def test_w2_cost_is_the_best_pairing_with_uniform_or_normalized_weights():
    import itertools

    x = np.array([[0.0, 0.1], [0.3, 0.0], [0.2, 0.4]])
    y = np.array([[0.1, 0.1], [0.0, 0.3], [0.35, 0.05]])
    best = min(((x - y[list(p)]) ** 2).sum(1).mean() for p in itertools.permutations(range(3)))
    assert w2_cost(x, y) == pytest.approx(best)  # small distances: nothing is clipped at 1
    assert w2_cost(x, y, [5.0, 5.0, 5.0]) == pytest.approx(best)  # weights are normalized
    # one atom holding 2/3 of the mass: two of the three points must travel to it
    two = w2_cost(x, y[:2], [2.0, 1.0])
    brute = min(
        (((x[i] - y[0]) ** 2).sum() + ((x[j] - y[0]) ** 2).sum() + ((x[m] - y[1]) ** 2).sum()) / 3
        for i, j, m in itertools.permutations(range(3))
    )
    assert two == pytest.approx(brute)
    assert w2_cost(x, y[:2]) != pytest.approx(two)  # uniform weights differ from (2/3, 1/3)


def test_sqdist_is_exact_below_one_and_never_negative():
    from geodistill.barycenter import sqdist

    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.rand(5, 3, generator=g, dtype=torch.float64) * 0.1,
        torch.rand(4, 3, generator=g, dtype=torch.float64) * 0.1,
    )
    torch.testing.assert_close(sqdist(x, y), torch.cdist(x, y) ** 2)
    assert (sqdist(x, x).diagonal() >= 0).all()


def test_empty_cells_move_their_atoms_to_the_farthest_points():
    from geodistill.barycenter import _reseed_empty, _voronoi

    x = torch.tensor([[0.0], [0.1], [1.0], [5.0], [6.2]], dtype=torch.float64)
    y = torch.tensor([[0.05], [100.0], [5.5], [200.0]], dtype=torch.float64)  # atoms 1 and 3: empty
    idx, dist = _voronoi(x, y)
    assert _reseed_empty(x, y, idx, dist) is True
    # to the two points farthest from their nearest atoms (0.95 and 0.7 away), farthest first
    assert y[:, 0].tolist() == [0.05, 1.0, 5.5, 6.2]
    idx, dist = _voronoi(x, y)
    before = y.clone()
    assert _reseed_empty(x, y, idx, dist) is False and torch.equal(y, before)  # no empty cell: untouched
    # an atom with exactly one point is not empty
    y1 = torch.tensor([[0.0], [1.0], [5.6]], dtype=torch.float64)
    idx, dist = _voronoi(x, y1)
    assert _reseed_empty(x, y1, idx, dist) is False


def test_kmeanspp_picks_distinct_points_and_handles_identical_ones():
    from geodistill.barycenter import _kmeanspp

    x = torch.tensor([[0.0, 0.0], [0.01, 0.0], [0.0, 0.02], [0.03, 0.03]], dtype=torch.float64)
    for seed in range(5):  # k = n small-scale distinct points: each drawn once (D^2 of a chosen one is 0)
        y = _kmeanspp(x, 4, torch.Generator().manual_seed(seed))
        assert y.shape == (4, 2) and len({tuple(r.tolist()) for r in y}) == 4
    same = torch.ones(6, 2, dtype=torch.float64)  # every D^2 is 0: uniform draws, no error
    assert torch.equal(
        _kmeanspp(same, 3, torch.Generator().manual_seed(0)), torch.ones(3, 2, dtype=torch.float64)
    )
    # far points are drawn with probability proportional to D^2: from a start at 0, a point at
    # distance 10 is picked ~100x as often as one at distance 1
    line = torch.tensor([[0.0], [0.0], [0.0], [1.0], [10.0]], dtype=torch.float64)
    picks = [
        _kmeanspp(line, 2, torch.Generator().manual_seed(s))[1, 0].item()
        for s in range(300)
        if _kmeanspp(line, 2, torch.Generator().manual_seed(s))[0, 0].item() == 0.0
    ]
    assert len(picks) > 100 and picks.count(10.0) > 0.9 * len(picks)


def test_lloyd_moves_singleton_atoms_and_reports_every_mass():
    from geodistill.barycenter import lloyd

    x = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    y, mass, idx, inertia = lloyd(x, torch.tensor([[0.2], [9.0]], dtype=torch.float64))
    assert y[:, 0].tolist() == [0.5, 10.0]  # the atom alone with its point moves onto it
    assert mass.tolist() == pytest.approx([2 / 3, 1 / 3]) and idx.tolist() == [0, 0, 1]
    assert inertia == pytest.approx((0.25 + 0.25 + 0) / 3)
    # the last atom's cell is empty at the start: it is reseeded, and masses has all k entries
    y, mass, idx, _ = lloyd(x, torch.tensor([[0.0], [1.0], [50.0]], dtype=torch.float64))
    assert len(mass) == 3 and sorted(y[:, 0].tolist()) == [0.0, 1.0, 10.0]


def test_sliced_is_seeded_from_the_lloyd_start_with_uniform_weights():
    from geodistill.barycenter import _fast, _sliced

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    atoms, w = wasserstein_barycenter(x, 4, method="sliced", seed=3, max_iter=20)
    g = torch.Generator().manual_seed(3)
    start, _ = _fast(x, 4, True, g, 20, 1e-7)  # the weighted (Lloyd) start, then the sliced descent
    torch.testing.assert_close(atoms, _sliced(x, start, g, 20).float())
    assert w.tolist() == [0.25] * 4
    again, _ = wasserstein_barycenter(x, 4, method="sliced", seed=3, max_iter=20)
    assert torch.equal(atoms, again)  # the generator drives every draw: no global RNG


def test_features_that_require_grad_are_accepted():
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    atoms, w = wasserstein_barycenter(x, 2)
    assert atoms.shape == (2, 3) and not atoms.requires_grad
    assert w2_cost(x, atoms) >= 0


def test_fast_keeps_the_better_start_and_is_seeded():
    # 40 points near the origin and two far clusters of 5: a start with no atom in a far cluster
    # is a poor local optimum for POT's alternation; the k-means++ start is not.
    g = torch.Generator().manual_seed(1)
    x = torch.cat(
        [
            torch.randn(40, 2, generator=g) * 0.3,
            torch.randn(5, 2, generator=g) * 0.3 + torch.tensor([8.0, 0.0]),
            torch.randn(5, 2, generator=g) * 0.3 + torch.tensor([0.0, 8.0]),
        ]
    ).double()
    exact, _ = wasserstein_barycenter(x, 5, method="exact", seed=3)
    fast, w = wasserstein_barycenter(x, 5, method="fast", seed=3)
    assert w2_cost(x, fast) < w2_cost(x, exact) - 0.5  # the k-means++ candidate won here
    again, _ = wasserstein_barycenter(x, 5, method="fast", seed=3)
    assert torch.equal(fast, again)  # every draw comes from the seeded generator


def test_sliced_draws_128_orthonormal_directions_per_step(monkeypatch):
    seen = []
    qr = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda a: seen.append(tuple(a.shape)) or qr(a))
    x = torch.randn(30, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    wasserstein_barycenter(x, 3, method="sliced", max_iter=2)
    assert seen == [(200, 128), (200, 128)]  # 128 random orthonormal directions per step at D = 200


def test_default_seed_is_zero():
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(2))
    a, _ = wasserstein_barycenter(x, 3)
    b, _ = wasserstein_barycenter(x, 3, seed=0)
    c, _ = wasserstein_barycenter(x, 3, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
