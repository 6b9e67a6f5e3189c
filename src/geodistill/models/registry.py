"""The registry, the normalizing ``Classifier`` wrapper and safetensors checkpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..files import GeodistillError, check_tensor, load_tensors, save_tensors

Builder = Callable[..., tuple[nn.Module, nn.Module]]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder(num_classes, in_chans, image_size, pretrained, **kw) -> (body, head)``."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY) + ["timm/<name>"]


class Classifier(nn.Module):
    """``head(body(normalize(x)))`` for images ``x`` in [0, 1], shape ``[N, C, H, W]``."""

    def __init__(self, body: nn.Module, head: nn.Module, mean, std, spec: dict):
        super().__init__()
        self.body, self.head = body, head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.spec = spec  # create_model kwargs, to rebuild the architecture from a checkpoint

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> the normalized input ``(x - mean) / std`` the body sees."""
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor, *, normalized: bool = False) -> torch.Tensor:
        """Penultimate features ``[N, D]`` of images ``x`` (already normalized if ``normalized``)."""
        return self.body(x if normalized else self.normalize(x))

    def forward(self, x: torch.Tensor, *, normalized: bool = False) -> torch.Tensor:
        return self.head(self.features(x, normalized=normalized))

    @property
    def arch(self) -> str:
        return self.spec["name"]


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    image_size: int = 32,
    mean=None,
    std=None,
    pretrained: bool = False,
    seed: int | None = None,
    **kwargs,
) -> Classifier:
    """Build a registered model (or ``timm/<name>``) wrapped in :class:`Classifier`.

    ``mean``/``std`` are per-channel normalization constants applied inside the model.
    ``seed`` makes the initial weights reproducible without touching global RNG state.
    """
    spec = dict(
        name=name,
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        mean=list(mean or [0.5] * in_chans),
        std=list(std or [0.5] * in_chans),
        **kwargs,
    )
    if name.startswith("timm/"):
        from .timm_models import build_timm

        builder: Builder = lambda **kw: build_timm(name[5:], **kw)
    elif name in _REGISTRY:
        builder = _REGISTRY[name]
    else:
        raise GeodistillError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        body, head = builder(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, pretrained=pretrained, **kwargs
        )
    return Classifier(body, head, spec["mean"], spec["std"], spec)


def save_checkpoint(path: str | Path, model: Classifier, meta: dict) -> str:
    """Write weights + ``{"spec": ..., **meta}`` to safetensors; return the file's sha256."""
    model = getattr(model, "module", model)
    sd = {k: v for k, v in model.state_dict().items()}
    save_tensors(path, sd, {"spec": model.spec, **meta})
    return file_sha256(path)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(
    path: str | Path, *, class_names: list[str] | None = None, arch: str | None = None, image_shape=None
) -> tuple[Classifier, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` and check it fits the data.

    Raises a clear error when the checkpoint's classes, architecture or input shape differ
    from what the caller expects. Only safetensors is read: nothing is unpickled.
    """
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".pkl", ".bin", ".ckpt"):
        raise GeodistillError(
            f"{path}: geodistill reads checkpoints only as .safetensors (pickle files can run code when "
            f"loaded). Import a PyTorch state dict with: geodistill convert-checkpoint {path} --arch NAME "
            "--num-classes K --image-size S --out teacher.safetensors"
        )
    sd, meta = load_tensors(path)
    spec = meta.get("spec")
    required = ("name", "num_classes", "in_chans", "image_size", "mean", "std")
    if not isinstance(spec, dict) or any(k not in spec for k in required):
        raise GeodistillError(
            f"{path}: not a geodistill checkpoint (its header has no complete model spec); import a plain "
            "state dict with `geodistill convert-checkpoint`"
        )
    for name, t in sd.items():
        if t.is_floating_point():
            check_tensor(path, name, t)
    ck_names = meta.get("class_names")
    if ck_names is not None and len(ck_names) != spec["num_classes"]:
        raise GeodistillError(
            f"{path}: header lists {len(ck_names)} class names for a {spec['num_classes']}-class model"
        )
    if arch is not None and spec["name"] != arch:
        raise GeodistillError(f"{path}: checkpoint architecture is {spec['name']!r}, expected {arch!r}")
    if class_names is not None and ck_names is None and spec["num_classes"] != len(class_names):
        raise GeodistillError(
            f"{path}: a {spec['num_classes']}-class checkpoint for a dataset with {len(class_names)} classes"
        )
    if class_names is not None and ck_names not in (None, list(class_names)):
        raise GeodistillError(
            f"{path}: checkpoint classes do not match the dataset: checkpoint has {len(ck_names)} "
            f"classes {ck_names[:5]}..., data has {len(class_names)} {list(class_names)[:5]}..."
            if len(ck_names) != len(class_names)
            else f"{path}: checkpoint class order differs from the dataset's at index "
            f"{next(i for i, (a, b) in enumerate(zip(ck_names, class_names)) if a != b)}"
        )
    if image_shape is not None and (spec["in_chans"], spec["image_size"]) != (
        image_shape[0],
        image_shape[-1],
    ):
        raise GeodistillError(
            f"{path}: checkpoint expects {spec['in_chans']}x{spec['image_size']}px images, data is "
            f"{image_shape[0]}x{image_shape[-1]}px"
        )
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    try:
        model = create_model(spec["name"], **kwargs)
    except (TypeError, ValueError) as e:
        raise GeodistillError(f"{path}: cannot build the model its header describes ({e})") from e
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise GeodistillError(f"{path}: weights do not fit architecture {spec['name']!r}: {e}") from e
    model.eval()
    meta["sha256"] = file_sha256(path)
    return model, meta
