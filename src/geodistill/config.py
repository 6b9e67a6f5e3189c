"""One dataclass per stage. YAML files give defaults, command-line flags override them.

The resolved :class:`RunConfig` is saved as ``config.yaml`` next to a run's outputs, so a
run can be repeated with ``geodistill run OUT/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .files import GeodistillError


@dataclass
class DataConfig:
    source: str = "digits"  # digits | folder:PATH | npz:FILE | cifar10:ROOT | ...
    image_size: int | None = None  # resize to this square size (digits default 16)
    skip_bad_images: bool = False
    cache: bool = True  # cache decoded folder datasets (GEODISTILL_CACHE)


@dataclass
class SqueezeConfig:
    arch: str = "convnet"
    arch_kwargs: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: str = "crop"  # crop | rrc | none
    pretrained: bool = False  # torchvision/timm ImageNet weights (needs the internet once)
    checkpoint: str | None = None  # load this teacher instead of training one
    init_checkpoint: str | None = (
        None  # start training from these weights (e.g. fine-tune with a regularizer)
    )
    regularizer: str = "none"  # none | curvature | curvature-simple | gradnorm | fgsm | pgd | trades
    reg_lambda: float = 0.0  # weight of the regularizer (0: the method's default)
    reg_h: float = 0.0  # curvature step in pixel units (0: the default for the image size)
    reg_eps: float = 2 / 255  # adversarial-training radius in pixel units
    seed: int = 0


@dataclass
class DistillConfig:
    method: str = "wmdd"  # wmdd | sre2l | random
    ipc: int = 10
    iterations: int = 1000
    lr: float = 0.1  # Adam on pixels, cosine schedule
    batch_classes: int = 10  # classes optimized together in one batch
    r_ce: float = 1.0  # cross-entropy weight
    r_bn: float = 0.01  # BatchNorm statistics weight (per-class for wmdd, global for sre2l)
    r_feat: float = 1.0  # barycenter feature-matching weight (wmdd)
    first_bn_multiplier: float = 10.0  # SRe2L's extra weight on the first BN layer
    init: str = "real"  # real (nearest real image to each atom) | noise
    barycenter: str = (
        "exact"  # exact (POT, the paper's) | fast | sliced: see benchmarks/results/barycenter_speed.md
    )
    weighted: bool = False  # learn barycenter weights (False: uniform, as in the authors' runs)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # random-resized-crop scale during synthesis
    max_memory: str = ""  # e.g. 8GB: refuse up front a batch estimated not to fit
    seed: int = 0


@dataclass
class EvalConfig:
    arch: str = ""  # student architecture; empty: the teacher's
    arch_kwargs: dict = field(default_factory=dict)
    epochs: int = 300
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.001
    weight_decay: float = 0.01
    temperature: float = 20.0  # KD temperature (WMDD/SRe2L use 20)
    cutmix: float = 1.0  # CutMix beta parameter; 0 disables
    crop_scale: tuple[float, float] = (0.08, 1.0)
    weighted: bool = True  # weight each image's loss by its barycenter weight
    seeds: int = 3
    seed: int = 0
    attacks: list[str] = field(default_factory=list)  # pgd100, autoattack, square, cw, mim
    eps: list[float] = field(default_factory=lambda: [2 / 255])  # L-inf radii in pixel units
    attack_samples: int = 1000  # seeded subset of the test split attacked (0: all)
    max_memory: str = ""  # e.g. 8GB: refuse up front a batch estimated not to fit


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    squeeze: SqueezeConfig = field(default_factory=SqueezeConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    methods: list[str] = field(
        default_factory=lambda: ["wmdd", "sre2l", "random"]
    )  # "<m>+guard": GUARD teacher
    guard: dict = field(default_factory=lambda: {"regularizer": "curvature"})  # squeeze overrides for +guard
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML/flag value to the field's declared type, with a clear error."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise GeodistillError(f"config {where}: expected a mapping, got {value!r}")
        return from_dict(hint, value, where)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if hint in (int, float):
            if isinstance(value, str) and "/" in value:  # e.g. 2/255
                num, den = value.split("/")
                return hint(float(num) / float(den))
            return (
                hint(value) if hint is float else int(str(value), 0) if isinstance(value, str) else int(value)
            )
        if hint is str:
            return str(value)
        if origin in (tuple, list):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            inner = args[0] if args else str
            return origin(_coerce(v, inner, where) for v in value)
        if origin is dict or hint is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value) or {}
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError) as e:
        raise GeodistillError(
            f"config {where}: cannot read {value!r} as {getattr(hint, '__name__', hint)}"
        ) from e
    return value


def from_dict(cls, d: dict, where: str = ""):
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys."""
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise GeodistillError(
            f"config {where or cls.__name__}: unknown key(s) {sorted(unknown)}; valid: {sorted(names)}"
        )
    kw = {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in d.items()}
    return cls(**kw)


def to_dict(cfg) -> dict:
    def fix(o):
        if isinstance(o, tuple):
            return list(o)
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(v) for v in o]
        return o

    return fix(asdict(cfg))


def load_yaml(path: str | Path) -> dict:
    """Safely parse a YAML file (no object tags)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise GeodistillError(f"{path}: config file not found") from e
    try:
        d = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise GeodistillError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(d, dict):
        raise GeodistillError(f"{path}: the top level must be a mapping")
    return d


def preset_path(name: str) -> Path:
    """A packaged preset (``presets/<name>.yaml``) or a file path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    res = resources.files("geodistill") / "presets" / f"{name}.yaml"
    if res.is_file():
        return Path(str(res))
    available = sorted(
        r.name[:-5] for r in (resources.files("geodistill") / "presets").iterdir() if r.name.endswith(".yaml")
    )
    raise GeodistillError(f"{name}: no such config file or preset; presets: {available}")


def set_dotted(d: dict, key: str, value: Any) -> None:
    """``set_dotted(d, "distill.ipc", 10)`` on a nested dict."""
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise GeodistillError(f"config key {key!r}: {p!r} is not a section")
    d[parts[-1]] = value


def resolve(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """YAML defaults (a file or preset name) + dotted-key overrides -> a checked RunConfig."""
    d = load_yaml(preset_path(str(path))) if path else {}
    for k, v in overrides.items():
        set_dotted(d, k, v)
    return from_dict(RunConfig, d)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from .files import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
