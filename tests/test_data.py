import numpy as np
import pytest
import torch
from PIL import Image

from geodistill.data import cutmix, load_dataset, random_resized_crop, shift_crop
from geodistill.data.augment import train_augment
from geodistill.data.classdata import ClassData
from geodistill.files import GeodistillError


def _folder(root, classes=("cat", "dog"), n=3, size=8, test="test", mode="RGB"):
    for split in ("train", test):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.full((size, size, 3), 40 * i + (100 if c == "dog" else 0), np.uint8)
                Image.fromarray(arr).convert(mode).save(d / f"{i}.png")
    return root


def test_digits_split_and_shape():
    d = load_dataset("digits", image_size=8)
    assert d.num_classes == 10 and d.image_shape == (1, 8, 8)
    assert len(d.y_train) + len(d.y_test) == 1797
    assert d.x_train.dtype == torch.uint8 and not d.hflip
    assert min(d.class_counts()) >= 100


def test_folder_roundtrip_and_class_order(tmp_path):
    d = load_dataset(f"folder:{_folder(tmp_path)}")
    assert d.class_names == ["cat", "dog"]
    assert d.image_shape == (3, 8, 8) and len(d.y_train) == 6 and len(d.y_test) == 6
    # pixel values survive losslessly
    assert d.x_train[d.y_train == 1].float().mean() > d.x_train[d.y_train == 0].float().mean()


def test_folder_val_split_and_resize(tmp_path):
    d = load_dataset(f"folder:{_folder(tmp_path, test='val', size=10)}", image_size=6)
    assert d.image_shape == (3, 6, 6)


@pytest.mark.parametrize("problem", ["no_test", "missing_class", "empty", "unreadable", "size"])
def test_folder_errors_name_the_file(tmp_path, problem):
    root = _folder(tmp_path)
    expect = {
        "no_test": "no val/ or test/",
        "missing_class": "only in train",
        "empty": "empty class folder",
        "unreadable": "bad.png",
        "size": "odd.png",
    }[problem]
    if problem == "no_test":
        import shutil

        shutil.rmtree(root / "test")
    elif problem == "missing_class":
        (root / "train" / "emu").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "emu" / "0.png")
    elif problem == "empty":
        (root / "train" / "emu").mkdir()
        (root / "test" / "emu").mkdir()
    elif problem == "unreadable":
        (root / "train" / "cat" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    else:
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "train" / "dog" / "odd.png")
    with pytest.raises(GeodistillError, match=expect):
        load_dataset(f"folder:{root}")


def test_skip_bad_images_records_them(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "cat" / "bad.png").write_bytes(b"not an image")
    d = load_dataset(f"folder:{root}", skip_bad_images=True)
    assert len(d.y_train) == 6 and len(d.skipped) == 1 and "bad.png" in d.skipped[0]


def test_grayscale_mixed_into_rgb_dataset_is_converted(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "train" / "dog" / "gray.png")
    d = load_dataset(f"folder:{root}")
    assert d.image_shape == (3, 8, 8) and len(d.y_train) == 7


def _npz(path, **over):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(20) % 4,
        x_test=rng.integers(0, 255, (8, 8, 8, 3), dtype=np.uint8),
        y_test=np.arange(8) % 4,
    )
    arrays.update(over)
    np.savez(path, **arrays)
    return path


def test_npz_nhwc_and_class_names(tmp_path):
    p = _npz(tmp_path / "d.npz", class_names=np.array(["a", "b", "c", "d"]))
    d = load_dataset(f"npz:{p}")
    assert d.image_shape == (3, 8, 8) and d.class_names == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "over,match",
    [
        (dict(y_test=np.array([0, 1, 2, 9, 0, 1, 2, 3])), "label 9 out of range"),
        (dict(x_train=np.full((20, 8, 8, 3), np.nan, np.float32)), "NaN"),
        (dict(x_train=np.full((20, 8, 8, 3), 3.0, np.float32)), r"\[0, 1\]"),
        (dict(y_train=np.arange(20) % 3, class_names=np.array(["a", "b", "c", "d"])), "'d' has no training"),
    ],
)
def test_npz_bad_values(tmp_path, over, match):
    with pytest.raises(GeodistillError, match=match):
        load_dataset(f"npz:{_npz(tmp_path / 'd.npz', **over)}")


