"""The methods' formulas against independent computations on fixed inputs, and behaviour tests
that a plausible one-line mistake (reversed KL, ignored weights, mispaired atoms, dropped
multiplier, wrong variance) would fail."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from geodistill.config import DistillConfig, EvalConfig
from geodistill.distilled import DistilledSet
from geodistill.evaluate import image_weights, kd_loss, train_student
from geodistill.models import create_model
from geodistill.stats import bn_layers
from geodistill.synth import distill, select_random
from geodistill.synth.losses import BNMatcher, feature_matching, ot_pairing
from geodistill.synth.select import nearest_distinct, select_herding, select_kcenter

# --- knowledge distillation -----------------------------------------------------------------


def test_kd_is_t_squared_kl_teacher_to_student_per_sample():
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.1, 3.0]])
    t = torch.tensor([[0.0, 1.0, 0.0], [1.0, -2.0, 0.5]])
    for temp in (1.0, 4.0, 20.0):
        p_t, p_s = F.softmax(t / temp, 1), F.softmax(s / temp, 1)
        want = temp**2 * (p_t * (p_t.log() - p_s.log())).sum(1)  # KL(p_teacher || p_student)
        torch.testing.assert_close(kd_loss(s, t, temp), want)
        reverse = temp**2 * (p_s * (p_s.log() - p_t.log())).sum(1)
        assert not torch.allclose(kd_loss(s, t, temp), reverse, rtol=1e-3)  # direction matters here
    assert kd_loss(s, t, 4.0).shape == (2,)


def test_image_weights_follow_barycenter_mass_and_class_size():
    ds = DistilledSet(
        torch.zeros(5, 1, 2, 2),
        torch.tensor([0, 0, 1, 1, 1]),
        torch.tensor([0.5, 0.5, 0.6, 0.3, 0.1]),
        ["a", "b"],
    )
    torch.testing.assert_close(image_weights(ds), torch.tensor([1.0, 1.0, 1.8, 0.9, 0.3]))


# --- the student loop -----------------------------------------------------------------------


def _tagged_set(n_per_class=3, classes=10):
    """A set whose image k is filled with the value k / 1000, so a batch reveals its images."""
    n = n_per_class * classes
    images = (torch.arange(n).float() / 1000).view(n, 1, 1, 1).expand(n, 1, 8, 8).clone()
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    w = torch.full((n,), 1 / n_per_class)
    return DistilledSet(images, labels, w, [str(i) for i in range(classes)])


def test_student_sees_every_image_once_per_epoch(teacher, digits, rt, monkeypatch):
    import geodistill.evaluate.student as student

    seen: list[list[int]] = []
    monkeypatch.setattr(
        student,
        "random_resized_crop",
        lambda x, **kw: (seen.append(torch.round(x[:, 0, 0, 0] * 1000).long().tolist()), x)[1],
    )
    ds = _tagged_set()
    cfg = EvalConfig(epochs=3, batch_size=7, seeds=1, cutmix=0)
    _, run = train_student(ds, teacher.model, digits, cfg, rt, seed=0)
    assert run["steps"] == 3 * 5 and run["batch_size"] == 7  # ceil(30 / 7) = 5 batches an epoch
    assert len(seen) == 15
    for epoch in range(3):
        batches = seen[5 * epoch : 5 * epoch + 5]
        assert sorted(i for b in batches for i in b) == list(range(30))  # each image exactly once
        assert max(map(len, batches)) - min(map(len, batches)) <= 1


def test_barycenter_weights_reach_the_student_loss(teacher, digits, rt):
    ds = select_random(digits, 2, seed=0)
    cfg = EvalConfig(epochs=2, batch_size=20, seeds=1)
    uniform, _ = train_student(ds, teacher.model, digits, cfg, rt, seed=0)
    skew = DistilledSet(ds.images, ds.labels, torch.tensor([0.9, 0.1] * 10), ds.class_names)
    skewed, _ = train_student(skew, teacher.model, digits, cfg, rt, seed=0)
    unweighted, _ = train_student(
        skew, teacher.model, digits, EvalConfig(**{**cfg.__dict__, "weighted": False}), rt, 0
    )
    p = lambda m: torch.cat([q.flatten() for q in m.parameters()])
    assert not torch.allclose(p(uniform), p(skewed))  # the weights change training
    torch.testing.assert_close(p(uniform), p(unweighted))  # weighted=False ignores them


# --- BatchNorm statistics matching ----------------------------------------------------------


def _captured_inputs(model, x):
    inputs = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: inputs.__setitem__(n, i[0].detach()))
        for n, m in bn_layers(model)
    ]
    model(x)
    for h in hooks:
        h.remove()
    return inputs


def _bn_model():
    m = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, seed=0)
    m.train()
    m(torch.rand(32, 1, 8, 8) * 2)  # running statistics away from (0, 1)
    return m.eval()


def test_per_class_bn_loss_every_layer_biased_variance_first_multiplier():
    m = _bn_model()
    layers = [n for n, _ in bn_layers(m)]
    assert len(layers) == 2
    g = torch.Generator().manual_seed(0)
    mean = {n: torch.randn(3, 16, generator=g) for n in layers}
    var = {n: torch.rand(3, 16, generator=g) + 0.1 for n in layers}
    matcher = BNMatcher(m, "class", bn_mean=mean, bn_var=var, first_multiplier=10.0)
    matcher.classes = torch.tensor([2, 0])
    x = torch.rand(6, 1, 8, 8, generator=g)  # class 2 = images 0-2, class 0 = images 3-5
    inputs = _captured_inputs(m, x)
    matcher.losses = []
    m(x)
    got = matcher.pop()
    matcher.remove()
    want = 0.0
    for li, name in enumerate(layers):
        per = 0.0
        for k, c in enumerate([2, 0]):
            xc = inputs[name][3 * k : 3 * k + 3].transpose(0, 1).flatten(1)  # [C, ipc*H*W]
            mu = xc.mean(1)
            v = ((xc - mu[:, None]) ** 2).mean(1)  # biased variance
            per = per + (mu - mean[name][c]).norm() + (v - var[name][c]).norm()
        want = want + (10.0 if li == 0 else 1.0) * per / 2
    torch.testing.assert_close(got, want)


def test_global_bn_loss_matches_running_statistics_with_multiplier():
    m = _bn_model()
    layers = dict(bn_layers(m))
    matcher = BNMatcher(m, "global", first_multiplier=10.0)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    inputs = _captured_inputs(m, x)
    matcher.losses = []
    m(x)
    got = matcher.pop()
    matcher.remove()
    want = 0.0
    for li, (name, bn) in enumerate(layers.items()):
        xi = inputs[name].transpose(0, 1).flatten(1)
        mu, v = xi.mean(1), xi.var(1, unbiased=False)
        term = (mu - bn.running_mean).norm() + (v - bn.running_var).norm()
        want = want + (10.0 if li == 0 else 1.0) * term
    torch.testing.assert_close(got, want)
    assert not torch.allclose(layers[next(iter(layers))].running_mean, layers[next(iter(layers))].running_var)


# --- the barycenter term --------------------------------------------------------------------


def test_feature_matching_forms():
    f = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]])
    a = torch.tensor([[0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    s = torch.tensor([2.0, 2.0, 4.0])
    # relative: mean_i ||f_i - a_i||^2 / s_i = mean(1/2, 5/2, 9/4)
    torch.testing.assert_close(feature_matching(f, a, s, "relative"), torch.tensor((0.5 + 2.5 + 2.25) / 3))
    torch.testing.assert_close(feature_matching(f, a, s, "paper"), torch.tensor(15.0).sqrt())  # ||F - A||_F


def test_ot_pairing_is_the_optimal_within_class_assignment():
    g = torch.Generator().manual_seed(0)
    f, a = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    perm = ot_pairing(f, a, ipc=3)
    for s in (0, 3):
        block = perm[s : s + 3] - s
        assert sorted(block.tolist()) == [0, 1, 2]  # pairs never cross classes
        cost = lambda p, s=s: sum(((f[s + i] - a[s + j]) ** 2).sum() for i, j in enumerate(p))
        best = min(itertools.permutations(range(3)), key=cost)
        assert cost(block.tolist()) == pytest.approx(cost(best))
    # squared distances, not distances or cubes: over these seeds the optima differ
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        f, a = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
        cost = lambda p, f=f, a=a: sum(((f[i] - a[j]) ** 2).sum().item() for i, j in enumerate(p))
        best = min(itertools.permutations(range(5)), key=cost)
        assert cost(ot_pairing(f, a, ipc=5).tolist()) == pytest.approx(cost(best))


def test_feature_matching_names_an_unknown_form():
    with pytest.raises(ValueError, match="unknown feature loss 'l1'"):
        feature_matching(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), "l1")


def test_synthesis_pulls_each_image_to_its_own_atom(teacher, digits, stats, rt):
    cfg = DistillConfig(
        method="wmdd",
        ipc=3,
        iterations=80,
        batch_classes=10,
        r_ce=0,
        r_bn=0,
        r_feat=1.0,
        init="noise",
        crop_scale=(1.0, 1.0),
        jitter=0.0,
        lr=0.1,
    )
    ds = distill(teacher.model, digits, stats, cfg, rt)
    from geodistill.synth.select import select_kmeans

    model = teacher.model.eval()
    with torch.no_grad():
        feats = model.features(ds.images)
    own = 0
    for c in range(10):
        _, atoms, _ = select_kmeans(stats.class_features(c), 3, cfg.seed * 1_000_003 + c)
        d = torch.cdist(feats[ds.labels == c], atoms)
        own += int((d.argmin(1) == torch.arange(3)).sum())
    assert own >= 27  # of 30: each image ends nearest to the atom it was paired with


def _plans(model, digits, stats, cfg):
    """The resolved settings, every class's plan and the normalized box [lo, hi] of a synthesis run."""
    import geodistill.synth.loop as loop
    from geodistill.synth.strategies import get_strategy, resolve

    s = get_strategy(cfg.method)
    res = resolve(cfg, s)
    plans = [loop.plan_class(c, digits, stats, cfg, s, res) for c in range(digits.num_classes)]
    return res, plans, (0 - model.mean) / model.std, (1 - model.mean) / model.std


