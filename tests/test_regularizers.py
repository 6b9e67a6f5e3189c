"""GUARD's curvature terms and the adversarial baselines, each against an independent
computation on fixed inputs (a wrong unit, reduction, direction or radius changes the value)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geodistill.models import create_model
from geodistill.teacher import REGULARIZERS, curvature_penalty, curvature_simple_penalty, objective
from geodistill.teacher.regularizers import DEFAULT_LAMBDA, _pgd, eval_bn_as_affine


class Quadratic(nn.Module):
    """Per-sample loss l(u) = 1/2 u^T A u with a learnable symmetric A: input Hessian = A."""

    def __init__(self, d: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        m = torch.randn(d, d, generator=g, dtype=torch.float64)
        self.a = nn.Parameter(m @ m.T + torch.eye(d, dtype=torch.float64))

    def forward(self, u):
        return 0.5 * torch.einsum("ni,ij,nj->n", u, self.a, u)


def test_curvature_penalty_is_h_times_hessian_direction_over_batch():
    q = Quadratic(5)
    u = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = 0.3
    pen = curvature_penalty(q, u, h)
    a = q.a.detach()
    z = (u @ a) / (u @ a).norm(dim=1, keepdim=True)
    # gradient of the batch-MEAN loss: every row carries 1/N (the authors' reduction)
    torch.testing.assert_close(pen, h * (z @ a).norm(dim=1) / len(u), rtol=1e-6, atol=1e-9)
    pen.mean().backward()  # differentiable w.r.t. the parameters (double backprop)
    # ... through BOTH gradients: independently, with z fixed, row i is h·‖½(A+Aᵀ) z_i‖ / N
    a_ = q.a.detach().clone().requires_grad_(True)
    (h * (z @ (0.5 * (a_ + a_.T))).norm(dim=1) / len(u)).mean().backward()
    torch.testing.assert_close(q.a.grad, a_.grad, rtol=1e-6, atol=1e-12)


def test_curvature_simple_penalty_is_batch_mean_loss_difference():
    q = Quadratic(3)
    u = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h = 0.1
    g = u @ q.a.detach()
    z = g / g.norm(dim=1, keepdim=True)
    expect = (q(u + h * z).mean() - q(u).mean()).abs().detach()
    got = curvature_simple_penalty(q, u, h)
    assert got.ndim == 0
    torch.testing.assert_close(got.detach(), expect, rtol=1e-6, atol=1e-12)


def _model(std):
    m = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, mean=[0.3], std=[std], seed=0)
    m.train()
    m(torch.rand(16, 1, 8, 8))  # give BN non-trivial running statistics
    return m


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.rand(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("std", [0.25, 1.0])
def test_curvature_objective_is_in_normalized_units_with_the_authors_lambda(std):
    m = _model(std)
    x, y = _batch()
    loss, logits, parts = objective(m, x, y, "curvature", h=3.0)
    # independent: eval-mode model on u = (x - mean) / std, batch-mean CE, h = 3 in those units
    m.eval()
    body = lambda uu: m.head(m.body(uu))
    u = (x - 0.3) / std
    u.requires_grad_(True)
    g0 = torch.autograd.grad(F.cross_entropy(body(u), y), u)[0]
    z = (g0 + 1e-7) / (g0.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-7)  # the authors' epsilon
    up = (u + 3.0 * z).detach().requires_grad_(True)
    g1 = torch.autograd.grad(F.cross_entropy(body(up), y), up)[0]
    expect = (g1 - g0).flatten(1).norm(dim=1).mean()
    assert parts["reg"] == pytest.approx(expect.item(), rel=1e-4)
    m.train()
    clean = F.cross_entropy(m(x), y)
    assert loss.item() == pytest.approx(clean.item() + DEFAULT_LAMBDA["curvature"] * parts["reg"], rel=1e-5)
    assert DEFAULT_LAMBDA["curvature"] == 100.0 and DEFAULT_LAMBDA["curvature-simple"] == 1e-4
    if std != 1.0:  # the same step taken in pixel units would give another value
        pix = curvature_penalty(lambda xx: F.cross_entropy(m.eval()(xx), y, reduction="none"), x, 3.0).mean()
        assert abs(pix.item() - parts["reg"]) > 0.05 * parts["reg"]


@pytest.mark.parametrize("kind", ["curvature", "gradnorm"])
def test_reg_fraction_is_the_first_images_terms_at_the_whole_batchs_scale(kind):
    # 6 images, fraction 0.5: the term is the mean of the first 3 images' per-image terms, each
    # computed as on the whole batch (curvature keeps its 1/6, not 1/3); the CE part sees all 6
    m = _model(0.5)
    twin = copy.deepcopy(m)  # each objective call moves the BN statistics once, so use twins
    x, y = _batch()
    whole_loss, _, whole = objective(m, x, y, kind)
    loss, _, half = objective(twin, x, y, kind, fraction=0.5)
    m.eval()
    u = (x - 0.3) / 0.5
    per = lambda uu: F.cross_entropy(m.head(m.body(uu)), y, reduction="none")
    with eval_bn_as_affine(m):
        rows = curvature_penalty(per, u, 3.0) if kind == "curvature" else None
    if kind == "gradnorm":
        uu = u.clone().requires_grad_(True)
        rows = torch.autograd.grad(per(uu).sum(), uu)[0].flatten(1).norm(dim=1)
    assert whole["reg"] == pytest.approx(rows.mean().item(), rel=1e-4)
    assert half["reg"] == pytest.approx(rows[:3].mean().item(), rel=1e-4)
    assert half["reg"] != pytest.approx(whole["reg"], rel=1e-3)
    lam = DEFAULT_LAMBDA[kind]
    assert loss.item() - lam * half["reg"] == pytest.approx(whole_loss.item() - lam * whole["reg"], rel=1e-5)


def test_gradnorm_is_the_hand_computed_normalized_input_gradient():
    m = _model(0.5)
    x, y = _batch()
    _, _, parts = objective(m, x, y, "gradnorm")
    m.eval()
    u = ((x - 0.3) / 0.5).requires_grad_(True)
    per = F.cross_entropy(m.head(m.body(u)), y, reduction="none")
    g = torch.autograd.grad(per.sum(), u)[0]  # per-sample gradients
    assert parts["reg"] == pytest.approx(g.flatten(1).norm(dim=1).mean().item(), rel=1e-4)


def test_affine_bn_matches_eval_batchnorm_with_nontrivial_affine_and_statistics():
    from geodistill.teacher.regularizers import _affine_bn_forward

    g = torch.Generator().manual_seed(0)
    for bn in (nn.BatchNorm2d(3), nn.BatchNorm2d(3, affine=False)):
        bn.running_mean = torch.randn(3, generator=g)
        bn.running_var = torch.rand(3, generator=g) * 0.01 + 1e-4  # small: eps matters
        if bn.affine:
            nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
        x = torch.randn(4, 3, 5, 5, generator=g)
        torch.testing.assert_close(_affine_bn_forward(bn.eval(), x), bn(x), rtol=1e-5, atol=1e-5)
        bn.train()  # training mode: the module's own forward (batch statistics)
        torch.testing.assert_close(
            _affine_bn_forward(bn, x),
            F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps),
            rtol=1e-5,
            atol=1e-5,
        )


def test_affine_eval_bn_is_exact_for_values_and_second_order_gradients():
    m = _model(0.5).eval()
    x, y = _batch()
    f = lambda uu: F.cross_entropy(m.head(m.body(uu)), y, reduction="none")
    u = (x - 0.3) / 0.5
    plain = curvature_penalty(f, u, 3.0).mean()
    (gp,) = torch.autograd.grad(plain, m.body[0].weight)
    with eval_bn_as_affine(m):
        fast = curvature_penalty(f, u, 3.0).mean()
        (gf,) = torch.autograd.grad(fast, m.body[0].weight)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gf, gp, rtol=1e-4, atol=1e-7)
    assert "forward" not in vars(m.body[1])  # the context manager restores the modules


def test_pgd_examples_stay_in_the_ball_and_raise_the_loss():
    m = _model(0.5).eval()
    x, y = _batch()
    obj = lambda xx: F.cross_entropy(m(xx), y)
    eps = 8 / 255
    adv = _pgd(x, obj, eps, 2.5 * eps / 7, 7, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() > 0.9 * eps  # the radius is actually used
    assert obj(adv) > obj(x) + 1e-3


def test_pgd_random_start_is_uniform_in_the_ball_and_seeded():
    x = torch.full((2000, 1, 2, 2), 0.5)
    eps = 0.1
    start = _pgd(x, lambda xx: xx.sum(), eps, 0.0, 0, torch.Generator().manual_seed(0))
    d = start - x
    assert d.abs().max() <= eps + 1e-7 and d.min() < -0.09 and d.max() > 0.09
    assert abs(d.mean().item()) < 2e-3 and d.std().item() == pytest.approx(eps / 3**0.5, rel=0.03)
    again = _pgd(x, lambda xx: xx.sum(), eps, 0.0, 0, torch.Generator().manual_seed(0))
    assert torch.equal(start, again)
    # one step of alpha on a linear objective moves every pixel by +alpha (then clipped to eps)
    one = _pgd(
        torch.full((1, 1, 2, 2), 0.5), lambda xx: xx.sum(), eps, 0.04, 1, torch.Generator().manual_seed(1)
    )
    zero = _pgd(
        torch.full((1, 1, 2, 2), 0.5), lambda xx: xx.sum(), eps, 0.0, 1, torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(one, (zero + 0.04).clamp(max=0.5 + eps))
    flat = _pgd(
        torch.full((1, 1, 2, 2), 0.5), lambda xx: 0 * xx.sum(), eps, 0.04, 1, torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(flat, zero)  # a zero gradient moves nothing
    # the objective sees clipped images: on a pixel at 1, an objective that rewards values above
    # 1 has zero gradient there, so that pixel's perturbation stays where the start put it
    top = torch.ones(1, 1, 2, 2)
    seen = []
    _pgd(top, lambda xx: seen.append(xx.detach()) or xx.sum(), eps, 0.01, 2, torch.Generator().manual_seed(2))
    assert all(s.max() <= 1 and s.min() >= 0 for s in seen)


@pytest.mark.parametrize("kind,steps,alpha", [("fgsm", 1, 1.25), ("pgd", 7, 2.5 / 7)])
def test_adversarial_training_uses_the_published_steps_and_step_size(kind, steps, alpha, monkeypatch):
    import geodistill.teacher.regularizers as reg

    calls = []
    real = reg._pgd
    monkeypatch.setattr(
        reg, "_pgd", lambda x, obj, eps, a, n, g: calls.append((eps, a, n, g)) or real(x, obj, eps, a, n, g)
    )
    m = _model(0.5)
    x, y = _batch()
    gen = torch.Generator().manual_seed(0)
    objective(m, x, y, kind, eps=8 / 255, generator=gen)
    assert calls == [(8 / 255, pytest.approx(alpha * 8 / 255), steps, gen)]


def test_trades_is_batchmean_kl_from_clean_to_adversarial(monkeypatch):
    import geodistill.teacher.regularizers as reg

    m = _model(0.5)
    x, y = _batch()
    x_adv = 1 - x  # far from x: a KL well above rounding
    calls = []
    monkeypatch.setattr(reg, "_pgd", lambda xx, obj, eps, a, n, g: calls.append((eps, a, n)) or x_adv)
    loss, logits, parts = objective(m, x, y, "trades", eps=8 / 255)
    assert calls == [(8 / 255, pytest.approx(2.5 * 8 / 255 / 7), 7)]
    m.train()
    p = F.softmax(logits.detach(), 1)
    q = F.log_softmax(m(x_adv), 1).detach()
    expect = (p * (p.log() - q)).sum(1).mean()  # KL(p_clean || p_adv), averaged over the batch
    assert parts["reg"] == pytest.approx(expect.item(), rel=1e-4)


def test_gradnorm_term_reaches_the_parameters():
    m = _model(0.5)
    x, y = _batch()
    loss, logits, _ = objective(m, x, y, "gradnorm")
    (loss - F.cross_entropy(logits, y)).backward()  # the regularizer alone
    assert m.body[0].weight.grad.abs().sum() > 0


def test_label_smoothing_reaches_the_loss():
    m = _model(0.5)
    x, y = _batch()
    loss, logits, _ = objective(m, x, y, "none", label_smoothing=0.1)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-3)


def test_unknown_regularizer_is_named():
    with pytest.raises(ValueError, match="unknown regularizer 'magic'"):
        objective(_model(0.5), *_batch(), "magic")


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_adversarial_training_loss_is_above_clean_loss(kind):
    m = _model(0.5)
    x, y = _batch()
    loss, _, _ = objective(m, x, y, kind, eps=16 / 255, generator=torch.Generator().manual_seed(0))
    assert loss.item() > F.cross_entropy(m(x), y).item()


def test_trades_term_is_positive_and_weighted_by_six():
    m = _model(0.5)
    x, y = _batch()
    loss, logits, parts = objective(
        m, x, y, "trades", eps=16 / 255, generator=torch.Generator().manual_seed(0)
    )
    assert parts["reg"] > 1e-6
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item() + 6.0 * parts["reg"], rel=1e-5)


@pytest.mark.parametrize("kind", REGULARIZERS)
def test_every_objective_trains(kind):
    m = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, seed=0)
    x, y = _batch()
    loss, logits, parts = objective(m, x, y, kind, eps=2 / 255, generator=torch.Generator().manual_seed(0))
    assert logits.shape == (6, 3) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    assert m.training  # regularizers that switch to eval mode switch back
    if kind in ("curvature", "curvature-simple", "gradnorm", "trades"):
        assert parts["reg"] >= 0


def test_pgd_objective_sees_images_clipped_below_zero_too():
    seen = []
    bottom = torch.zeros(1, 1, 4, 4)
    _pgd(
        bottom,
        lambda xx: seen.append(xx.detach()) or -xx.sum(),
        0.1,
        0.01,
        2,
        torch.Generator().manual_seed(2),
    )
    assert len(seen) == 2 and all(s.min() >= 0 for s in seen)


@pytest.mark.parametrize("kind", ["fgsm", "pgd", "trades"])
def test_adversarial_objectives_run_without_a_generator(kind):
    m = _model(0.5)
    x, y = _batch()
    loss, _, _ = objective(m, x, y, kind, eps=8 / 255)  # global RNG, start drawn on the CPU
    assert torch.isfinite(loss)


def test_plain_objective_is_cross_entropy_and_reports_no_term():
    m = _model(0.5)
    x, y = _batch()
    loss, logits, parts = objective(m, x, y, "none", lam=5.0)
    assert parts == {}
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_curvature_simple_objective_is_the_authors_loss_difference_in_normalized_units():
    m = _model(0.5)
    x, y = _batch()
    loss, logits, parts = objective(m, x, y, "curvature-simple", h=3.0)
    m.eval()
    body = lambda uu: m.head(m.body(uu))
    u = ((x - 0.3) / 0.5).requires_grad_(True)
    g = torch.autograd.grad(F.cross_entropy(body(u), y), u)[0]
    z = (g + 1e-7) / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-7)
    with torch.no_grad():
        expect = (F.cross_entropy(body(u + 3.0 * z), y) - F.cross_entropy(body(u), y)).abs()
    assert parts["reg"] == pytest.approx(expect.item(), rel=1e-4)
    m.train()
    assert loss.item() == pytest.approx(F.cross_entropy(m(x), y).item() + 1e-4 * parts["reg"], rel=1e-6)


class _Wrapped(nn.Module):
    """Like DistributedDataParallel: the classifier is ``.module``; forward passes keywords on."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *a, **kw):
        return self.module(*a, **kw)


