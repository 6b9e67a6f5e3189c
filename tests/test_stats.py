import pytest
import torch

from geodistill.data.classdata import ClassData
from geodistill.models import create_model
from geodistill.stats import ClassStats, bn_layers, compute_class_stats


def test_bn_moments_are_exact_per_class_across_batches(rt):
    g = torch.Generator().manual_seed(0)
    # class 1 is brighter and more spread; batch size 7 splits classes unevenly across batches
    x = torch.rand(40, 1, 8, 8, generator=g)
    y = torch.arange(40) % 2
    x[y == 1] = x[y == 1] * 3 - 1
    x = x.clamp(0, 1)
    data = ClassData("t", ["a", "b"], x, y, x[:4], y[:4])
    m = create_model("convnet-tiny", num_classes=2, in_chans=1, image_size=8, seed=0).eval()
    st = compute_class_stats(m, data, rt, batch_size=7)
    captured = {}
    name, layer = bn_layers(m)[0]
    h = layer.register_forward_hook(lambda mod, inp, out: captured.update(x=inp[0].clone()))
    with torch.no_grad():
        m(x)
    h.remove()
    inp = captured["x"].double()
    for c in (0, 1):
        xc = inp[y == c]
        torch.testing.assert_close(st.bn_mean[name][c].double(), xc.mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            st.bn_var[name][c].double(), xc.var((0, 2, 3), unbiased=False), atol=1e-5, rtol=1e-5
        )
    with torch.no_grad():
        feats = m.features(x)
    torch.testing.assert_close(st.features, feats)
    assert st.class_features(1).shape == (20, feats.shape[1])


def test_stats_save_load(tmp_path, stats):
    stats.save(tmp_path / "s.safetensors")
    s2 = ClassStats.load(tmp_path / "s.safetensors")
    assert s2.class_names == stats.class_names and list(s2.bn_mean) == list(stats.bn_mean)
    assert torch.equal(s2.features, stats.features)


def test_saved_stats_are_reused_only_for_the_same_teacher(tmp_path, teacher, digits, rt, monkeypatch):
    from geodistill import pipeline

    path = tmp_path / "s.safetensors"
    pipeline.stats_stage(teacher.model, {"sha256": "aaa"}, digits, rt, path)
    calls = []
    real = pipeline.compute_class_stats
    monkeypatch.setattr(pipeline, "compute_class_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    pipeline.stats_stage(teacher.model, {"sha256": "aaa"}, digits, rt, path, resume=True)
    assert calls == []
    st = pipeline.stats_stage(teacher.model, {"sha256": "bbb"}, digits, rt, path, resume=True)
    assert calls == [1] and st.teacher_sha256 == "bbb"


def test_stats_round_trip_every_tensor_exactly(tmp_path, stats):
    stats.save(tmp_path / "s.safetensors")
    s2 = ClassStats.load(tmp_path / "s.safetensors")
    assert torch.equal(s2.labels, stats.labels) and s2.labels.dtype == torch.long
    assert s2.teacher_sha256 == stats.teacher_sha256
    assert list(s2.bn_var) == list(stats.bn_var)
    for name in stats.bn_mean:
        assert torch.equal(s2.bn_mean[name], stats.bn_mean[name])
        assert torch.equal(s2.bn_var[name], stats.bn_var[name])


def _edit(t, meta, what):
    """One defect per case, applied to a copy of valid statistics."""
    layer = meta["bn_layers"][0]
    k = len(meta["class_names"])
    if what == "negative variance":
        t[f"bn_var/{layer}"][0, 0] = -1.0
    elif what == "inf feature":
        t["features"][0, 0] = float("inf")
    elif what == "no class names":
        meta.pop("class_names")
    elif what == "empty class names":
        meta["class_names"] = []
    elif what == "no layer list":
        meta.pop("bn_layers")
    elif what == "features 1-D":
        t["features"] = t["features"][:, 0].contiguous()
    elif what == "label = K":
        t["labels"][0] = k
    elif what == "label = -1":
        t["labels"][0] = -1
    elif what == "float labels":
        t["labels"] = t["labels"].float()
    elif what == "labels 2-D":
        t["labels"] = t["labels"][:, None].contiguous()
    elif what == "one label short":
        t["labels"] = t["labels"][1:].contiguous()
    elif what == "mean 1-D":
        t[f"bn_mean/{layer}"] = t[f"bn_mean/{layer}"][0].contiguous()
    elif what == "mean one class short":
        t[f"bn_mean/{layer}"] = t[f"bn_mean/{layer}"][1:].contiguous()
    elif what == "var 1-D":
        t[f"bn_var/{layer}"] = t[f"bn_var/{layer}"][0].contiguous()
    elif what == "var one class short":
        t[f"bn_var/{layer}"] = t[f"bn_var/{layer}"][1:].contiguous()
    elif what == "mean/var widths differ":
        t[f"bn_var/{layer}"] = t[f"bn_var/{layer}"][:, 1:].contiguous()
    elif what == "missing var":
        t.pop(f"bn_var/{layer}")
    return layer


@pytest.mark.parametrize(
    "what, message",
    [
        ("negative variance", "tensor 'bn_var/{layer}' has value -1 below the allowed minimum 0"),
        ("inf feature", "tensor 'features' contains NaN or Inf"),
        ("no class names", "not a geodistill class-statistics file"),
        ("empty class names", "not a geodistill class-statistics file"),
        ("no layer list", "not a geodistill class-statistics file"),
        ("features 1-D", "tensor 'features' has shape .*expected 2 dimensions"),
        ("label = K", "tensor 'labels' has value 10 above the allowed maximum 9"),
        ("label = -1", "tensor 'labels' has value -1 below the allowed minimum 0"),
        ("float labels", "tensor 'labels' has dtype torch.float32; expected an integer"),
        ("labels 2-D", "tensor 'labels' has shape .*expected 1 dimensions"),
        ("one label short", "tensor 'labels' has \\d+ rows; expected \\d+"),
        ("mean 1-D", "tensor 'bn_mean/{layer}' has shape .*expected 2 dimensions"),
        ("mean one class short", "tensor 'bn_mean/{layer}' has 9 rows; expected 10"),
        ("var 1-D", "tensor 'bn_var/{layer}' has shape .*expected 2 dimensions"),
        ("var one class short", "tensor 'bn_var/{layer}' has 9 rows; expected 10"),
        ("mean/var widths differ", "bn_mean/{layer} and bn_var/{layer} have different shapes"),
        ("missing var", "missing tensor 'bn_var/{layer}'"),
    ],
)
def test_bad_class_stats_are_refused_naming_file_and_tensor(tmp_path, stats, what, message):
    import re

    from geodistill.files import GeodistillError, load_tensors, save_tensors

    p = tmp_path / "stats.safetensors"
    stats.save(p)
    t, meta = load_tensors(p)
    layer = _edit(t, meta, what)
    save_tensors(p, t, meta)
    with pytest.raises(GeodistillError) as err:
        ClassStats.load(p)
    assert str(err.value).startswith(f"{p}: "), err.value
    assert re.search(message.format(layer=re.escape(layer)), str(err.value)), err.value
