import pytest
import torch

from geodistill.files import GeodistillError
from geodistill.models import create_model, list_models, load_checkpoint, save_checkpoint


@pytest.mark.parametrize(
    "name,size,chans",
    [
        ("convnet", 32, 3),
        ("convnet-tiny", 8, 1),
        ("convnet3", 32, 3),
        ("resnet18", 32, 3),
        ("mobilenet_v2", 32, 1),
    ],
)
def test_registry_models_give_logits_and_features(name, size, chans):
    m = create_model(name, num_classes=7, in_chans=chans, image_size=size).eval()
    x = torch.rand(2, chans, size, size)
    with torch.no_grad():
        f = m.features(x)
        out = m(x)
    assert out.shape == (2, 7) and f.ndim == 2
    torch.testing.assert_close(m.head(f), out)


def test_normalization_lives_inside_the_model():
    m = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, mean=[0.5], std=[0.25])
    assert m.mean.item() == 0.5 and m.std.item() == 0.25
    m2 = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, mean=[0.0], std=[1.0])
    m2.load_state_dict({**m.state_dict(), "mean": torch.zeros(1, 1, 1, 1), "std": torch.ones(1, 1, 1, 1)})
    x = torch.rand(2, 1, 8, 8)
    m.eval()
    m2.eval()
    torch.testing.assert_close(m(x), m2((x - 0.5) / 0.25))


def test_seed_makes_init_reproducible():
    a = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, seed=3)
    b = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_convnet_default_depth_follows_image_size():
    assert len(create_model("convnet", num_classes=2, image_size=64).body) == 4 * 4 + 1


def test_timm_passthrough():
    pytest.importorskip("timm")
    m = create_model("timm/resnet10t", num_classes=4, image_size=32).eval()
    assert m(torch.rand(1, 3, 32, 32)).shape == (1, 4)


def test_unknown_model():
    with pytest.raises(GeodistillError, match="unknown model"):
        create_model("vgg99", num_classes=2)
    assert "convnet" in list_models()


def test_checkpoint_roundtrip_and_mismatches(tmp_path):
    m = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, seed=0)
    p = tmp_path / "t.safetensors"
    sha = save_checkpoint(p, m, {"class_names": ["a", "b", "c"], "top1": 0.5})
    m2, meta = load_checkpoint(p, class_names=["a", "b", "c"], arch="convnet-tiny", image_shape=(1, 8, 8))
    assert meta["sha256"] == sha and meta["top1"] == 0.5
    x = torch.rand(2, 1, 8, 8)
    m.eval()
    torch.testing.assert_close(m(x), m2(x))
    with pytest.raises(GeodistillError, match="classes do not match"):
        load_checkpoint(p, class_names=["a", "b"])
    with pytest.raises(GeodistillError, match="class order differs"):
        load_checkpoint(p, class_names=["a", "c", "b"])
    with pytest.raises(GeodistillError, match="architecture is 'convnet-tiny'"):
        load_checkpoint(p, arch="resnet18")
    with pytest.raises(GeodistillError, match="3x32px"):
        load_checkpoint(p, image_shape=(3, 32, 32))


def test_pickle_checkpoints_are_refused(tmp_path):
    p = tmp_path / "evil.pt"
    p.write_bytes(b"whatever")
    with pytest.raises(GeodistillError, match="never unpickles|only as .safetensors"):
        load_checkpoint(p)
    q = tmp_path / "evil.safetensors"
    q.write_bytes(b"\x80\x04garbage")
    with pytest.raises(GeodistillError, match="not a readable safetensors"):
        load_checkpoint(q)


def test_pretrained_offline_is_a_clear_error(monkeypatch):
    import torchvision.models as tvm

    def boom(**kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm, "resnet18", boom)
    with pytest.raises(GeodistillError, match="could not load torchvision ImageNet weights"):
        create_model("resnet18", num_classes=10, pretrained=True)
