import numpy as np
import pytest
import torch
from PIL import Image

from geodistill.data import cutmix, load_dataset, random_resized_crop, shift_crop
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


def test_cutmix_lambda_matches_pasted_area():
    x = torch.zeros(4, 1, 8, 8)
    x[2:] = 1
    out, perm, lam = cutmix(x, generator=torch.Generator().manual_seed(1))
    for i in range(4):
        frac_own = (out[i] == x[i]).float().mean().item()
        if x[i].max() != x[perm[i]].max():
            assert frac_own == pytest.approx(lam)