def _adam_step_in_box(opt, loss, u, lo, hi):
    """One optimizer step on the normalized pixels ``u``, then clamp them to the image of [0, 1]."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        u.copy_(u.clamp(lo, hi))


def _to_pixels(u, model):
    return (u.detach() * model.std + model.mean).clamp(0, 1)


@pytest.mark.parametrize("anneal", [False, True])
def test_synthesis_loop_is_the_documented_composition(teacher, digits, stats, rt, monkeypatch, anneal):
    """A few iterations of the loop against a from-scratch composition of its pieces (each piece
    is tested above): Adam(β 0.5, 0.9) on normalized pixels, cosine LR, r_ce·CE + r_feat·feature
    term (optionally cosine-annealed) + r_bn·per-class BN, clamping to [0, 1] pixels."""
    import math

    import geodistill.synth.loop as loop

    monkeypatch.setattr(loop, "random_resized_crop", lambda x, **kw: x)  # no randomness to replay
    cfg = DistillConfig(
        method="wmdd",
        ipc=2,
        iterations=4,
        batch_classes=10,
        lr=0.05,
        r_ce=0.3,
        r_bn=0.02,
        r_feat=0.5,
        jitter=0.0,
        feat_anneal=anneal,
    )
    got = distill(teacher.model, digits, stats, cfg, rt).images

    model = teacher.model.eval()
    res, plans, lo, hi = _plans(model, digits, stats, cfg)
    u = model.normalize(torch.cat([p["init"] for p in plans])).clamp(lo, hi).requires_grad_(True)
    atoms, scale = torch.cat([p["atoms"] for p in plans]), torch.cat([p["scale"] for p in plans])
    y = torch.arange(10).repeat_interleave(2)
    bn = BNMatcher(model, "class", bn_mean=stats.bn_mean, bn_var=stats.bn_var, first_multiplier=res.first_bn)
    bn.classes = torch.arange(10)
    opt = torch.optim.Adam([u], lr=0.05, betas=(0.5, 0.9))
    for it in range(4):
        cos = 0.5 * (1 + math.cos(math.pi * it / 4))
        opt.param_groups[0]["lr"] = 0.05 * cos
        f = model.features(u, normalized=True)
        feat_w = 0.5 * (cos if anneal else 1.0)
        loss = 0.3 * F.cross_entropy(model.head(f), y) + feat_w * feature_matching(
            f, atoms, scale, "relative"
        )
        loss = loss + 0.02 * bn.pop()
        _adam_step_in_box(opt, loss, u, lo, hi)
    bn.remove()
    ref = _to_pixels(u, model)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
    assert not torch.allclose(got, torch.cat([p["init"] for p in plans]), atol=1e-3)  # it moved


# --- initial images and selection baselines -------------------------------------------------


def test_nearest_distinct_is_the_optimal_one_to_one_match():
    g = torch.Generator().manual_seed(2)
    atoms, feats = torch.randn(3, 2, generator=g), torch.randn(6, 2, generator=g)
    got = nearest_distinct(atoms, feats).tolist()
    assert len(set(got)) == 3
    cost = lambda rows: sum(((atoms[j] - feats[r]) ** 2).sum() for j, r in enumerate(rows))
    best = min(itertools.permutations(range(6), 3), key=cost)
    assert cost(got) == pytest.approx(cost(best))


def test_wmdd_init_and_kmeans_are_the_nearest_real_images(teacher, digits, stats, rt):
    cfg = DistillConfig(method="wmdd", ipc=2, iterations=0)
    init = distill(teacher.model, digits, stats, cfg, rt)
    km = distill(teacher.model, digits, stats, DistillConfig(method="kmeans", ipc=2), rt)
    torch.testing.assert_close(init.images, km.images, atol=1e-6, rtol=0)  # 0 iterations = kmeans
    from geodistill.synth.select import select_kmeans

    for c in (0, 7):
        local, _, _ = select_kmeans(stats.class_features(c), 2, c)
        real = digits.float(digits.x_train[digits.class_indices(c)[local]])
        torch.testing.assert_close(km.images[km.labels == c], real)
        assert km.manifest["train_indices"][c] == digits.class_indices(c)[local].tolist()


def test_herding_greedily_matches_the_mean():
    f = torch.tensor([[0.0, 0.0], [10.0, 0.0], [4.0, 1.0], [6.0, -1.0], [5.0, 0.2]])
    # mean (5, 0.04): the closest point is [5, 0.2]; then the pair whose mean is closest: [4,1]|[6,-1]
    sel = select_herding(f, 3).tolist()
    assert len(sel) == 3 and sel[0] == 4
    mu = f.mean(0)
    for t in range(1, 3):
        prev = f[sel[:t]].sum(0)
        errs = [
            ((mu - (prev + f[i]) / (t + 1)) ** 2).sum() if i not in sel[:t] else float("inf")
            for i in range(5)
        ]
        assert sel[t] == int(torch.tensor(errs).argmin())


def test_kcenter_is_farthest_first_from_the_medoid():
    f = torch.tensor([[0.0], [1.0], [2.0], [9.0], [-6.0]])
    assert select_kcenter(f, 3).tolist() == [1, 3, 4]  # nearest the mean (1.2), then 9, then -6
    # in 2-D, against a from-scratch greedy: start at the point nearest the mean, then repeatedly
    # take the point whose distance to its nearest chosen point is largest
    g = torch.Generator().manual_seed(0)
    f = torch.randn(40, 2, generator=g) * torch.tensor([1.0, 5.0]) + torch.tensor([10.0, -3.0])
    chosen = [int(((f - f.mean(0)) ** 2).sum(1).argmin())]
    for _ in range(5):
        chosen.append(int(torch.cdist(f, f[chosen]).min(1).values.argmax()))
    assert select_kcenter(f, 6).tolist() == chosen


# --- RDED -------------------------------------------------------------------------------------


def test_rded_stitches_patches_row_major():
    from geodistill.synth.rded import stitch

    patches = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 4, 4)
    out = stitch(patches, 2, 8)
    assert out.shape == (2, 1, 8, 8)
    for img in range(2):
        quads = [out[img, 0, :4, :4], out[img, 0, :4, 4:], out[img, 0, 4:, :4], out[img, 0, 4:, 4:]]
        assert [q.unique().item() for q in quads] == [4.0 * img + k for k in range(4)]


def test_rded_stitch_resizes_patches_to_uneven_tiles():
    from torchvision.transforms.functional import resize

    from geodistill.synth.rded import stitch

    g = torch.Generator().manual_seed(0)
    patches = torch.rand(4, 2, 3, 3, generator=g)  # 3x3 patches into a 7-px image: tiles 4 and 3 wide
    out = stitch(patches, 2, 7)
    assert out.shape == (1, 2, 7, 7)
    edges = [0, 4, 7]  # round(i * 7 / 2)
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        tile = out[0, :, edges[i] : edges[i + 1], edges[j] : edges[j + 1]]
        ref = resize(patches[k], [edges[i + 1] - edges[i], edges[j + 1] - edges[j]], antialias=True)
        torch.testing.assert_close(tile, ref, atol=1e-5, rtol=0)


def test_rded_factor_default_follows_image_size():
    from geodistill.synth.rded import rded_factor

    assert rded_factor(DistillConfig(), 32) == 1 and rded_factor(DistillConfig(), 33) == 2
    assert rded_factor(DistillConfig(), 224) == 2 and rded_factor(DistillConfig(rded_factor=3), 32) == 3


def test_rded_is_seeded(teacher, digits, rt):
    cfg = DistillConfig(method="rded", ipc=2, rded_crops=3, rded_candidates=20)
    a, b = (distill(teacher.model, digits, None, cfg, rt) for _ in range(2))
    assert torch.equal(a.images, b.images)
    c = distill(
        teacher.model,
        digits,
        None,
        DistillConfig(method="rded", ipc=2, rded_crops=3, rded_candidates=20, seed=1),
        rt,
    )
    assert not torch.equal(a.images, c.images)
    assert a.manifest == {"method": "rded", "ipc": 2, "seed": 0, "rded_factor": 1} | {
        k: v for k, v in a.manifest.items() if k not in ("method", "ipc", "seed", "rded_factor")
    }


@pytest.mark.parametrize("factor", [1, 2])
def test_rded_keeps_the_teachers_most_confident_crops(teacher, digits, rt, factor):
    cfg = DistillConfig(method="rded", ipc=3, rded_factor=factor, rded_crops=4, rded_candidates=40)
    ds = distill(teacher.model, digits, None, cfg, rt)
    assert ds.images.shape == (30, 1, 8, 8) and ds.ipc == 3 and ds.manifest["rded_factor"] == factor
    from geodistill.data import random_resized_crop
    from geodistill.synth.rded import score_crops

    ref = select_random(digits, 6, seed=1)
    model = teacher.model.eval()
    side = 8 // factor
    # every tile of an output image, scored as RDED scores crops (zero-padded to full size) ...
    tiles = (
        ds.images.unfold(2, side, side)
        .unfold(3, side, side)
        .permute(0, 2, 3, 1, 4, 5)
        .reshape(-1, 1, side, side)
    )
    tile_labels = ds.labels.repeat_interleave(factor * factor)
    # ... against random crops of the same size from random real images of the same classes
    rand = random_resized_crop(
        ref.images,
        scale=(0.08, 1),
        ratio=(1, 1),
        hflip=False,
        size=(side, side),
        generator=torch.Generator().manual_seed(0),
    )
    chosen = torch.cat([score_crops(model, tiles[tile_labels == c], c, 8, rt) for c in range(10)]).mean()
    random = torch.cat([score_crops(model, rand[ref.labels == c], c, 8, rt) for c in range(10)]).mean()
    assert chosen < 0.5 * random


def test_clean_view_feature_term_leaves_bn_statistics_alone(teacher, digits, stats, rt):
    cfg = DistillConfig(method="wmdd", ipc=2, iterations=3, r_feat=1.0, feat_view="clean", feat_anneal=True)
    ds = distill(teacher.model, digits, stats, cfg, rt)
    base = distill(
        teacher.model, digits, stats, DistillConfig(method="wmdd", ipc=2, iterations=3, r_feat=1.0), rt
    )
    assert not torch.equal(ds.images, base.images)
    m = teacher.model.eval()
    matcher = BNMatcher(m, "class", bn_mean=stats.bn_mean, bn_var=stats.bn_var)
    matcher.classes = torch.tensor([0])
    matcher.enabled = False
    m(torch.rand(2, 1, 8, 8))
    assert matcher.losses == []  # a disabled matcher records nothing
    matcher.remove()


def test_config_fields_override_each_method_default_and_empty_ones_fall_back():
    from geodistill.synth.strategies import Resolved, get_strategy, resolve

    s = get_strategy("sre2l")
    assert resolve(DistillConfig(method="sre2l"), s) == Resolved(
        init="noise", first_bn=10.0, augment="rrc", lr=0.25, r_ce=1.0, r_feat=0.0
    )
    cfg = DistillConfig(
        method="sre2l", init="real", first_bn_multiplier=3.0, augment="jitter", lr=0.02, r_ce=0.4, r_feat=2.0
    )
    assert resolve(cfg, s) == Resolved(
        init="real", first_bn=3.0, augment="jitter", lr=0.02, r_ce=0.4, r_feat=2.0
    )
    zeros = DistillConfig(method="wmdd", first_bn_multiplier=0.0, lr=0.0, r_ce=0.0, r_feat=0.0)
    r = resolve(zeros, get_strategy("wmdd"))  # an explicit 0 is a value, not "use the default"
    assert (r.first_bn, r.lr, r.r_ce, r.r_feat) == (0.0, 0.0, 0.0, 0.0)


def test_kmeans_selection_passes_seed_and_barycenter_options(monkeypatch):
    import importlib

    sel = importlib.import_module("geodistill.synth.select")  # the package re-exports a function `select`
    calls = []

    def spy(feats, k, **kw):
        calls.append((k, kw))
        return feats[:k] + 0.1, torch.full((k,), 1 / k)

    monkeypatch.setattr(sel, "wasserstein_barycenter", spy)
    f = torch.arange(12.0).view(6, 2)
    idx, atoms, w = sel.select_kmeans(f, 2, 17, barycenter="sliced", weighted=True)
    assert calls == [(2, dict(weighted=True, method="sliced", seed=17))]
    assert idx.tolist() == [0, 1] and torch.equal(atoms, f[:2] + 0.1)


# --- what each method plans per class -----------------------------------------------------------


def test_which_methods_read_class_statistics():
    from geodistill.synth.loop import needs_stats
    from geodistill.synth.strategies import STRATEGIES

    got = {name: needs_stats(s) for name, s in STRATEGIES.items()}
    assert got == {
        "wmdd": True, "sre2l": False, "rded": False, "random": False,
        "herding": True, "kcenter": True, "kmeans": True,
    }  # fmt: skip


def test_wmdd_plan_is_the_barycenter_its_mass_spread_and_nearest_images(digits, stats):
    import geodistill.synth.loop as loop
    from geodistill.synth.select import select_kmeans
    from geodistill.synth.strategies import get_strategy, resolve

    cfg = DistillConfig(method="wmdd", ipc=3, weighted=True, seed=2)
    s = get_strategy("wmdd")
    plan = loop.plan_class(4, digits, stats, cfg, s, resolve(cfg, s))
    feats = stats.class_features(4)
    local, atoms, w = select_kmeans(feats, 3, 2 * 1_000_003 + 4, weighted=True)
    assert not torch.allclose(w, torch.full((3,), 1 / 3))  # learned masses, not uniform
    torch.testing.assert_close(plan["weights"], w)
    torch.testing.assert_close(plan["atoms"], atoms)
    f = feats.double()
    spread = ((f - f.mean(0)) ** 2).sum(1).mean()  # mean squared distance to the class mean
    torch.testing.assert_close(plan["scale"], spread.float().expand(3))
    torch.testing.assert_close(plan["init"], digits.float(digits.x_train[digits.class_indices(4)[local]]))
    assert "init_normalized" not in plan and 0 <= plan["barycenter_seconds"] < 60


@pytest.mark.parametrize("method, init", [("sre2l", "real"), ("sre2l", "random"), ("wmdd", "random")])
def test_random_real_start_draws_distinct_class_images_per_seed(digits, stats, method, init):
    import geodistill.synth.loop as loop
    from geodistill.synth.strategies import get_strategy, resolve

    s = get_strategy(method)
    plans = []
    for seed in (0, 0, 1):
        cfg = DistillConfig(method=method, ipc=4, init=init, seed=seed)
        plans.append(loop.plan_class(3, digits, stats, cfg, s, resolve(cfg, s)))
    pool = digits.float(digits.x_train[digits.class_indices(3)]).flatten(1)
    for p in plans:
        rows = [int((pool == img.flatten()).all(1).nonzero()[0]) for img in p["init"]]
        assert len(set(rows)) == 4 and "init_normalized" not in p  # distinct images of class 3
    assert torch.equal(plans[0]["init"], plans[1]["init"]) and not torch.equal(
        plans[0]["init"], plans[2]["init"]
    )
    if method == "wmdd":  # not the atoms' nearest images
        nearest = loop.plan_class(
            3,
            digits,
            stats,
            DistillConfig(method="wmdd", ipc=4),
            s,
            resolve(DistillConfig(method="wmdd", ipc=4), s),
        )
        assert not torch.equal(plans[0]["init"], nearest["init"])


def test_noise_start_is_standard_normal_in_normalized_units(teacher, digits, rt):
    import geodistill.synth.loop as loop
    from geodistill.synth.strategies import get_strategy, resolve

    cfg = DistillConfig(method="sre2l", ipc=50, seed=3)
    s = get_strategy("sre2l")
    plan = loop.plan_class(1, digits, None, cfg, s, resolve(cfg, s))
    assert plan["init_normalized"] is True and plan["init"].shape == (50, *digits.image_shape)
    z = plan["init"]
    assert abs(z.mean().item()) < 0.05 and z.std().item() == pytest.approx(1.0, abs=0.05)
    # with no iterations the set is that noise mapped to pixels: mean + std * z, clipped to [0, 1]
    cfg0 = DistillConfig(method="sre2l", ipc=50, seed=3, iterations=0)
    out = distill(teacher.model, digits, None, cfg0, rt)
    m = teacher.model
    expect = (z * m.std.view(1, -1, 1, 1) + m.mean.view(1, -1, 1, 1)).clamp(0, 1)
    torch.testing.assert_close(out.images[out.labels == 1], expect, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cutmix_beta", [0.0, 1.0])
def test_student_training_is_the_documented_composition(teacher, digits, rt, monkeypatch, cutmix_beta):
    """A few steps of the student loop against a from-scratch composition: every epoch a fresh
    permutation cut into ceil(n / b) batches, (CutMix mixing the weights by its area), the loss
    mean_i w_i T² KL(p_teacher ‖ p_student), AdamW with cosine decay to 0 over all steps."""
    import math

    import geodistill.evaluate.student as st
    from geodistill.data import cutmix
    from geodistill.runtime import generator

    monkeypatch.setattr(st, "random_resized_crop", lambda x, **kw: x)  # no crop randomness to replay
    base = select_random(digits, 3, seed=0)
    w = torch.tensor([0.5, 0.3, 0.2] * 10)  # per-class masses, different inside every class
    ds = DistilledSet(base.images, base.labels, w, base.class_names)
    cfg = EvalConfig(epochs=3, batch_size=8, lr=0.01, weight_decay=0.05, temperature=4.0, cutmix=cutmix_beta)
    got, run = st.train_student(ds, teacher.model, digits, cfg, rt, seed=5)

    ref = st.make_student(teacher.model, teacher.model.arch, cfg, 5)
    ref.train()
    g = generator(5)
    images, n, T = ds.images.float(), 30, 4.0
    weights = w * 3  # mass x images in the class
    per_epoch, steps = math.ceil(30 / 8), math.ceil(30 / 8) * 3
    opt = torch.optim.AdamW(ref.parameters(), lr=0.01, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    for _ in range(3):
        for idx in torch.randperm(n, generator=g).tensor_split(per_epoch):
            x, wb = images[idx], weights[idx]
            if cutmix_beta > 0:
                x, perm, lam = cutmix(x, alpha=cutmix_beta, generator=g)
                wb = lam * wb + (1 - lam) * wb[perm]
            with torch.no_grad():
                pt = F.softmax(teacher.model(x) / T, 1)
            log_ps = F.log_softmax(ref(x) / T, 1)
            loss = (wb * T * T * (pt * (pt.log() - log_ps)).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # decayed to 0 at the last step
    for p, q in zip(got.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert (run["steps"], run["epochs"], run["batch_size"], run["seed"]) == (12, 3, 8, 5)
    ref.eval()
    with torch.no_grad():
        pred = ref(digits.float(digits.x_test)).argmax(1)
    assert run["top1"] == pytest.approx((pred == digits.y_test).float().mean().item())
    assert run["split"] == "test" and run["arch"] == teacher.model.arch and run["seconds"] > 0


def test_student_crops_use_the_configured_scale_and_the_datasets_flip_rule(teacher, digits, rt, monkeypatch):
    import geodistill.evaluate.student as st

    calls = []
    monkeypatch.setattr(st, "random_resized_crop", lambda x, **kw: calls.append(kw) or x)
    cfg = EvalConfig(epochs=1, batch_size=10, crop_scale=(0.3, 0.9), cutmix=0)
    for hflip in (False, True):
        digits.hflip = hflip
        try:
            st.train_student(select_random(digits, 1, seed=0), teacher.model, digits, cfg, rt, seed=0)
        finally:
            digits.hflip = False
        assert calls[-1]["scale"] == (0.3, 0.9) and calls[-1]["hflip"] is hflip
        assert isinstance(calls[-1]["generator"], torch.Generator)


def test_sre2l_loop_is_noise_global_bn_times_ten_with_crops_and_jitter(teacher, digits, rt, monkeypatch):
    """SRe2L's composition, from scratch: N(0, 1) start in normalized units, CE + r_bn · global BN
    (first layer x10), crops (flip as the dataset allows) then a roll of up to jitter x side px."""
    import math

    import geodistill.synth.loop as loop
    from geodistill.data.augment import roll_jitter
    from geodistill.runtime import generator

    crops = []
    monkeypatch.setattr(loop, "random_resized_crop", lambda x, **kw: crops.append(kw) or x)
    cfg = DistillConfig(method="sre2l", ipc=2, iterations=3, batch_classes=10, r_bn=0.05, jitter=0.25, seed=1)
    got = distill(teacher.model, digits, None, cfg, rt).images
    assert len(crops) == 3 and all(c["hflip"] is False and c["scale"] == (0.08, 1.0) for c in crops)

    model = teacher.model.eval()
    res, plans, lo, hi = _plans(model, digits, None, cfg)
    u = torch.cat([p["init"] for p in plans]).clamp(lo, hi).requires_grad_(True)  # already normalized
    y = torch.arange(10).repeat_interleave(2)
    bn = BNMatcher(model, "global", first_multiplier=10.0)
    g = generator(1 * 1_000_003 + 7919 * 0 + 1)
    opt = torch.optim.Adam([u], lr=0.25, betas=(0.5, 0.9))
    for it in range(3):
        opt.param_groups[0]["lr"] = 0.25 * 0.5 * (1 + math.cos(math.pi * it / 3))
        ua = roll_jitter(u, 2, generator=g)  # int(0.25 * 8) px
        loss = F.cross_entropy(model(ua, normalized=True), y) + 0.05 * bn.pop()
        _adam_step_in_box(opt, loss, u, lo, hi)
    bn.remove()
    torch.testing.assert_close(got, _to_pixels(u, model), atol=2e-5, rtol=0)


def test_clean_view_ot_paired_paper_form_feature_term(teacher, digits, stats, rt, monkeypatch):
    """The barycenter-term options together: the jittered view feeds CE and BN, the clean images
    feed the feature term (BN hooks off for that forward), re-paired to the atoms by optimal
    assignment every step, in the authors' ||F - A|| form."""
    import math

    import geodistill.synth.loop as loop
    from geodistill.data.augment import roll_jitter
    from geodistill.runtime import generator

    monkeypatch.setattr(
        loop, "random_resized_crop", lambda x, **kw: pytest.fail("augment=jitter crops nothing")
    )
    cfg = DistillConfig(
        method="wmdd", ipc=5, iterations=3, batch_classes=10, r_feat=0.2, r_bn=0.01, augment="jitter",
        jitter=0.25, pairing="ot", feat_view="clean", feat_loss="paper", first_bn_multiplier=2.0,
        init="noise",  # noise: the optimal pairing is not the fixed one
    )  # fmt: skip
    got = distill(teacher.model, digits, stats, cfg, rt).images

    model = teacher.model.eval()
    res, plans, lo, hi = _plans(model, digits, stats, cfg)
    u = torch.cat([p["init"] for p in plans]).clamp(lo, hi).requires_grad_(True)  # already normalized
    atoms, scale = torch.cat([p["atoms"] for p in plans]), torch.cat([p["scale"] for p in plans])
    y = torch.arange(10).repeat_interleave(5)
    bn = BNMatcher(model, "class", bn_mean=stats.bn_mean, bn_var=stats.bn_var, first_multiplier=2.0)
    bn.classes = torch.arange(10)
    g = generator(7919 * 0 + 1)
    opt = torch.optim.Adam([u], lr=res.lr, betas=(0.5, 0.9))
    for it in range(3):
        opt.param_groups[0]["lr"] = res.lr * 0.5 * (1 + math.cos(math.pi * it / 3))
        loss = res.r_ce * F.cross_entropy(model(roll_jitter(u, 2, generator=g), normalized=True), y)
        bn.enabled = False
        f = model.features(u, normalized=True)
        bn.enabled = True
        a = atoms[ot_pairing(f, atoms, 5)]
        if it == 0:
            assert not torch.equal(a, atoms)  # the case exercises the re-pairing
        loss = loss + 0.2 * feature_matching(f, a, scale, "paper") + 0.01 * bn.pop()
        _adam_step_in_box(opt, loss, u, lo, hi)
    bn.remove()
    torch.testing.assert_close(got, _to_pixels(u, model), atol=2e-5, rtol=0)


