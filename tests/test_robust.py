import pytest
import torch

pytest.importorskip("torchattacks")

from geodistill.evaluate import robust_accuracy, sanity_flags  # noqa: E402
from geodistill.evaluate.robust import eps_label, fixed_subset  # noqa: E402


def test_robust_eval_on_tiny_teacher_is_fast_and_sane(teacher, digits, rt):
    idx = fixed_subset(len(digits.y_test), 48, seed=0)
    x, y = digits.float(digits.x_test[idx]), digits.y_test[idx]
    scores = robust_accuracy(teacher.model, x, y, ["pgd100", "autoattack", "square", "cw", "mim"],
                             [2 / 255, 16 / 255], rt, num_classes=10)
    assert set(scores) == {"clean"} | {f"{a}@{e}" for a in ("pgd100", "autoattack", "square", "cw", "mim")
                                       for e in ("2/255", "16/255")}
    assert sanity_flags(scores) == []
    # a large radius must actually hurt a plainly trained model
    assert scores["pgd100@16/255"] < scores["clean"] - 0.1
    assert all(0 <= v <= 1 for v in scores.values())


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
