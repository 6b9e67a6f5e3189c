"""Attacks: our PGD and MIM equal torchattacks' step for step, every bounded attack uses and
respects its radius and hurts a plain model, the sanity flags fire, and PGD needs no extra."""

import sys

import pytest
import torch

from geodistill.evaluate import robust_accuracy, sanity_flags
from geodistill.evaluate.robust import build_attack, eps_label, fixed_subset, mim, pgd

EPS = 16 / 255


@pytest.fixture(scope="module")
def batch(digits):
    idx = fixed_subset(len(digits.y_test), 48, seed=0)
    return digits.float(digits.x_test[idx]), digits.y_test[idx]


def test_own_attacks_need_no_torchattacks(teacher, batch, rt, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import fails as if not installed
    x, y = batch
    scores = robust_accuracy(teacher.model, x, y, ["pgd100", "mim", "cw-linf"], [EPS], rt, num_classes=10)
    assert set(scores) == {"clean", "pgd100@16/255", "mim@16/255", "cw-linf@16/255"}
    from geodistill.files import GeodistillError

    with pytest.raises(GeodistillError, match="geodistill\\[robust\\]"):
        robust_accuracy(teacher.model, x, y, ["square"], [EPS], rt, num_classes=10)


@pytest.mark.parametrize("name", ["pgd100", "mim", "cw-linf", "square", "autoattack"])
def test_bounded_attacks_reach_but_never_exceed_eps_and_hurt(teacher, batch, name):
    if name in ("square", "autoattack"):
        pytest.importorskip("torchattacks")
    model = teacher.model.eval()
    x, y = batch
    torch.manual_seed(0)
    adv = build_attack(name, model, EPS, 10, seed=0)(x, y)
    d = (adv - x).abs().amax(dim=(1, 2, 3))
    assert d.max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean()
        robust = (model(adv).argmax(1) == y).float().mean()
    attacked = d > 0
    assert attacked.any() and (d[attacked] >= 0.99 * EPS).float().mean() > 0.5  # the radius is used
    assert robust < clean - 0.1  # at 16/255 every real attack breaks a plain 8x8 model


def test_pgd_matches_torchattacks_step_for_step(teacher, batch):
    ta = pytest.importorskip("torchattacks")
    model = teacher.model.eval()
    x, y = batch
    torch.manual_seed(5)
    ours = pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=10)
    torch.manual_seed(5)
    theirs = ta.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=True)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_mim_matches_torchattacks_mifgsm(teacher, batch):
    ta = pytest.importorskip("torchattacks")
    model = teacher.model.eval()
    x, y = batch
    ours = mim(model, x, y, eps=EPS, alpha=EPS / 5, steps=7, decay=0.9)
    theirs = ta.MIFGSM(model, eps=EPS, alpha=EPS / 5, steps=7, decay=0.9)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # three channels with different gradient scales: the L1 normalization spans all of C x H x W
    rgb = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    with torch.no_grad():
        rgb[1].weight.mul_(torch.tensor([1.0, 10.0, 100.0]).repeat_interleave(16))
    xc, yc = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3
    ours = mim(rgb, xc, yc, eps=EPS, alpha=EPS / 5, steps=7, decay=0.9)
    torch.testing.assert_close(
        ours, ta.MIFGSM(rgb, eps=EPS, alpha=EPS / 5, steps=7, decay=0.9)(xc, yc), rtol=0, atol=1e-6
    )
    # the default decay is MI-FGSM's 1.0
    torch.testing.assert_close(
        mim(rgb, xc, yc, eps=EPS, alpha=EPS / 5, steps=7),
        ta.MIFGSM(rgb, eps=EPS, alpha=EPS / 5, steps=7, decay=1.0)(xc, yc),
        rtol=0,
        atol=1e-6,
    )


def test_cw_l2_is_unbounded_and_run_once(teacher, batch, rt):
    pytest.importorskip("torchattacks")
    x, y = batch
    scores = robust_accuracy(teacher.model, x, y, ["cw", "pgd100"], [1 / 255, 2 / 255], rt, num_classes=10)
    assert set(scores) == {"clean", "cw", "pgd100@1/255", "pgd100@2/255"}
    assert scores["cw"] <= scores["clean"]


