"""Dataset sources. A source spec is a string:

- ``digits`` — scikit-learn's bundled 8x8 digits (no download), resized to ``image_size``
  (default 16), a stratified 80/20 split with seed 0;
- ``folder:PATH`` — an ImageFolder tree ``PATH/train/<class>/*`` plus ``PATH/val`` or
  ``PATH/test``;
- ``npz:FILE`` — arrays ``x_train, y_train, x_test, y_test`` (NHWC or NCHW, uint8 or float
  in [0, 1]) and optionally ``class_names``;
- ``cifar10:ROOT``, ``cifar100:ROOT``, ``mnist:ROOT``, ``fashion-mnist:ROOT`` — torchvision
  datasets already on disk under ``ROOT`` (never downloaded).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..files import GeodistillError
from .classdata import ClassData

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_OK_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I"}
TORCHVISION = {
    "cifar10": ("CIFAR10", True),
    "cifar100": ("CIFAR100", True),
    "mnist": ("MNIST", False),
    "fashion-mnist": ("FashionMNIST", True),
}


def load_dataset(
    spec: str,
    *,
    image_size: int | None = None,
    skip_bad_images: bool = False,
    cache_dir: str | Path | None = None,
    val_fraction: float = 0.0,
    val_seed: int = 0,
) -> ClassData:
    """Load and validate a dataset from a source spec (see module docstring); with
    ``val_fraction`` > 0 a seeded, class-balanced validation split is carved out of train."""
    data = _load(spec, image_size, skip_bad_images, cache_dir)
    return data.carve_val(val_fraction, val_seed)


def _load(spec: str, image_size: int | None, skip_bad_images: bool, cache_dir) -> ClassData:
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "digits":
        return load_digits(image_size or 16)
    if not arg:
        raise GeodistillError(f"dataset spec {spec!r}: expected KIND:PATH, e.g. folder:data/pets")
    if kind == "folder":
        return load_folder(arg, image_size=image_size, skip_bad_images=skip_bad_images, cache_dir=cache_dir)
    if kind == "npz":
        return _resize(load_npz(arg), image_size)
    if kind in TORCHVISION:
        return _resize(load_torchvision(kind, arg), image_size)
    raise GeodistillError(
        f"unknown dataset kind {kind!r} in {spec!r}; use digits, folder:, npz:, or one of "
        + ", ".join(f"{k}:" for k in TORCHVISION)
    )


def _resize_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.clamp(0, 1)


def _resize(d: ClassData, size: int | None) -> ClassData:
    if size:
        d.x_train, d.x_test = _resize_tensor(d.x_train, size), _resize_tensor(d.x_test, size)
    return d


def load_digits(image_size: int = 16) -> ClassData:
    """scikit-learn's digits (1,797 images, 10 classes), as 1-channel uint8 images."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.from_numpy(np.round(d.images * (255 / 16)).astype(np.uint8))[:, None]
    y = torch.from_numpy(d.target.astype(np.int64))
    itr, ite = train_test_split(np.arange(len(y)), test_size=0.2, stratify=d.target, random_state=0)
    x = _resize_tensor(x, image_size)
    return ClassData("digits", [str(i) for i in range(10)], x[itr], y[itr], x[ite], y[ite], hflip=False)


def load_npz(path: str | Path) -> ClassData:
    """Load ``x_train, y_train, x_test, y_test`` (+ optional ``class_names``) from an .npz."""
    path = Path(path)
    if not path.is_file():
        raise GeodistillError(f"{path}: npz file not found")
    try:  # read every array now: object arrays fail here (never unpickled), not later
        with np.load(path, allow_pickle=False) as npz:
            z = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise GeodistillError(f"{path}: not a readable .npz ({e})") from e
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z]
    if missing:
        raise GeodistillError(f"{path}: missing arrays {missing}; found {sorted(z)}")
    arrays = {}
    for k in ("x_train", "x_test"):
        a = z[k]
        if a.ndim == 3:
            a = a[:, None]
        elif a.ndim == 4 and a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
            a = a.transpose(0, 3, 1, 2)
        if a.ndim != 4:
            raise GeodistillError(f"{path}: {k} has shape {a.shape}; want NHWC, NCHW or NHW")
        if a.dtype == np.uint8:
            arrays[k] = torch.from_numpy(np.ascontiguousarray(a))
        elif np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                idx = np.argwhere(~np.isfinite(a))[0]
                raise GeodistillError(
                    f"{path}: {k} contains NaN/Inf (first at index {tuple(int(i) for i in idx)})"
                )
            arrays[k] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        else:
            raise GeodistillError(f"{path}: {k} has dtype {a.dtype}; want uint8 or float in [0, 1]")
    for k in ("y_train", "y_test"):
        a = z[k]
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise GeodistillError(f"{path}: {k} must be a 1-D integer array, got {a.dtype} {a.shape}")
        arrays[k] = torch.from_numpy(a.astype(np.int64))
    if "class_names" in z:
        names = [str(s) for s in z["class_names"].tolist()]
    else:
        names = [str(i) for i in range(int(arrays["y_train"].max()) + 1)]
    try:
        return ClassData(
            path.stem, names, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
        )
    except GeodistillError as e:
        raise GeodistillError(f"{path}: {e}") from e