@pytest.mark.parametrize("kind", ["curvature", "curvature-simple", "gradnorm"])
def test_input_gradient_terms_see_through_a_ddp_style_wrapper(kind):
    x, y = _batch()
    m = _model(0.5)
    _, _, wrapped = objective(_Wrapped(copy.deepcopy(m)), x, y, kind)
    _, _, bare = objective(m, x, y, kind)
    assert wrapped["reg"] == pytest.approx(bare["reg"], rel=1e-6)


@pytest.mark.parametrize("kind", ["none", "curvature", "pgd"])
def test_teacher_history_records_the_unweighted_penalty(kind, digits, rt):
    """Each epoch's record carries the penalty's mean (before λ) for the terms that have one, so
    a user can see the penalty outgrow the cross-entropy; the loss is CE + λ·penalty."""
    from geodistill.config import SqueezeConfig
    from geodistill.teacher import train_teacher

    cfg = SqueezeConfig(arch="convnet-tiny", epochs=1, batch_size=64, lr=0.01, regularizer=kind, reg_h=1.0)
    (rec,) = train_teacher(digits, cfg, rt).history
    if kind != "curvature":
        assert "reg" not in rec
        return
    assert rec["reg"] > 0
    ce = rec["loss"] - DEFAULT_LAMBDA["curvature"] * rec["reg"]
    assert 0.5 < ce < 3.0  # an untrained 10-class CE, near log 10 = 2.3