@pytest.mark.parametrize("method", ["random", "rded", "wmdd", "sre2l"])
def test_manifest_records_config_resolved_settings_teacher_and_timing(teacher, digits, stats, rt, method):
    import time
    from dataclasses import asdict

    from geodistill.synth.strategies import get_strategy, resolve

    meta = {
        "sha256": "abc",
        "spec": {"name": "convnet-tiny"},
        "top1": 0.93,
        "squeeze": {"regularizer": "gradnorm"},
    }
    cfg = DistillConfig(method=method, ipc=2, iterations=2, batch_classes=5, r_feat=0.1, seed=4)
    t0 = time.perf_counter()
    m = distill(teacher.model, digits, stats, cfg, rt, teacher_meta=meta).manifest
    wall = time.perf_counter() - t0
    from geodistill.runtime import device_name

    assert (m["method"], m["ipc"], m["seed"], m["device"]) == (method, 2, 4, device_name(rt.device))
    assert m["config"] == asdict(cfg) and m["resolved"] == asdict(resolve(cfg, get_strategy(method)))
    assert m["teacher"] == {"sha256": "abc", "arch": "convnet-tiny", "top1": 0.93, "regularizer": "gradnorm"}
    assert 0 < m["seconds"] <= wall and "torch" in m["versions"]
    if method in ("random", "rded"):
        assert m["groups"] == []
        extra = {"rded_factor"} if method == "rded" else {"train_indices"}
        assert (
            set(m)
            == {
                "method",
                "ipc",
                "config",
                "resolved",
                "teacher",
                "seconds",
                "groups",
                "seed",
                "versions",
                "device",
            }
            | extra
        )
        return
    assert [gr["classes"] for gr in m["groups"]] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    for gr in m["groups"]:
        if method == "sre2l":  # no barycenter, no feature term
            assert 0 < gr["seconds"] and gr["barycenter_seconds"] == 0.0
            assert set(gr["final_loss"]) == {"ce", "bn"}
            continue
        assert 0 < gr["seconds"] and 0 < gr["barycenter_seconds"]
        assert set(gr["final_loss"]) == {"ce", "feat", "bn"} and all(v > 0 for v in gr["final_loss"].values())
    assert sum(gr["seconds"] + gr["barycenter_seconds"] for gr in m["groups"]) <= m["seconds"]
    if method == "sre2l":
        return
    lines = []
    cfg0 = DistillConfig(method="wmdd", ipc=2, iterations=1, r_feat=0.0)
    before = [
        (p.requires_grad, None if p.grad is None else p.grad.clone()) for p in teacher.model.parameters()
    ]
    ds0 = distill(teacher.model, digits, stats, cfg0, rt, log=lines.append)
    m0 = ds0.manifest
    assert set(m0["groups"][0]["final_loss"]) == {"ce", "bn"}  # no feature term at weight 0
    assert ds0.class_names == digits.class_names and any(ln.startswith("classes 0-9: ce ") for ln in lines)
    for p, (req, grad) in zip(teacher.model.parameters(), before):  # the teacher is left as found
        assert p.requires_grad == req and (p.grad is None if grad is None else torch.equal(p.grad, grad))
    nobn = distill(
        teacher.model, digits, stats, DistillConfig(method="wmdd", ipc=2, iterations=1, r_bn=0.0), rt
    )
    assert set(nobn.manifest["groups"][0]["final_loss"]) == {"ce"}  # no BN term at weight 0
    assert m0["teacher"] == {"sha256": None, "arch": None, "top1": None, "regularizer": None}


