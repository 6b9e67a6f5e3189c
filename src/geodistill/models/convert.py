"""Import a PyTorch state dict (``torch.save(model.state_dict(), "x.pth")``, what research code,
torchvision and timm produce) into a geodistill :class:`Classifier`.

The file is read with ``torch.load(weights_only=True)``, which refuses pickled code. Keys are
unwrapped from ``state_dict``/``model``/``net`` containers, stripped of a DataParallel ``module.``
prefix and mapped onto the registry model: the classifier layer (``fc``, ``classifier``,
``head``...) becomes ``head.*`` and everything else ``body.*``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import GeodistillError
from .registry import Classifier, create_model

_CONTAINERS = ("state_dict", "model", "net", "model_state_dict", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.pth`` state dict, unwrapped and without ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise GeodistillError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for code, RuntimeError for non-archives
        raise GeodistillError(
            f"{path}: not a loadable PyTorch state dict with weights_only=True ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}); geodistill never unpickles arbitrary objects"
        ) from e
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise GeodistillError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise GeodistillError(f"{path}: no tensors found (keys: {list(obj)[:8]})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


_HEADS = ("fc", "classifier", "head", "last_linear", "linear")


def _destinations(k: str) -> list[str]:
    """Where key ``k`` may live in a Classifier: as is, in the body, or (classifier layers) in the head."""
    cands = [k, f"body.{k}", f"body.model.{k}"]
    first, _, rest = k.partition(".")
    if first in _HEADS and rest:
        tail = ".".join(k.split(".")[-2:])
        cands += [f"head.{rest}", f"head.{tail}", f"head.1.{k.split('.')[-1]}"]
    return cands


def map_state_dict(sd: dict[str, torch.Tensor], model: Classifier) -> dict[str, torch.Tensor]:
    """Rename ``sd``'s keys onto ``model``'s (``body.*``/``head.*``); raise listing every missing,
    unexpected or mis-shaped tensor."""
    target = {k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}
    out: dict[str, torch.Tensor] = {}
    claimed: set[str] = set()
    unexpected, wrong = [], []
    for k, v in sd.items():
        if k in ("mean", "std"):
            continue
        dest = next((c for c in _destinations(k) if c in target and c not in claimed), None)
        if dest is None:
            unexpected.append(k)
            continue
        claimed.add(dest)
        if tuple(v.shape) != tuple(target[dest].shape):
            wrong.append(f"{k} {tuple(v.shape)} (the model's {dest} is {tuple(target[dest].shape)})")
        else:
            out[dest] = v.to(target[dest].dtype)
    missing = [k for k in target if k not in claimed]
    if missing or unexpected or wrong:

        def show(xs):
            return ", ".join(xs[:12]) + (f" ... (+{len(xs) - 12})" if len(xs) > 12 else "") if xs else "none"

        raise GeodistillError(
            f"the state dict does not fit {model.arch!r}: missing {show(missing)}; unexpected "
            f"{show(unexpected)}; wrong shape {show(wrong)}"
        )
    return out


def import_state_dict(
    path: str | Path,
    *,
    arch: str,
    num_classes: int,
    image_size: int,
    in_chans: int = 3,
    mean: list[float],
    std: list[float],
    arch_kwargs: dict | None = None,
) -> Classifier:
    """A registry model ``arch`` holding the weights of the state dict at ``path``."""
    if len(mean) != in_chans or len(std) != in_chans:
        raise GeodistillError(f"--mean and --std need {in_chans} values each, got {mean} and {std}")
    model = create_model(
        arch,
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        mean=mean,
        std=std,
        **(arch_kwargs or {}),
    )
    sd = read_state_dict(path)
    try:
        mapped = map_state_dict(sd, model)
    except GeodistillError as e:
        raise GeodistillError(f"{path}: {e}") from None
    model.load_state_dict({**model.state_dict(), **mapped})
    return model.eval()
