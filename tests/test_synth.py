import pytest
import torch

from geodistill.config import DistillConfig
from geodistill.distilled import DistilledSet
from geodistill.files import GeodistillError
from geodistill.models import create_model
from geodistill.stats import bn_layers
from geodistill.synth import distill, select_random
from geodistill.synth.losses import BNMatcher

FAST = dict(ipc=2, iterations=15, batch_classes=4)


def test_per_class_bn_loss_matches_direct_computation():
    m = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, seed=0).eval()
    name = bn_layers(m)[0][0]
    c = 16
    mean = {n: torch.randn(3, c) for n, _ in bn_layers(m)}
    var = {n: torch.rand(3, c) for n, _ in bn_layers(m)}
    matcher = BNMatcher(m, "class", bn_mean=mean, bn_var=var, first_multiplier=1.0)
    matcher.classes = torch.tensor([2, 0])
    x = torch.rand(4, 1, 8, 8)  # class 2 = images 0,1; class 0 = images 2,3
    captured = {}
    h = dict(bn_layers(m))[name].register_forward_hook(lambda mod, i, o: captured.update(x=i[0].clone()))
    m(x)
    h.remove()
    losses = matcher.losses[:]
    matcher.remove()
    inp = captured["x"]
    expect = 0
    for k, cls in enumerate([2, 0]):
        xc = inp[2 * k : 2 * k + 2]
        expect += (xc.mean((0, 2, 3)) - mean[name][cls]).norm() + (
            xc.var((0, 2, 3), unbiased=False) - var[name][cls]
        ).norm()
    torch.testing.assert_close(losses[0], expect / 2)


def test_wmdd_distill_shapes_weights_and_manifest(teacher, digits, stats, rt):
    cfg = DistillConfig(method="wmdd", **FAST)
    ds = distill(teacher.model, digits, stats, cfg, rt, teacher_meta={"sha256": "abc"})
    assert ds.images.shape == (20, 1, 8, 8) and ds.images.min() >= 0 and ds.images.max() <= 1
    assert torch.equal(ds.labels, torch.arange(10).repeat_interleave(2))
    for c in range(10):
        assert ds.weights[ds.labels == c].sum().item() == pytest.approx(1.0)
    assert ds.manifest["teacher"]["sha256"] == "abc" and ds.manifest["method"] == "wmdd"
    assert len(ds.manifest["groups"]) == 3  # 10 classes in batches of 4
    assert "python" in ds.manifest["versions"]


def test_synthesis_lowers_its_loss(teacher, digits, stats, rt):
    def final(iterations):
        cfg = DistillConfig(
            method="wmdd", init="noise", lr=0.25, r_feat=1.0, **{**FAST, "iterations": iterations}
        )
        ds = distill(teacher.model, digits, stats, cfg, rt)
        return sum(g["final_loss"]["feat"] + g["final_loss"]["ce"] for g in ds.manifest["groups"])

    assert final(40) < 0.7 * final(1)


def test_same_seed_bit_identical(teacher, digits, stats, rt):
    cfg = DistillConfig(method="wmdd", **FAST)
    a = distill(teacher.model, digits, stats, cfg, rt)
    b = distill(teacher.model, digits, stats, cfg, rt)
    assert torch.equal(a.images, b.images)


def test_completed_groups_are_not_recomputed(teacher, digits, stats, rt):
    cfg = DistillConfig(method="sre2l", **FAST)
    seen = []
    full = distill(teacher.model, digits, stats, cfg, rt, on_group=lambda i, g: seen.append((i, g)))
    assert [i for i, _ in seen] == [0, 1, 2]
    again = []
    resumed = distill(
        teacher.model,
        digits,
        stats,
        cfg,
        rt,
        completed={0: seen[0][1], 2: seen[2][1]},
        on_group=lambda i, g: again.append(i),
    )
    assert again == [1]
    assert torch.equal(full.images, resumed.images)


def test_random_baseline_uses_real_images(digits):
    ds = select_random(digits, 3, seed=0)
    assert ds.images.shape == (30, 1, 8, 8)
    real = digits.float(digits.x_train)
    for img, c in zip(ds.images, ds.labels):
        assert ((real[digits.y_train == c] - img).abs().flatten(1).max(1).values == 0).any()


def test_ipc_larger_than_class_is_refused_early(teacher, digits, stats, rt):
    with pytest.raises(GeodistillError, match="larger than class"):
        distill(teacher.model, digits, stats, DistillConfig(ipc=10_000), rt)


def test_unknown_method(teacher, digits, stats, rt):
    with pytest.raises(GeodistillError, match="unknown method"):
        distill(teacher.model, digits, stats, DistillConfig(method="magic"), rt)


def test_distilled_set_save_load_and_png(tmp_path, digits):
    ds = select_random(digits, 2, seed=0)
    ds.class_names = ["../evil", *ds.class_names[1:]]
    ds.save(tmp_path / "out")
    assert not (tmp_path / "evil").exists()
    pngs = list((tmp_path / "out" / "images").rglob("*.png"))
    assert len(pngs) == 20 and all(tmp_path / "out" in p.parents for p in pngs)
    back = DistilledSet.load(tmp_path / "out")
    assert torch.equal(back.images, ds.images) and back.class_names == ds.class_names
