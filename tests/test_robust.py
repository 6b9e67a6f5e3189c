import pytest
import torch

pytest.importorskip("torchattacks")

from geodistill.evaluate import robust_accuracy, sanity_flags  # noqa: E402
from geodistill.evaluate.robust import eps_label, fixed_subset  # noqa: E402


def test_robust_eval_on_tiny_teacher_is_fast_and_sane(teacher, digits, rt):
    idx = fixed_subset(len(digits.y_test), 32, seed=0)
    x, y = digits.float(digits.x_test[idx]), digits.y_test[idx]
    attacks = ["pgd100", "autoattack", "square", "cw", "mim"]
    scores = robust_accuracy(teacher.model, x, y, attacks, [8 / 255], rt, num_classes=10)
    assert set(scores) == {"clean"} | {f"{a}@8/255" for a in attacks}
    assert sanity_flags(scores) == []
    assert all(0 <= v <= 1 for v in scores.values())
    # the radius must actually hurt a plainly trained model (the attacks do something)
    assert scores["pgd100@8/255"] < scores["clean"]
    assert scores["autoattack@8/255"] <= scores["pgd100@8/255"]


def test_sanity_flags_catch_masking_and_failures():
    ok = {"clean": 0.9, "pgd100@2/255": 0.5, "autoattack@2/255": 0.45}
    assert sanity_flags(ok) == []
    flags = sanity_flags({"clean": 0.9, "pgd100@2/255": 0.5, "autoattack@2/255": 0.6, "square@2/255": 0.95})
    assert any("gradient masking" in f for f in flags)
    assert any("square@2/255" in f and "exceeds clean" in f for f in flags)


def test_fixed_subset_is_seeded_and_sorted():
    a, b = fixed_subset(1000, 100, 3), fixed_subset(1000, 100, 3)
    assert torch.equal(a, b) and len(a) == 100 and torch.equal(a, a.sort().values)
    assert len(fixed_subset(50, 0, 0)) == 50


def test_eps_label():
    assert eps_label(2 / 255) == "2/255" and eps_label(0.1) == "0.1"