def test_sanity_flags_catch_masking_and_failures():
    ok = {"clean": 0.9, "pgd100@2/255": 0.5, "autoattack@2/255": 0.45, "cw": 0.85}
    assert sanity_flags(ok) == []
    flags = sanity_flags({"clean": 0.9, "pgd100@2/255": 0.5, "autoattack@2/255": 0.6, "square@2/255": 0.95})
    assert any("gradient masking" in f for f in flags)
    assert any("square@2/255" in f and "exceeds clean" in f for f in flags)
    assert sanity_flags({"clean": 0.5, "cw": 0.6}) != []


def test_cw_margin_is_the_best_other_logit_minus_the_true_one():
    from geodistill.evaluate.robust import _margin

    logits = torch.tensor([[1.0, 5.0, 2.0, 0.0], [3.0, 0.0, 4.0, -1.0]])
    y = torch.tensor([1, 2])  # the last class is nobody's label: the one-hot width must be 4
    torch.testing.assert_close(_margin(logits, y), torch.tensor([2.0 - 5.0, 3.0 - 4.0]))


class _FirstPixel(torch.nn.Module):
    """Class 1 if the first pixel exceeds 0.5, else class 0: its robustness is known by hand."""

    def forward(self, x):
        v = x.flatten(1)[:, 0]
        return torch.stack([0.5 - v, v - 0.5], 1)


def test_robust_accuracy_counts_by_hand_across_batches(rt, monkeypatch):
    import geodistill.evaluate.robust as rob

    # first pixels: correct with margins 0.3, 0.3, 0.01, 0.2, 0.05, 0.4; two misclassified points
    v = torch.tensor([0.8, 0.2, 0.51, 0.3, 0.55, 0.9, 0.4, 0.7])
    y = torch.tensor([1, 0, 1, 0, 1, 1, 1, 0])
    x = v.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    seen = []

    def toward_boundary(model, eps):  # moves the first pixel by eps toward 0.5: a perfect attack
        def attack(xb, yb):
            seen.append(len(yb))
            return (xb + eps * (1 - 2 * yb.float()).view(-1, 1, 1, 1)).clamp(0, 1)

        return attack

    monkeypatch.setattr(rob, "build_attack", lambda name, model, eps, k, seed: toward_boundary(model, eps))
    lines = []
    out = robust_accuracy(
        _FirstPixel(), x, y, ["pgd100"], [0.1, 0.25], rt, num_classes=2, batch_size=3, log=lines.append
    )
    assert [ln.split(" (")[0].strip() for ln in lines] == ["pgd100@0.1: 0.5000", "pgd100@0.25: 0.3750"]
    assert all("6 images attacked" in ln for ln in lines)
    assert out["clean"] == pytest.approx(6 / 8)
    # eps 0.1 flips margins 0.01 and 0.05; eps 0.25 also flips 0.2; misclassified count as errors
    assert out["pgd100@0.1"] == pytest.approx(4 / 8) and out["pgd100@0.25"] == pytest.approx(3 / 8)
    assert seen == [3, 3, 3, 3]  # only the six correct points are attacked, in batches of 3
    # `only` runs just the attacks whose keys it names; each is seeded alone, so its score is the same
    seen.clear()
    part = robust_accuracy(
        _FirstPixel(), x, y, ["pgd100"], [0.1, 0.25], rt, num_classes=2, only={"pgd100@0.25"}
    )
    assert part == {"clean": out["clean"], "pgd100@0.25": out["pgd100@0.25"]} and seen == [6]

    monkeypatch.setattr(rob, "build_attack", lambda *a: lambda xb, yb: (xb + 0.2).clamp(0, 1))
    with pytest.raises(RuntimeError, match="left the eps=0.1 ball"):
        robust_accuracy(_FirstPixel(), x, y, ["pgd100"], [0.1], rt, num_classes=2)
    monkeypatch.setattr(rob, "build_attack", lambda *a: lambda xb, yb: xb + 0.2)  # inside eps, above 1
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        robust_accuracy(_FirstPixel(), x, y, ["pgd100"], [0.5], rt, num_classes=2)
    monkeypatch.setattr(rob, "build_attack", lambda *a: lambda xb, yb: xb - 0.25)  # inside eps, below 0
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        robust_accuracy(_FirstPixel(), x, y, ["pgd100"], [0.5], rt, num_classes=2)