def load_torchvision(kind: str, root: str | Path) -> ClassData:
    """A torchvision dataset already on disk under ``root``; never downloads."""
    import torchvision.datasets as tvd

    cls_name, hflip = TORCHVISION[kind]
    cls = getattr(tvd, cls_name)
    try:
        tr, te = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except RuntimeError as e:
        raise GeodistillError(
            f"{kind} not found under {root!r} ({e}). geodistill never downloads data: fetch it "
            f"with torchvision.datasets.{cls_name}(root, download=True) on a connected machine"
        ) from e

    def arr(ds):
        x = torch.as_tensor(np.asarray(ds.data))
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    (xtr, ytr), (xte, yte) = arr(tr), arr(te)
    return ClassData(kind, list(tr.classes), xtr, ytr, xte, yte, hflip=hflip)


def _class_dirs(split: Path) -> list[Path]:
    return sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def load_folder(
    root: str | Path,
    *,
    image_size: int | None = None,
    skip_bad_images: bool = False,
    cache_dir: str | Path | None = None,
    workers: int = 8,
) -> ClassData:
    """An ImageFolder tree: ``root/train/<class>/*`` and ``root/val`` (or ``root/test``).

    Class order is the sorted folder names of ``train``; the test split must hold the same
    classes. Every file is checked before any training starts: unreadable images, unusual
    modes and (without ``image_size``) mismatched sizes raise an error naming the file, or are
    skipped and recorded when ``skip_bad_images`` is set.
    """
    root = Path(root)
    train = root / "train"
    test = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if not train.is_dir():
        raise GeodistillError(f"{root}: no train/ split folder")
    if test is None:
        raise GeodistillError(f"{root}: no val/ or test/ split folder")
    classes = [p.name for p in _class_dirs(train)]
    test_classes = [p.name for p in _class_dirs(test)]
    if set(classes) != set(test_classes):
        raise GeodistillError(
            f"{root}: class folders differ between train/ and {test.name}/: only in train "
            f"{sorted(set(classes) - set(test_classes))}, only in {test.name} "
            f"{sorted(set(test_classes) - set(classes))}"
        )
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in (train, test):
        files[split.name] = []
        for c, name in enumerate(classes):
            imgs = _image_files(split / name)
            if not imgs:
                raise GeodistillError(f"{split / name}: empty class folder (no images)")
            files[split.name] += [(p, c) for p in imgs]
    key = hashlib.sha256(
        repr(
            [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for s in files.values() for p, _ in s]
            + [image_size, skip_bad_images]
        ).encode()
    ).hexdigest()[:16]
    cache = Path(cache_dir) / f"{root.name}-{key}.safetensors" if cache_dir else None
    if cache is not None and cache.exists():
        return ClassData.load(cache)
    mode = _dataset_mode(files["train"][0][0])
    size = (image_size, image_size) if image_size else None
    out, skipped = {}, []
    with ThreadPoolExecutor(workers) as pool:
        for split, items in files.items():
            decoded = list(
                pool.map(_read_image, [p for p, _ in items], [mode] * len(items), [size] * len(items))
            )
            if size is None:
                size = next((a.shape[:2] for a in decoded if isinstance(a, np.ndarray)), None)
            xs, ys = [], []
            for (p, c), a in zip(items, decoded):
                if isinstance(a, np.ndarray) and a.shape[:2] != size:
                    a = f"size {a.shape[1]}x{a.shape[0]} differs from {size[1]}x{size[0]}; pass --image-size"
                if isinstance(a, str):
                    if not skip_bad_images:
                        raise GeodistillError(f"{p}: {a} (pass --skip-bad-images to skip it)")
                    skipped.append(f"{p}: {a}")
                    continue
                xs.append(a)
                ys.append(c)
            x = torch.from_numpy(np.stack(xs))
            x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
            out[split] = (x.contiguous(), torch.tensor(ys, dtype=torch.long))
    (xtr, ytr), (xte, yte) = out["train"], out[test.name]
    data = ClassData(root.name, classes, xtr, ytr, xte, yte, skipped=skipped)
    if cache is not None:
        data.save(cache)
    return data


def _dataset_mode(first: Path) -> str:
    try:
        with Image.open(first) as im:
            return "L" if im.mode in ("1", "L", "I;16", "I", "LA") else "RGB"
    except (OSError, UnidentifiedImageError) as e:
        raise GeodistillError(f"{first}: unreadable image ({e})") from e


def _read_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray | str:
    """Decode one image to HWC/HW uint8, or return a reason string when it is bad."""
    try:
        with Image.open(path) as im:
            if im.mode not in _OK_MODES:
                return f"unsupported image mode {im.mode!r}"
            if im.mode in ("I;16", "I"):
                im = im.point(lambda v: v / 256).convert("L")
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        return f"unreadable image ({type(e).__name__}: {e})"


def default_cache_dir() -> Path:
    return Path(os.environ.get("GEODISTILL_CACHE", Path.home() / ".cache" / "geodistill"))