@pytest.mark.parametrize("method", ["random", "herding", "kcenter", "kmeans"])
def test_selection_sets_are_the_chosen_real_images_with_their_indices(digits, stats, method):
    import geodistill.synth.loop as loop
    from geodistill.synth.select import SELECTORS, select_kmeans
    from geodistill.synth.strategies import get_strategy

    cfg = DistillConfig(method=method, ipc=3, seed=2, weighted=True)
    ds = loop.select(digits, stats if method != "random" else None, cfg, get_strategy(method))
    assert ds.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert ds.manifest == {
        "method": method,
        "ipc": 3,
        "seed": 2,
        "train_indices": ds.manifest["train_indices"],
    }
    for c in range(10):
        idx = digits.class_indices(c)
        seed = 2 * 1_000_003 + c
        feats = stats.class_features(c) if method != "random" else torch.zeros(len(idx), 1)
        if method == "kmeans":
            local, _, w = select_kmeans(feats, 3, seed, weighted=True)
        else:
            local, w = SELECTORS[method](feats, 3, seed), torch.full((3,), 1 / 3)
        assert ds.manifest["train_indices"][c] == idx[local].tolist()
        torch.testing.assert_close(ds.images[ds.labels == c], digits.float(digits.x_train[idx[local]]))
        torch.testing.assert_close(ds.weights[ds.labels == c], w.float())
    if method == "kmeans":
        assert not torch.allclose(ds.weights, torch.full((30,), 1 / 3))  # learned masses kept
    if method == "random":
        other = loop.select_random(digits, 3, seed=3)
        assert other.manifest["train_indices"] != ds.manifest["train_indices"]
        assert loop.select_random(digits, 3, seed=2).manifest["train_indices"] == ds.manifest["train_indices"]
        with pytest.raises(Exception, match="ipc"):
            loop.select_random(digits, 0, seed=0)