def test_attacks_are_built_with_their_published_settings(monkeypatch):
    import geodistill.evaluate.robust as rob

    seen = {}
    monkeypatch.setattr(rob, "pgd", lambda model, x, y, **kw: seen.setdefault("pgd", []).append(kw))
    monkeypatch.setattr(rob, "mim", lambda model, x, y, **kw: seen.setdefault("mim", []).append(kw))
    for name in ("pgd100", "cw-linf", "mim"):
        build_attack(name, None, 8 / 255, 10)(None, None)
    e = 8 / 255
    assert seen["pgd"] == [
        dict(eps=e, alpha=e / 4, steps=100),
        dict(eps=e, alpha=e / 4, steps=100, loss="cw"),
    ]
    assert seen["mim"] == [dict(eps=e, alpha=e, steps=20, decay=1.0)]


def test_sanity_flags_boundaries():
    assert sanity_flags({"clean": 0.5, "pgd100@2/255": 0.5, "autoattack@2/255": 0.5}) == []  # equal is fine
    assert sanity_flags({"clean": 0.5, "pgd100@2/255": 0.5, "autoattack@2/255": 0.5 + 1e-6}) != []
    assert sanity_flags({"clean": 0.5, "pgd100@2/255": 0.5 + 1e-6}) != []
    assert sanity_flags({"pgd100@2/255": 0.9, "square@2/255": 0.95}) == []  # square may beat pgd
    flags = sanity_flags({"clean": 0.5, "square@1/255": 0.6, "mim@1/255": 0.7}, where="wmdd")
    assert len(flags) == 2 and all(f.startswith("wmdd: ") for f in flags)


def test_parse_eps_forms():
    from geodistill.evaluate.robust import parse_eps

    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps("0.03") == pytest.approx(0.03)
    assert parse_eps("16/255") == pytest.approx(16 / 255)


def test_fixed_subset_is_seeded_and_sorted():
    a, b = fixed_subset(1000, 100, 3), fixed_subset(1000, 100, 3)
    assert torch.equal(a, b) and len(a) == 100 and torch.equal(a, a.sort().values)
    assert not torch.equal(a, fixed_subset(1000, 100, 4))
    assert len(fixed_subset(50, 0, 0)) == 50 and len(fixed_subset(50, 50, 0)) == 50
    assert len(fixed_subset(50, 1, 0)) == 1 and len(fixed_subset(50, 49, 0)) == 49


def test_eps_label():
    assert eps_label(2 / 255) == "2/255" and eps_label(0.1) == "0.1"


def test_attack_at_its_own_radius(teacher, batch, rt):
    x, y = batch
    scores = robust_accuracy(
        teacher.model, x, y, ["pgd100", "mim@4/255"], [1 / 255, 2 / 255], rt, num_classes=10
    )
    assert set(scores) == {"clean", "pgd100@1/255", "pgd100@2/255", "mim@4/255"}


