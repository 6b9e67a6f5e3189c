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