def test_npz_missing_key(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 4, 4)))
    with pytest.raises(GeodistillError, match="missing arrays"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_torchvision_absent_is_a_clear_error(tmp_path):
    with pytest.raises(GeodistillError, match="never downloads"):
        load_dataset(f"cifar10:{tmp_path}")


def test_unknown_spec():
    with pytest.raises(GeodistillError, match="unknown dataset kind"):
        load_dataset("imagenet:/x")


def test_check_ipc_names_the_class():
    d = load_dataset("digits", image_size=8)
    with pytest.raises(GeodistillError, match="ipc=500 is larger than class"):
        d.check_ipc(500)


def test_classdata_save_load(tmp_path, digits):
    digits.save(tmp_path / "d.safetensors")
    d2 = ClassData.load(tmp_path / "d.safetensors")
    assert d2.class_names == digits.class_names and torch.equal(d2.x_test, digits.x_test)
    assert d2.hflip == digits.hflip


def test_augmentations_are_seeded_differentiable_and_in_range():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    a = random_resized_crop(x, generator=torch.Generator().manual_seed(0))
    b = random_resized_crop(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # full-scale crop without flip is the identity
    same = random_resized_crop(x, scale=(1, 1), ratio=(1, 1), hflip=False)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)


def test_shift_crop_shifts_by_whole_pixels():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    y = shift_crop(x, pad=2, hflip=False, generator=torch.Generator().manual_seed(3))
    # every non-zero output pixel is an input pixel value (integer shift, no interpolation)
    vals = set(x.flatten().tolist())
    assert all(v in vals for v in y.flatten().tolist())


def _shift(x: torch.Tensor, dx: int, dy: int, flip: bool) -> torch.Tensor:
    """Independent reference: (flip, then) translate by whole pixels with zero fill."""
    x = x.flip(-1) if flip else x
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        ..., max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


@pytest.mark.parametrize("hflip", [False, True])
def test_shift_crop_draws_every_whole_pixel_shift_up_to_pad(hflip):
    base = torch.arange(1.0, 81.0).view(1, 1, 8, 10)  # distinct values, H != W
    n, pad = 300, 2
    y = shift_crop(base.expand(n, 1, 8, 10), pad=pad, hflip=hflip, generator=torch.Generator().manual_seed(0))
    seen = set()
    for i in range(n):
        match = [
            (dx, dy, f)
            for dx in range(-pad, pad + 1)
            for dy in range(-pad, pad + 1)
            for f in ((False, True) if hflip else (False,))
            if torch.allclose(y[i], _shift(base, dx, dy, f)[0], atol=1e-4)
        ]
        assert len(match) == 1, (i, match)
        seen.add(match[0])
    assert len(seen) == (2 * pad + 1) ** 2 * (2 if hflip else 1)  # all shifts, both signs, flips


def test_roll_jitter_rolls_the_whole_batch_by_up_to_max_shift():
    from geodistill.data.augment import roll_jitter

    x = torch.arange(2 * 1 * 6 * 7.0).view(2, 1, 6, 7)
    assert roll_jitter(x, 0) is x
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        out = roll_jitter(x, 2, generator=g)
        match = [
            (dy, dx)
            for dy in range(3)
            for dx in range(3)
            if torch.equal(out, torch.roll(x, (dy, dx), (2, 3)))
        ]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == {(dy, dx) for dy in range(3) for dx in range(3)}  # 0..max_shift on both axes
    assert any(not torch.equal(roll_jitter(x, 1, generator=g), x) for _ in range(20))


def test_train_augment_dispatches_with_the_documented_settings():
    x = torch.rand(6, 3, 16, 16)
    g = lambda: torch.Generator().manual_seed(5)
    torch.testing.assert_close(
        train_augment(x, hflip=True, generator=g()), shift_crop(x, pad=2, hflip=True, generator=g())
    )  # pad = side // 8
    torch.testing.assert_close(
        train_augment(x, hflip=False, generator=g(), kind="rrc", scale=(0.5, 1.0)),
        random_resized_crop(x, scale=(0.5, 1.0), hflip=False, generator=g()),
    )
    assert train_augment(x, hflip=True, kind="none") is x
    with pytest.raises(ValueError, match="unknown augmentation 'cutout'"):
        train_augment(x, hflip=True, kind="cutout")


def test_cutmix_lambda_matches_pasted_area():
    x = torch.zeros(4, 1, 8, 8)
    x[2:] = 1
    out, perm, lam = cutmix(x, generator=torch.Generator().manual_seed(1))
    for i in range(4):
        frac_own = (out[i] == x[i]).float().mean().item()
        if x[i].max() != x[perm[i]].max():
            assert frac_own == pytest.approx(lam)


def _asym(n, c, h, w, seed=0):
    """Distinct, asymmetric uint8 images: every value depends on (image, channel, row, column)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
def test_npz_pixels_and_layout_are_exact(tmp_path, layout):
    chw = _asym(12, 1 if layout == "NHW" else 3, 5, 7)  # H != W
    arr = {"NHWC": chw.transpose(0, 2, 3, 1), "NCHW": chw, "NHW": chw[:, 0]}[layout]
    np.savez(
        tmp_path / "d.npz", x_train=arr, y_train=np.arange(12) % 3, x_test=arr[:6], y_test=np.arange(6) % 3
    )
    d = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert d.x_train.dtype == torch.uint8 and tuple(d.x_train.shape) == chw.shape
    assert np.array_equal(d.x_train.numpy(), chw)
    assert d.y_train.tolist() == (np.arange(12) % 3).tolist()
    # uint8 -> float in [0, 1]: exactly value / 255
    torch.testing.assert_close(d.float(d.x_train[:2]), torch.from_numpy(chw[:2]).float() / 255)
    assert d.float(d.x_train).max() == pytest.approx(chw.max() / 255)


def test_npz_float_images_are_kept(tmp_path):
    x = _asym(6, 3, 4, 6).astype(np.float32) / 255
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x[:2], y_test=np.arange(2))
    d = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert np.array_equal(d.float(d.x_train).numpy(), x)


def test_folder_pixels_and_channel_order_are_exact(tmp_path):
    imgs = _asym(4, 3, 6, 9, seed=1)  # [N, C, H, W], H != W
    for split in ("train", "test"):
        for k, name in enumerate(["a", "b"]):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(imgs[2 * k + i].transpose(1, 2, 0), "RGB").save(
                    tmp_path / split / name / f"{i}.png"
                )
    d = load_dataset(f"folder:{tmp_path}")
    assert tuple(d.x_train.shape) == (4, 3, 6, 9)
    assert np.array_equal(d.x_train.numpy(), imgs) and d.y_train.tolist() == [0, 0, 1, 1]


def _write_idx(path, arr):
    import gzip  # noqa: F401  (torchvision reads the raw files)

    magic = {3: 0x0803, 1: 0x0801}[arr.ndim]
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_torchvision_mnist_on_disk_pixels_are_exact(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x = _asym(16, 1, 28, 28, seed=2)[:, 0]
    y = np.arange(16) % 10
    _write_idx(raw / "train-images-idx3-ubyte", x[:10])  # train and test differ in size and content
    _write_idx(raw / "train-labels-idx1-ubyte", y[:10])
    _write_idx(raw / "t10k-images-idx3-ubyte", x[10:])
    _write_idx(raw / "t10k-labels-idx1-ubyte", y[10:])
    d = load_dataset(f"mnist:{tmp_path}")
    assert tuple(d.x_train.shape) == (10, 1, 28, 28) and np.array_equal(d.x_train[:, 0].numpy(), x[:10])
    assert tuple(d.x_test.shape) == (6, 1, 28, 28) and np.array_equal(d.x_test[:, 0].numpy(), x[10:])
    assert d.y_train.tolist() == y[:10].tolist() and d.y_test.tolist() == y[10:].tolist()
    assert d.y_train.dtype == torch.long and d.hflip is False and d.name == "mnist"


def test_torchvision_color_datasets_are_read_nhwc_to_nchw_without_download(monkeypatch):
    import torchvision.datasets as tvd

    calls = []
    data = {True: _asym(5, 3, 4, 6, seed=3), False: _asym(3, 3, 4, 6, seed=4)}  # NCHW, H != W

    class FakeCIFAR:  # torchvision's layout: .data NHWC uint8, .targets a list, .classes
        def __init__(self, root, *, train, download):
            calls.append((root, train, download))
            self.data = data[train].transpose(0, 2, 3, 1).copy()
            self.targets = [int(i) % 2 for i in range(len(self.data))]
            self.classes = ["cat", "dog"]

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR)
    d = load_dataset("cifar10:/somewhere")
    assert calls == [("/somewhere", True, False), ("/somewhere", False, False)]
    assert np.array_equal(d.x_train.numpy(), data[True]) and np.array_equal(d.x_test.numpy(), data[False])
    assert d.x_train.is_contiguous() and d.y_train.dtype == torch.long and d.y_test.tolist() == [0, 1, 0]
    assert d.class_names == ["cat", "dog"] and d.hflip is True and d.name == "cifar10"


def test_digits_pixels_split_and_defaults_are_pinned():
    from sklearn.datasets import load_digits as sk_digits

    from geodistill.data.sources import load_digits

    d = load_digits(image_size=8)  # the raw 8x8 images, 0..16 scaled to 0..255
    raw = sk_digits()
    scaled = np.round(raw.images * 255 / 16).astype(np.uint8)
    assert scaled.max() == 255
    both = torch.cat([d.x_train, d.x_test])[:, 0].numpy()
    assert sorted(map(bytes, both)) == sorted(map(bytes, scaled))  # every image once, exact values
    assert len(d.y_test) == 360 and d.name == "digits" and d.hflip is False
    counts = np.bincount(raw.target)
    assert np.all(np.abs(np.bincount(d.y_test.numpy()) - 0.2 * counts) <= 1)  # stratified
    assert d.y_test[:12].tolist() == [7, 6, 3, 7, 7, 3, 2, 8, 9, 3, 2, 6]  # the demo's fixed split
    assert load_digits().image_shape == (1, 16, 16)


def test_validation_split_is_class_balanced_seeded_and_disjoint():
    full = load_dataset("digits", image_size=8)
    d = load_dataset("digits", image_size=8, val_fraction=0.1, val_seed=3)
    assert len(d.y_train) + len(d.y_val) == len(full.y_train) and torch.equal(d.x_test, full.x_test)
    counts = torch.bincount(d.y_val, minlength=10)
    assert counts.tolist() == [int(n * 0.1) for n in full.class_counts()]
    key = lambda x: {bytes(t.numpy().tobytes()) for t in x}
    assert key(d.x_val).isdisjoint(key(d.x_train))
    again = load_dataset("digits", image_size=8, val_fraction=0.1, val_seed=3)
    assert torch.equal(again.x_val, d.x_val)
    other = load_dataset("digits", image_size=8, val_fraction=0.1, val_seed=4)
    assert not torch.equal(other.x_val, d.x_val)
    assert d.summary()["val_split"] == {"fraction": 0.1, "seed": 3}
    with pytest.raises(GeodistillError, match="no validation split"):
        full.split("val")


def test_resize_is_antialiased_bilinear_rounded_for_uint8_and_clipped():
    import torchvision.transforms.v2.functional as TF

    from geodistill.data.sources import _resize_tensor

    g = torch.Generator().manual_seed(0)
    x8 = torch.randint(0, 256, (2, 3, 12, 9), generator=g, dtype=torch.uint8)
    x8[0, 0, :6] = 0  # flat dark and bright regions: the clipping bounds are reached
    x8[1, 2, 6:] = 255
    out = _resize_tensor(x8, 5)
    ref = TF.resize(x8.float(), [5, 5], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 5, 5)
    assert torch.equal(out, ref.round().clamp(0, 255).to(torch.uint8))
    assert out.min() == 0 and out.max() == 255
    up = _resize_tensor(x8, 20)  # upsampling follows the same rule
    ref = TF.resize(x8.float(), [20, 20], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    assert torch.equal(up, ref.round().clamp(0, 255).to(torch.uint8))
    xf = x8.float() / 255
    outf = _resize_tensor(xf, 5)
    assert outf.dtype == torch.float32 and outf.min() == 0 and outf.max() == 1
    ref = TF.resize(xf, [5, 5], interpolation=TF.InterpolationMode.BILINEAR, antialias=True).clamp(0, 1)
    torch.testing.assert_close(outf, ref)
    # only an image that already has the size on both sides is returned as it is
    same = torch.rand(2, 5, 5, 5, generator=g)
    assert _resize_tensor(same, 5) is same
    for shape in [(2, 5, 5, 7), (2, 5, 7, 5), (2, 3, 5, 7)]:
        assert _resize_tensor(torch.rand(shape, generator=g), 5).shape == (2, shape[1], 5, 5)


def test_image_size_resizes_npz_and_torchvision_sources(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    x = _asym(4, 3, 6, 6, seed=5)
    np.savez(
        tmp_path / "d.npz", x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x[:2], y_test=np.array([0, 1])
    )
    d = load_dataset(f"npz:{tmp_path / 'd.npz'}", image_size=4)
    assert d.x_train.shape == (4, 3, 4, 4) and d.x_test.shape == (2, 3, 4, 4)
    assert load_dataset(f"npz:{tmp_path / 'd.npz'}").x_train.shape == (4, 3, 6, 6)  # no size: as stored

    class FakeCIFAR:
        def __init__(self, root, *, train, download):
            self.data, self.targets, self.classes = x.transpose(0, 2, 3, 1).copy(), [0, 1, 0, 1], ["a", "b"]

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR)
    d = load_dataset("cifar10:/x", image_size=3)
    assert d.x_train.shape == (4, 3, 3, 3) and d.x_test.shape == (4, 3, 3, 3)
    assert load_dataset("digits").image_shape == (1, 16, 16)


def test_npz_never_unpickles_objects(tmp_path):
    p = tmp_path / "evil.npz"
    objs = np.array([{"a": 1}] * 2, dtype=object)
    np.savez(p, x_train=objs, y_train=np.array([0, 1]), x_test=objs, y_test=np.array([0, 1]))
    with pytest.raises(GeodistillError, match="not a readable .npz|allow_pickle"):
        load_dataset(f"npz:{p}")


def test_folder_cache_is_keyed_by_files_and_options(tmp_path, monkeypatch):
    import geodistill.data.sources as src

    root = _folder(tmp_path / "pets")
    cache = tmp_path / "cache"
    first = load_dataset(f"folder:{root}", cache_dir=cache)
    files = list(cache.glob("pets-*.safetensors"))
    assert len(files) == 1 and len(files[0].stem.split("-")[1]) == 16
    monkeypatch.setattr(src, "_read_image", lambda *a: pytest.fail("decoded although cached"))
    again = load_dataset(f"folder:{root}", cache_dir=cache)
    assert torch.equal(again.x_train, first.x_train) and again.class_names == first.class_names
    monkeypatch.undo()
    load_dataset(f"folder:{root}", cache_dir=cache, image_size=4)  # another option: another entry
    arr = np.full((8, 8, 3), 77, np.uint8)
    Image.fromarray(arr).save(root / "train" / "cat" / "0.png")  # an edited file: another entry
    changed = load_dataset(f"folder:{root}", cache_dir=cache)
    assert len(list(cache.glob("pets-*.safetensors"))) == 3
    assert not torch.equal(changed.x_train, first.x_train)


def test_sixteen_bit_grayscale_images_keep_their_high_byte(tmp_path):
    root = tmp_path / "g"
    vals = {"a": 256 * 10 + 3, "b": 256 * 200 + 100}
    for split in ("train", "test"):
        for c, v in vals.items():
            (root / split / c).mkdir(parents=True)
            img = np.full((4, 5), v, np.uint16)
            img[0, 0] = 256 * 255 + 255
            Image.fromarray(img).save(root / split / c / "0.png")
    d = load_dataset(f"folder:{root}")
    assert d.image_shape == (1, 4, 5)
    for c, v in enumerate(vals.values()):
        img = d.x_train[d.y_train == c][0, 0]
        assert img[0, 0] == 255 and (img.flatten()[1:] == v // 256).all()


def _tiny(**kw):
    g = torch.Generator().manual_seed(0)
    base = dict(
        name="tiny",
        class_names=["a", "b", "c"],
        x_train=torch.rand(9, 2, 3, 4, generator=g),
        y_train=torch.arange(9) % 3,
        x_test=torch.rand(3, 2, 3, 4, generator=g),
        y_test=torch.arange(3),
    )
    return ClassData(**(base | kw))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(
                class_names=["a"],
                y_train=torch.zeros(9, dtype=torch.long),
                y_test=torch.zeros(3, dtype=torch.long),
            ),
            "dataset 'tiny': needs at least 2 classes, got 1",
        ),
        (dict(class_names=["a", "b", "a"]), "dataset 'tiny': duplicate class names"),
        (
            dict(y_train=torch.arange(8) % 3),
            r"dataset 'tiny' train: images \(9, 2, 3, 4\) and labels \(8,\) do not match",
        ),
        (
            dict(x_test=torch.rand(3, 2, 3)),
            r"dataset 'tiny' test: images \(3, 2, 3\) and labels \(3,\) do not match",
        ),
        (
            dict(x_test=torch.rand(3, 2, 4, 4)),
            r"dataset 'tiny': test images are \(2, 4, 4\), train are \(2, 3, 4\)",
        ),
        (dict(y_test=torch.tensor([0, 1, 3])), "dataset 'tiny' test: label 3 out of range for 3 classes"),
        (
            dict(y_train=torch.tensor([0, 1, 2] * 2 + [0, 1, -1])),
            "dataset 'tiny' train: label -1 out of range",
        ),
        (
            dict(x_test=torch.full((3, 2, 3, 4), 1.5)),
            r"dataset 'tiny' test: float images must lie in \[0, 1\], found \[1.5, 1.5\]",
        ),
        (
            dict(x_test=torch.full((3, 2, 3, 4), -0.25)),
            r"dataset .tiny. test: float images .*found \[-0.25, -0.25\]",
        ),
        (dict(x_test=torch.full((3, 2, 3, 4), float("nan"))), "dataset 'tiny' test: images contain NaN/Inf"),
        (dict(y_train=torch.tensor([0, 1] * 4 + [0])), "dataset 'tiny': class 'c' has no training images"),
    ],
)
def test_dataset_validation_names_the_split_and_the_problem(change, message):
    with pytest.raises(GeodistillError, match=f"^{message}"):
        _tiny(**change)


def test_validation_split_is_checked_like_the_others():
    d = _tiny().carve_val(1 / 3, seed=0)
    d.y_val = d.y_val.clone()
    d.y_val[0] = 3
    with pytest.raises(GeodistillError, match="^dataset 'tiny' val: label 3 out of range"):
        d.validate()


def test_carve_val_keeps_name_flip_and_skipped_and_holds_out_at_least_one():
    d = _tiny(hflip=False, skipped=["x.png: bad"])
    v = d.carve_val(0.1, seed=0)  # 10 % of 3 images per class rounds to 0: one is held out anyway
    assert (v.name, v.hflip, v.skipped, v.class_names) == ("tiny", False, ["x.png: bad"], ["a", "b", "c"])
    assert len(v.y_val) == 3 and len(v.y_train) == 6
    assert v.skipped is not d.skipped
    with pytest.raises(GeodistillError, match="class 'a' has 3 training images, too few to hold out 100%"):
        d.carve_val(1.0, seed=0)


def test_channel_stats_are_exact_over_all_training_images():
    d = _tiny(x_train=torch.rand(9, 2, 3, 4, generator=torch.Generator().manual_seed(1)) * 0.5)
    mean, std = d.channel_stats()
    torch.testing.assert_close(torch.tensor(mean), d.x_train.mean((0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std), d.x_train.std((0, 2, 3)))  # below 1: not clipped
    flat = _tiny(x_train=torch.full((9, 2, 3, 4), 0.5))
    assert flat.channel_stats()[1] == pytest.approx([1e-3, 1e-3])


def test_dataset_cache_round_trip_keeps_every_field(tmp_path):
    d = _tiny(hflip=False, skipped=["x.png: bad"]).carve_val(1 / 3, seed=2)
    d.save(tmp_path / "d.safetensors")
    d2 = ClassData.load(tmp_path / "d.safetensors")
    assert d2.summary() == d.summary() and d2.summary()["name"] == "tiny"
    assert (d2.hflip, d2.skipped) == (False, ["x.png: bad"])
    for k in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val"):
        assert torch.equal(getattr(d2, k), getattr(d, k)), k
    from geodistill.files import load_tensors, save_tensors

    t, meta = load_tensors(tmp_path / "d.safetensors")
    save_tensors(tmp_path / "e.safetensors", {k: v for k, v in t.items() if k != "y_test"}, meta)
    with pytest.raises(GeodistillError, match=r"not a geodistill dataset cache \(missing \['y_test'\]\)"):
        ClassData.load(tmp_path / "e.safetensors")
    save_tensors(tmp_path / "f.safetensors", t, {k: v for k, v in meta.items() if k != "class_names"})
    with pytest.raises(GeodistillError, match=r"not a geodistill dataset cache \(missing class_names\)"):
        ClassData.load(tmp_path / "f.safetensors")


def test_splits_float_conversion_indices_counts_and_ipc_bounds():
    d = _tiny(y_train=torch.tensor([2, 0, 2, 1, 2, 0, 1, 2, 0]))
    assert d.split("train")[0] is d.x_train and d.split("test")[1] is d.y_test
    with pytest.raises(
        GeodistillError, match="^dataset 'tiny' has no validation split; set data.val_fraction > 0"
    ):
        d.split("val")
    v = d.carve_val(1 / 3, seed=0)
    assert v.split("val")[0] is v.x_val and v.split("val")[1] is v.y_val
    with pytest.raises(GeodistillError, match="^unknown split 'dev'; use train, val or test"):
        d.split("dev")
    assert d.class_indices(2).tolist() == [0, 2, 4, 7] and d.class_counts() == [3, 2, 4]
    u8 = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)
    out = d.float(u8)
    assert out.dtype == torch.float32 and out.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    f = torch.tensor([0.25, 0.5], dtype=torch.float64)
    assert d.float(f).dtype == torch.float32 and d.float(f).tolist() == [0.25, 0.5]
    d.check_ipc(1)
    d.check_ipc(2)  # the smallest class has exactly 2
    with pytest.raises(
        GeodistillError, match="^ipc=3 is larger than class 'b' of dataset 'tiny', which has 2 training"
    ):
        d.check_ipc(3)
    with pytest.raises(GeodistillError, match="^ipc must be >= 1, got 0"):
        d.check_ipc(0)


def _affine_of(crop_fn, n=2000, hflip=True, **kw):
    """Read each sample's crop back as (sx, sy, tx, ty) in normalized coordinates: the source is
    a 64 px image whose channels hold each pixel centre's x and y, which bilinear sampling
    reproduces exactly away from the border; the output is 8 px."""
    c = (2 * torch.arange(64) + 1) / 64 - 1
    src = torch.stack([c.expand(64, 64), c[:, None].expand(64, 64), torch.zeros(64, 64)])[None].expand(
        n, 3, 64, 64
    )
    out = crop_fn(
        src.contiguous(), hflip=hflip, size=(8, 8), generator=torch.Generator().manual_seed(0), **kw
    )
    assert out.shape == (n, 3, 8, 8)
    g = (2 * torch.arange(8) + 1) / 8 - 1
    sx = (out[:, 0, 0, -1] - out[:, 0, 0, 0]) / (g[-1] - g[0])
    sy = (out[:, 1, -1, 0] - out[:, 1, 0, 0]) / (g[-1] - g[0])
    tx, ty = out[:, 0].mean((1, 2)), out[:, 1].mean((1, 2))
    # the map is affine: every sampled x is sx * g + tx
    torch.testing.assert_close(out[:, 0, 3], sx[:, None] * g + tx[:, None], atol=1e-4, rtol=0)
    return sx, sy, tx, ty


def test_random_resized_crop_draws_area_ratio_centre_and_flip_as_documented():
    sx, sy, tx, ty = _affine_of(random_resized_crop, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    w, h = sx.abs(), sy
    assert (h > 0).all() and (w <= 1 + 1e-5).all() and (h <= 1 + 1e-5).all()
    # inside the image: the crop [t - s, t + s] never leaves [-1, 1]
    assert (tx.abs() + w <= 1 + 1e-4).all() and (ty.abs() + h <= 1 + 1e-4).all()
    area, aspect = w * h, w / h
    assert area.min() >= 0.08 - 1e-4 and area.max() <= 1 + 1e-4
    unclipped = (w < 0.999) & (h < 0.999)
    assert area[unclipped].mean().item() == pytest.approx(0.5, abs=0.03)  # U(0.08, 1), minus clipped draws
    assert aspect.min() < 0.78 and aspect.max() > 1.28 and (aspect[unclipped] >= 0.75 - 1e-3).all()
    assert aspect[unclipped].max() <= 4 / 3 + 1e-3
    assert aspect[unclipped].log().mean().abs() < 0.02  # log-uniform ratio, symmetric about 1
    room = 1 - w
    u = tx[room > 0.2] / room[room > 0.2]  # the centre is uniform over the room left
    assert u.min() < -0.9 and u.max() > 0.9 and u.mean().abs() < 0.05
    v = ty[(1 - h) > 0.2] / (1 - h[(1 - h) > 0.2])
    assert v.min() < -0.9 and v.max() > 0.9 and v.mean().abs() < 0.05
    assert (sx < 0).float().mean().item() == pytest.approx(0.5, abs=0.05)  # flipped half the time
    sx2, *_ = _affine_of(random_resized_crop, hflip=False)
    assert (sx2 > 0).all()
    sx3, sy3, *_ = _affine_of(random_resized_crop, n=300, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    torch.testing.assert_close(sx3.abs(), torch.full((300,), 0.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(sy3, torch.full((300,), 0.5), atol=1e-4, rtol=0)


def test_cutmix_pastes_one_rectangle_scaled_by_sqrt_one_minus_lambda_and_reports_its_area():
    x = torch.stack([torch.zeros(1, 40, 20), torch.ones(1, 40, 20)])  # image 1 is all ones, 40 x 20
    g = torch.Generator().manual_seed(0)
    fracs, top, left, inside = [], 0, 0, []
    for _ in range(400):
        out, perm, lam = cutmix(x, alpha=1.0, generator=g)
        if perm[0] != 1:
            continue
        mask = out[0, 0] == 1
        frac = mask.sum().item() / mask.numel()
        assert frac == pytest.approx(1 - lam, abs=1e-9)  # lam is the area the original keeps
        fracs.append(frac)
        if not mask.any():
            continue
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        y0, y1, x0, x1 = rows[0].item(), rows[-1].item() + 1, cols[0].item(), cols[-1].item() + 1
        assert mask[y0:y1, x0:x1].all() and mask.sum() == (y1 - y0) * (x1 - x0)  # one full rectangle
        top += y0 == 0
        left += x0 == 0
        if y0 > 0 and y1 < 40 and x0 > 0 and x1 < 20:
            inside.append(((y1 - y0) / 40, (x1 - x0) / 20))
    assert len(fracs) > 100 and sum(f > 0 for f in fracs) > 0.8 * len(fracs)
    assert top > 10 and left > 10  # boxes are clipped at the image's edges, not one pixel in
    assert len(inside) > 10
    # an unclipped box has the image's proportions: both sides are sqrt(1 - lam0) of the image's
    assert max(abs(h - w) for h, w in inside) <= 2 / 20 + 1e-9
    # lam0 ~ Beta(1, 1): the mean pasted fraction of unclipped boxes is E[1 - lam0] = 1/2 at most
    assert 0.2 < sum(fracs) / len(fracs) < 0.5


def test_train_augment_passes_flip_rule_and_pad_to_each_crop(monkeypatch):
    import geodistill.data.augment as aug

    calls = []
    monkeypatch.setattr(aug, "shift_crop", lambda x, **kw: calls.append(("shift", kw)) or x)
    monkeypatch.setattr(aug, "random_resized_crop", lambda x, **kw: calls.append(("rrc", kw)) or x)
    g = torch.Generator()
    aug.train_augment(torch.rand(2, 1, 8, 8), hflip=False, generator=g)
    aug.train_augment(torch.rand(2, 1, 32, 32), hflip=True, generator=g)
    aug.train_augment(torch.rand(2, 1, 8, 8), hflip=True, generator=g, kind="rrc", scale=(0.3, 0.6))
    aug.train_augment(torch.rand(2, 1, 8, 8), hflip=False, generator=g, kind="rrc")
    assert calls == [
        ("shift", dict(pad=1, hflip=False, generator=g)),  # 8 px: 8 // 8 = 1
        ("shift", dict(pad=4, hflip=True, generator=g)),
        ("rrc", dict(scale=(0.3, 0.6), hflip=True, generator=g)),
        ("rrc", dict(scale=(0.08, 1.0), hflip=False, generator=g)),
    ]
    calls.clear()
    aug.train_augment(torch.rand(2, 1, 4, 4), hflip=False, generator=g)
    assert calls[0][1]["pad"] == 1  # never below one pixel


@pytest.mark.parametrize("layout", ["NHWC-1", "NCHW-W3", "NHWC-H2"])
def test_npz_ambiguous_layouts(tmp_path, layout):
    c, h, w = {"NHWC-1": (1, 5, 7), "NCHW-W3": (3, 5, 3), "NHWC-H2": (3, 2, 7)}[layout]
    chw = _asym(4, c, h, w)
    arr = chw if layout == "NCHW-W3" else chw.transpose(0, 2, 3, 1)  # NCHW whose width is 3 stays NCHW
    np.savez(tmp_path / "d.npz", x_train=arr, y_train=np.arange(4) % 2, x_test=arr, y_test=np.arange(4) % 2)
    d = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert np.array_equal(d.x_train.numpy(), chw) and d.name == "d"


def test_npz_float_images_become_float32_and_labels_must_be_1d(tmp_path):
    x = (_asym(4, 1, 3, 3) / 255).astype(np.float64)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.arange(4) % 2, x_test=x, y_test=np.arange(4) % 2)
    d = load_dataset(f"npz:{tmp_path / 'f.npz'}")
    assert d.x_train.dtype == torch.float32
    np.savez(
        tmp_path / "g.npz", x_train=x, y_train=(np.arange(4) % 2)[:, None], x_test=x, y_test=np.arange(4) % 2
    )
    with pytest.raises(GeodistillError, match="y_train must be a 1-D integer array"):
        load_dataset(f"npz:{tmp_path / 'g.npz'}")


def test_folder_ignores_stray_files_hidden_folders_and_non_images(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "train" / "README.txt").write_text("not a class")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "test" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    d = load_dataset(f"folder:{root}")
    assert d.class_names == ["cat", "dog"] and len(d.y_train) == 6 and d.name == "pets"


@pytest.mark.parametrize("mode, channels", [("1", 1), ("L", 1), ("LA", 1), ("I", 1), ("P", 3), ("RGBA", 3)])
def test_folder_channel_count_follows_the_image_mode(tmp_path, mode, channels):
    root = tmp_path / "m"
    for split in ("train", "test"):
        for c, v in (("a", 0), ("b", 255)):
            (root / split / c).mkdir(parents=True)
            if mode == "I":  # 32-bit integers holding 16-bit values (how PIL opens many 16-bit files)
                img = np.full((4, 4), v * 257, np.int32)
                img[0, 0] = 100 * 256 + 7  # kept as its high byte, 100
                Image.fromarray(img, "I").save(root / split / c / "0.tif")
            else:
                Image.fromarray(np.full((4, 4), v, np.uint8)).convert(mode).save(root / split / c / "0.png")
    d = load_dataset(f"folder:{root}")
    assert d.image_shape == (channels, 4, 4)
    if mode == "I":
        assert d.x_train[:, 0, 0, 0].tolist() == [100, 100]
        d.x_train[:, 0, 0, 0] = torch.tensor([0, 255], dtype=torch.uint8)
    assert d.x_train[d.y_train == 1].min() == 255 and d.x_train[d.y_train == 0].max() == 0


def test_folder_resize_is_pil_bilinear(tmp_path):
    root = tmp_path / "r"
    img = _asym(1, 3, 10, 10, seed=7)[0].transpose(1, 2, 0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(img).save(root / split / c / "0.png")
    d = load_dataset(f"folder:{root}", image_size=6)
    want = np.asarray(Image.fromarray(img).resize((6, 6), Image.Resampling.BILINEAR))
    assert np.array_equal(d.x_train[0].permute(1, 2, 0).numpy(), want)


def test_default_cache_dir_reads_the_environment(monkeypatch):
    from pathlib import Path

    from geodistill.data.sources import default_cache_dir

    monkeypatch.setenv("GEODISTILL_CACHE", "/tmp/somewhere")
    assert default_cache_dir() == Path("/tmp/somewhere")
    monkeypatch.delenv("GEODISTILL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "geodistill"


def test_dataset_summary_names_every_field():
    d = _tiny(skipped=["x.png: bad"]).carve_val(1 / 3, seed=1)
    assert d.summary() == {
        "name": "tiny", "classes": ["a", "b", "c"], "image_shape": [2, 3, 4], "train": 6, "val": 3,
        "test": 3, "val_split": {"fraction": 1 / 3, "seed": 1}, "skipped": ["x.png: bad"],
    }  # fmt: skip
    assert _tiny().summary()["val"] == 0


def test_augmentations_run_without_a_generator():
    from geodistill.data.augment import roll_jitter

    x = torch.rand(4, 3, 8, 8)
    assert random_resized_crop(x).shape == x.shape and shift_crop(x).shape == x.shape
    assert cutmix(x)[0].shape == x.shape and roll_jitter(x, 2).shape == x.shape
    assert train_augment(x, hflip=True).shape == x.shape


def test_validation_split_seed_defaults_to_zero():
    d = load_dataset("digits", image_size=8, val_fraction=0.1)
    e = load_dataset("digits", image_size=8).carve_val(0.1, seed=0)
    assert torch.equal(d.y_val, e.y_val) and torch.equal(d.x_val, e.x_val) and d.val_spec["seed"] == 0
    f = load_dataset("digits", image_size=8).carve_val(0.1)
    assert torch.equal(f.x_val, e.x_val)