def test_synthesis_checks_its_batch_memory_up_front(teacher, digits, stats, rt, monkeypatch):
    import geodistill.synth.loop as loop

    checks = []
    monkeypatch.setattr(loop, "check_batch_fits", lambda *a, **kw: checks.append((a, kw)) or 0)
    cfg = DistillConfig(method="wmdd", ipc=3, iterations=1, batch_classes=4, max_memory="2GB")
    distill(teacher.model, digits, stats, cfg, rt)
    assert checks == [
        ((teacher.model, digits.image_shape, 12, rt.device, "2GB"),
         dict(what="wmdd synthesis", hint="lower distill.batch_classes (classes optimized together)")),
    ]  # fmt: skip


def test_feature_scale_is_the_class_spread_even_when_tiny(digits, stats):
    import dataclasses

    import geodistill.synth.loop as loop
    from geodistill.synth.strategies import get_strategy, resolve

    small = dataclasses.replace(stats, features=stats.features * 1e-4)
    cfg = DistillConfig(method="wmdd", ipc=2, r_feat=1.0)
    s = get_strategy("wmdd")
    plan = loop.plan_class(0, digits, small, cfg, s, resolve(cfg, s))
    f = small.class_features(0).double()
    spread = ((f - f.mean(0)) ** 2).sum(1).mean()
    assert spread < 1e-3
    torch.testing.assert_close(plan["scale"], spread.float().expand(2))