class _TinyRGB(torch.nn.Module):
    """A small nonlinear 3-channel net whose input gradients change direction between steps."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 4 * 4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            self.conv.weight[:, 2] *= 30.0  # the blue channel's gradients are much larger

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def _mim_reference(model, x, y, eps, alpha, steps, decay, dims):
    """MI-FGSM written out: normalize each gradient by its mean |g| over ``dims``."""
    g_sum = torch.zeros_like(x)
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(adv), y)
        (g,) = torch.autograd.grad(loss, adv)
        g_sum = decay * g_sum + g / g.abs().mean(dim=dims, keepdim=True)
        adv = torch.min(torch.max(adv.detach() + alpha * g_sum.sign(), x - eps), x + eps).clamp(0, 1)
    return adv


def test_mim_normalizes_each_gradient_over_the_whole_image():
    model = _TinyRGB()
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(16, 3, 4, 4, generator=g), torch.arange(16) % 3
    args = dict(eps=0.3, alpha=0.05, steps=6, decay=1.0)
    per_image = _mim_reference(model, x, y, dims=(1, 2, 3), **args)
    per_channel = _mim_reference(model, x, y, dims=(2, 3), **args)
    assert (per_image - per_channel).abs().max() > 0.01  # the case tells the two apart
    torch.testing.assert_close(mim(model, x, y, **args), per_image, rtol=0, atol=1e-6)


def test_pgd_with_cw_loss_ascends_the_summed_margin():
    from geodistill.evaluate.robust import _margin

    model = _TinyRGB()
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(16, 3, 4, 4, generator=g), torch.arange(16) % 3
    eps, alpha = 0.2, 0.07

    def reference(objective):
        adv = x.clone()
        for _ in range(3):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(model(adv)), adv)
            adv = (x + (adv.detach() + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        return adv

    cw = reference(lambda logits: _margin(logits, y).sum())
    ce = reference(lambda logits: torch.nn.functional.cross_entropy(logits, y))
    assert (cw - ce).abs().max() > 0.01
    got = pgd(model, x, y, eps=eps, alpha=alpha, steps=3, loss="cw", random_start=False)
    torch.testing.assert_close(got, cw, rtol=0, atol=1e-6)
    got = pgd(model, x, y, eps=eps, alpha=alpha, steps=3, random_start=False)
    torch.testing.assert_close(got, ce, rtol=0, atol=1e-6)


@pytest.mark.parametrize("attack", ["pgd", "mim"])
def test_pixels_without_gradient_are_not_moved(attack):
    # _FirstPixel reads only the first pixel: every other pixel has an exactly zero gradient
    x = torch.full((3, 1, 2, 2), 0.5)
    x[:, 0, 0, 0] = torch.tensor([0.7, 0.3, 0.6])
    y = torch.tensor([1, 0, 1])
    kw = dict(eps=0.1, alpha=0.04, steps=2)
    adv = (
        pgd(_FirstPixel(), x, y, random_start=False, **kw)
        if attack == "pgd"
        else mim(_FirstPixel(), x, y, **kw)
    )
    assert torch.equal(adv.flatten(1)[:, 1:], x.flatten(1)[:, 1:])
    torch.testing.assert_close(adv[:, 0, 0, 0], torch.tensor([0.62, 0.38, 0.52]))  # two steps toward 0.5


def test_robust_accuracy_passes_classes_and_seed_and_keeps_the_order_asked(rt, monkeypatch):
    import geodistill.evaluate.robust as rob

    calls = []

    def spy(name, model, eps, k, seed):
        calls.append((name, eps, k, seed))
        return lambda xb, yb: xb

    monkeypatch.setattr(rob, "build_attack", spy)
    x, y = torch.full((1, 1, 2, 2), 0.9), torch.tensor([1])  # a single image, classified correctly
    out = robust_accuracy(
        _FirstPixel(),
        x,
        y,
        ["mim", "pgd100@1/255", "cw-linf"],
        [2 / 255, 1 / 255],
        rt,
        num_classes=7,
        seed=11,
    )
    assert list(out) == [
        "clean", "mim@2/255", "mim@1/255", "pgd100@1/255", "cw-linf@2/255", "cw-linf@1/255",
    ]  # fmt: skip
    assert all(v == 1.0 for v in out.values())  # one image of one: not divided by two
    assert [(n, k, s) for n, _, k, s in calls] == [
        (n, 7, 11) for n in ["mim", "mim", "pgd100", "cw-linf", "cw-linf"]
    ]


def test_sanity_flags_read_every_entry_in_any_order():
    scores = {"clean": 0.5, "square": 0.6, "pgd100@1/255": 0.3, "autoattack@1/255": 0.4, "mim@1/255": 0.7}
    flags = sanity_flags(scores)
    assert len(flags) == 3
    assert flags[0].startswith("square accuracy 0.6000 exceeds clean accuracy 0.5000")
    assert flags[1].startswith("autoattack@1/255 accuracy 0.4000 exceeds pgd100@1/255 0.3000")
    assert flags[2].startswith("mim@1/255 accuracy 0.7000 exceeds clean")
    assert sanity_flags(dict(reversed(scores.items()))) == [flags[2], flags[1], flags[0]]


def test_torchattacks_attacks_are_built_with_the_reported_settings(monkeypatch):
    import types

    import geodistill.evaluate.robust as rob

    made = []
    record = lambda name: lambda model, **kw: made.append((name, model, kw)) or name
    fake = types.SimpleNamespace(AutoAttack=record("aa"), Square=record("sq"), CW=record("cw"))
    monkeypatch.setattr(rob, "_torchattacks", lambda: fake)
    m = object()
    assert build_attack("autoattack", m, 2 / 255, 7, seed=3) == "aa"
    assert build_attack("square", m, 4 / 255, 7, seed=5) == "sq"
    assert build_attack("cw", m, 0.0, 7, seed=5) == "cw"
    assert made == [
        ("aa", m, dict(norm="Linf", eps=2 / 255, version="standard", n_classes=7, seed=3)),
        ("sq", m, dict(norm="Linf", eps=4 / 255, n_queries=5000, n_restarts=1, p_init=0.8, seed=5)),
        ("cw", m, dict(c=1e-4, kappa=0, steps=50, lr=0.01)),
    ]
    from geodistill.evaluate.robust import ATTACK_CONFIG

    assert "5000 queries, p_init 0.8, 1 restart" in ATTACK_CONFIG["square"]  # the report says what ran
    assert "c = 1e-4, κ = 0, 50 steps, lr 0.01" in ATTACK_CONFIG["cw"]
    with pytest.raises(ValueError, match="unknown attack 'fgsm'"):
        build_attack("fgsm", m, 0.1, 7)


def test_select_random_is_a_seeded_permutation_prefix():
    from geodistill.synth.select import select_random

    got = select_random(torch.zeros(20, 3), 5, 11)
    assert got.tolist() == torch.randperm(20, generator=torch.Generator().manual_seed(11))[:5].tolist()


def test_attack_versions_name_torchattacks_when_installed(monkeypatch):
    import types

    from geodistill.evaluate.robust import attack_versions

    monkeypatch.setitem(sys.modules, "torchattacks", types.SimpleNamespace(__version__="9.9"))
    assert attack_versions() == {"torchattacks": "9.9"}
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import fails as if not installed
    assert attack_versions() == {}


def test_attack_keys_expand_names_radii_and_unbounded_attacks_once():
    from geodistill.evaluate.robust import attack_jobs, attack_keys

    eps = [1 / 255, 2 / 255]
    keys = attack_keys(["pgd100", "autoattack@1/255", "cw", "pgd100@2/255", "cw"], eps)
    assert keys == ["pgd100@1/255", "pgd100@2/255", "autoattack@1/255", "cw"]
    assert attack_jobs(["mim@0.03"], eps) == [("mim", 0.03)] and attack_keys(["mim@0.03"], eps) == [
        "mim@0.03"
    ]
    assert attack_keys([], eps) == []


def test_a_model_no_attack_can_move_is_not_flagged(rt, monkeypatch):
    import geodistill.evaluate.robust as rob

    # 3 of 7 correct: 3/7 has no exact float32 form, so clean must be counted like the robust scores
    v = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.4])
    y = torch.tensor([1, 1, 1, 1, 1, 1, 1])
    x = v.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    monkeypatch.setattr(rob, "build_attack", lambda *a: lambda xb, yb: xb)  # changes nothing
    out = robust_accuracy(_FirstPixel(), x, y, ["pgd100"], [0.1], rt, num_classes=2)
    assert out == {"clean": 3 / 7, "pgd100@0.1": 3 / 7} and sanity_flags(out) == []
