"""The registry, the normalizing ``Classifier`` wrapper and safetensors checkpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..files import GeodistillError, load_tensors, save_tensors

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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, D]``."""
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

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
            f"{path}: geodistill reads checkpoints only as .safetensors (pickle files can run "
            "code when loaded). Convert a trusted file with `geodistill convert-checkpoint`"
        )
    sd, meta = load_tensors(path)
    spec = meta.get("spec")
    if not spec:
        raise GeodistillError(f"{path}: not a geodistill checkpoint (no model spec in its header)")
    if arch is not None and spec["name"] != arch:
        raise GeodistillError(f"{path}: checkpoint architecture is {spec['name']!r}, expected {arch!r}")
    if class_names is not None and meta.get("class_names") not in (None, list(class_names)):
        ck = meta["class_names"]
        raise GeodistillError(
            f"{path}: checkpoint classes do not match the dataset: checkpoint has {len(ck)} "
            f"classes {ck[:5]}..., data has {len(class_names)} {list(class_names)[:5]}..."
            if len(ck) != len(class_names)
            else f"{path}: checkpoint class order differs from the dataset's at index "
            f"{next(i for i, (a, b) in enumerate(zip(ck, class_names)) if a != b)}"
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
    model = create_model(spec["name"], **kwargs)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise GeodistillError(f"{path}: weights do not fit architecture {spec['name']!r}: {e}") from e
    model.eval()
    meta["sha256"] = file_sha256(path)
    return model, meta