@pytest.mark.parametrize("factor", [1, 2])
def test_rded_is_the_documented_selection_of_scored_crops(teacher, digits, rt, factor):
    """RDED from scratch: per class, max(candidates, ipc·f²) seeded real images, ``rded_crops``
    square random-resized crops of each (side / f px, no flip), each scored by the teacher's CE
    on the crop zero-padded to full size; every candidate keeps its best crop, the ipc·f² best
    candidates are kept and stitched f x f, row-major; uniform weights 1/ipc."""
    from geodistill.data import random_resized_crop
    from geodistill.runtime import generator

    cfg = DistillConfig(method="rded", ipc=2, rded_factor=factor, rded_crops=3, rded_candidates=3, seed=1)
    ds = distill(teacher.model, digits, None, cfg, rt)
    model = teacher.model.eval()
    s = 8 // factor
    for c in range(10):
        g = generator(1 * 1_000_003 + c)
        idx = digits.class_indices(c)
        n_cand = max(3, 2 * factor**2)  # 3 or 8: never fewer candidates than patches
        cand = idx[torch.randperm(len(idx), generator=g)[:n_cand]]
        x = digits.float(digits.x_train[cand])
        crops = [
            random_resized_crop(x, scale=(0.08, 1.0), ratio=(1.0, 1.0), hflip=False, size=(s, s), generator=g)
            for _ in range(3)
        ]
        best = []
        for i in range(n_cand):
            pad = (8 - s) // 2, 8 - s - (8 - s) // 2
            scored = []
            for m in range(3):
                padded = F.pad(crops[m][i : i + 1], (pad[0], pad[1], pad[0], pad[1]))
                with torch.no_grad():
                    scored.append(F.cross_entropy(model(padded), torch.tensor([c])).item())
            best.append((min(scored), crops[int(torch.tensor(scored).argmin())][i]))
        keep = [p for _, p in sorted(best, key=lambda t: t[0])[: 2 * factor**2]]
        want = []
        for img in range(2):
            tiles = keep[img * factor**2 : (img + 1) * factor**2]
            rows = [torch.cat(tiles[r * factor : (r + 1) * factor], dim=2) for r in range(factor)]
            want.append(torch.cat(rows, dim=1))
        torch.testing.assert_close(ds.images[ds.labels == c], torch.stack(want), atol=1e-6, rtol=0)
    assert ds.weights.tolist() == [0.5] * 20 and ds.manifest["rded_factor"] == factor


def test_stitch_downscales_oversized_patches_with_antialiasing():
    from geodistill.synth.rded import stitch

    g = torch.Generator().manual_seed(0)
    patches = torch.rand(4, 2, 7, 7, generator=g)  # 7 px patches into 4 px tiles of an 8 px image
    out = stitch(patches, 2, 8)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        ref = F.interpolate(
            patches[k : k + 1], size=(4, 4), mode="bilinear", antialias=True, align_corners=False
        )
        torch.testing.assert_close(out[0, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4], ref[0])


def test_barycenter_solver_option_reaches_selection_and_plans(digits, stats):
    import geodistill.synth.loop as loop
    from geodistill.synth.select import select_kmeans
    from geodistill.synth.strategies import get_strategy, resolve

    cfg = DistillConfig(method="kmeans", ipc=2, seed=1, barycenter="sliced")
    ds = loop.select(digits, stats, cfg, get_strategy("kmeans"))
    local, _, _ = select_kmeans(stats.class_features(0), 2, 1 * 1_000_003, barycenter="sliced")
    assert ds.manifest["train_indices"][0] == digits.class_indices(0)[local].tolist()
    _, exact, _ = select_kmeans(stats.class_features(0), 2, 1 * 1_000_003)
    wcfg = DistillConfig(method="wmdd", ipc=2, seed=1, barycenter="sliced")
    s = get_strategy("wmdd")
    plan = loop.plan_class(0, digits, stats, wcfg, s, resolve(wcfg, s))
    _, atoms, _ = select_kmeans(stats.class_features(0), 2, 1 * 1_000_003, barycenter="sliced")
    torch.testing.assert_close(plan["atoms"], atoms)
    assert not torch.allclose(atoms, exact)  # the option changes the atoms
