"""One dataclass per stage. YAML files give defaults, command-line flags override them.

Every field carries its one-line help, its allowed values and its bounds (``opt``); the CLI
builds its flags from them and :func:`from_dict` enforces them, so help and checks cannot
drift apart. The resolved :class:`RunConfig` is saved as ``config.yaml`` next to a run's
outputs, so a run can be repeated with ``geodistill run OUT/config.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .files import GeodistillError

METHODS = ("wmdd", "sre2l", "rded", "random", "herding", "kcenter", "kmeans")
REGULARIZERS = ("none", "curvature", "curvature-simple", "gradnorm", "fgsm", "pgd", "trades")
ATTACKS = ("pgd100", "autoattack", "square", "cw", "cw-linf", "mim")


def opt(
    default: Any, help: str, *, choices: tuple | None = None, lo: float | None = None, hi: float | None = None
):
    """A config field with its help text, allowed values and inclusive bounds (checked on load;
    for lists and tuples, on every element)."""
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    source: str = opt(
        "digits", "dataset: digits | folder:PATH | npz:FILE | cifar10:ROOT | cifar100:ROOT | ..."
    )
    image_size: int | None = opt(None, "resize images to this square size (digits: 16)", lo=4)
    skip_bad_images: bool = opt(False, "skip unreadable images (listed in the manifest) instead of stopping")
    cache: bool = opt(
        True, "cache decoded image folders, and teacher scores for --resume, in $GEODISTILL_CACHE"
    )
    val_fraction: float = opt(
        0.1, "fraction of each class's training images held out as the validation split", lo=0.0, hi=0.5
    )
    val_seed: int = opt(0, "seed of the validation split")


@dataclass
class SqueezeConfig:
    arch: str = opt("convnet", "teacher architecture (see `geodistill models`)")
    arch_kwargs: dict = opt({}, "extra architecture arguments, e.g. {width: 64}")
    epochs: int = opt(30, "training epochs", lo=1)
    batch_size: int = opt(128, "images per optimizer step", lo=1)
    optimizer: str = opt("sgd", "optimizer", choices=("sgd", "adamw"))
    lr: float = opt(0.05, "peak learning rate (linear warm-up, cosine decay)", lo=0.0)
    momentum: float = opt(0.9, "SGD momentum (Nesterov)", lo=0.0, hi=1.0)
    weight_decay: float = opt(5e-4, "weight decay", lo=0.0)
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy", lo=0.0, hi=1.0)
    augment: str = opt("crop", "training augmentation", choices=("crop", "rrc", "none"))
    pretrained: bool = opt(
        False, "start from torchvision/timm ImageNet weights (needs them on disk or online)"
    )
    checkpoint: str | None = opt(None, "load this teacher (.safetensors) instead of training one")
    init_checkpoint: str | None = opt(
        None, "start training from these weights (e.g. to fine-tune with a regularizer)"
    )
    regularizer: str = opt("none", "robustness regularizer of the objective", choices=REGULARIZERS)
    reg_lambda: float = opt(
        0.0,
        "regularizer weight; 0: the authors' (curvature 100 on the batch-mean loss, curvature-simple "
        "1e-4, gradnorm 1, trades 6)",
        lo=0.0,
    )
    reg_h: float = opt(3.0, "curvature step h in the model's normalized input units (GUARD: 3.0)", lo=0.0)
    reg_fraction: float = opt(
        1.0,
        "share of each batch the curvature / gradnorm term is computed on, an unbiased estimate of the "
        "whole batch's term (1: all images, as the authors; on digits 0.25 took a curvature epoch from "
        "4.9x to 2.5x a plain one)",
        lo=0.0,
        hi=1.0,
    )
    reg_eps: float = opt(
        2 / 255, "adversarial-training radius (fgsm, pgd, trades) in pixel units", lo=0.0, hi=1.0
    )
    seed: int = opt(0, "seed of initialization, data order and augmentation")


@dataclass
class DistillConfig:
    method: str = opt("wmdd", "distillation or selection method", choices=METHODS)
    ipc: int = opt(10, "images per class", lo=1)
    iterations: int = opt(
        300,
        "synthesis iterations (0: the initial images); 300 as validated (authors: WMDD 2000, SRe2L 1000)",
        lo=0,
    )
    lr: float | None = opt(
        None,
        "Adam learning rate on pixels in the teacher's normalized units; empty: the method's (wmdd 0.01, "
        "sre2l 0.25)",
        lo=0.0,
    )
    batch_classes: int = opt(10, "classes optimized together in one batch", lo=1)
    r_ce: float | None = opt(
        None, "weight of the cross-entropy term; empty: the method's (wmdd 0.1, sre2l 1)", lo=0.0
    )
    r_bn: float = opt(0.01, "weight of the BatchNorm statistics term", lo=0.0)
    r_feat: float | None = opt(
        None,
        "weight of the barycenter feature term; empty: the method's (wmdd 0, chosen on validation)",
        lo=0.0,
    )
    feat_loss: str = opt(
        "relative",
        "barycenter term: relative = mean_i ||f_i - a_i||^2 / class feature variance (independent of "
        "the feature dimension); paper = the authors' ||F - A||_F over the batch",
        choices=("relative", "paper"),
    )
    pairing: str = opt(
        "fixed",
        "image-atom pairing of the feature term: fixed (image i <-> atom i) or ot (optimal "
        "assignment recomputed every step)",
        choices=("fixed", "ot"),
    )
    feat_view: str = opt(
        "augmented",
        "images the barycenter term sees: augmented (the crop the other terms see, as the authors) or clean "
        "(an extra forward of the un-augmented images: atoms are features of whole images)",
        choices=("augmented", "clean"),
    )
    feat_anneal: bool = opt(False, "decay the barycenter term's weight to 0 along the cosine schedule")
    first_bn_multiplier: float | None = opt(
        None,
        "extra weight of the first BN layer; empty: the method's (wmdd 10 as validated, sre2l 10; "
        "the WMDD authors use 1)",
        lo=0.0,
    )
    init: str | None = opt(
        None,
        "starting images: real (wmdd: the real images nearest to the atoms; others: random real ones), "
        "random (random real images for every method) or noise; empty: the method's (wmdd real, sre2l noise)",
        choices=("real", "random", "noise"),
    )
    augment: str | None = opt(
        None,
        "synthesis augmentation: rrc (random-resized-crop + flip + shift) or jitter (shift only); "
        "empty: the method's (rrc)",
        choices=("rrc", "jitter"),
    )
    crop_scale: tuple[float, float] = opt(
        (0.08, 1.0), "random-resized-crop area range during synthesis", lo=0.0, hi=1.0
    )
    jitter: float = opt(
        32 / 224,
        "largest random shift as a fraction of the image side (authors: 32 px at 224)",
        lo=0.0,
        hi=1.0,
    )
    barycenter: str = opt(
        "exact",
        "barycenter solver: exact (POT, the paper's), fast, sliced (ablation)",
        choices=("exact", "fast", "sliced"),
    )
    weighted: bool = opt(False, "learn barycenter weights (False: uniform, as in the authors' runs)")
    rded_factor: int = opt(
        0, "rded: patches per side stitched into one image; 0: 1 up to 32 px, else 2", lo=0
    )
    rded_crops: int = opt(5, "rded: random crops scored per candidate image", lo=1)
    rded_candidates: int = opt(300, "rded: real images drawn per class as candidates", lo=1)
    max_memory: str = opt("", "refuse up front a batch estimated above this size, e.g. 8GB")
    seed: int = opt(0, "seed of atoms, initial images and augmentation")


@dataclass
class EvalConfig:
    students: list[str] = opt([], "student architectures, one row each; empty: the teacher's")
    reference_top1: dict = opt(
        {},
        "full-data top-1 of each student architecture, e.g. {resnet18: 0.93} (train one with `geodistill "
        "squeeze --arch A`); recovery of that student's rows is computed against it",
    )
    recipes: dict = opt(
        {},
        "per-architecture overrides of these fields, e.g. {resnet18: {lr: 0.002, epochs: 400}}; merged over "
        "geodistill's defaults (evaluate.student.RECIPES: RDED's learning rates)",
    )
    arch_kwargs: dict = opt({}, "extra architecture arguments for the students")
    epochs: int = opt(300, "student epochs; every image is seen once per epoch", lo=1)
    batch_size: int = opt(50, "images per student step (capped at the set size)", lo=1)
    views: int = opt(
        1,
        "augmented views of each image per step (repeated augmentation): a step trains on views x batch "
        "crops, each relabelled by the teacher",
        lo=1,
    )
    optimizer: str = opt("adamw", "student optimizer", choices=("sgd", "adamw"))
    lr: float = opt(0.001, "student peak learning rate (cosine decay)", lo=0.0)
    weight_decay: float = opt(0.01, "student weight decay", lo=0.0)
    temperature: float = opt(20.0, "KD temperature (WMDD / SRe2L / RDED use 20)", lo=1e-6)
    cutmix: float = opt(1.0, "CutMix beta parameter; 0 disables", lo=0.0)
    crop_scale: tuple[float, float] = opt(
        (0.08, 1.0), "random-resized-crop area range for students", lo=0.0, hi=1.0
    )
    weighted: bool = opt(True, "weight each image's loss by its barycenter weight")
    seeds: int = opt(3, "student seeds (mean and std are reported)", lo=1)
    seed: int = opt(0, "first student seed")
    split: str = opt(
        "test",
        "split the students are scored on: val (tuning) or test (final numbers only)",
        choices=("val", "test"),
    )
    attacks: list[str] = opt(
        [],
        "attacks, any of: "
        + ", ".join(ATTACKS)
        + "; NAME runs at every radius of eps, NAME@2/255 at that one",
        choices=ATTACKS,
    )
    eps: list[float] = opt([2 / 255], "L-inf radii in pixel units, in [0, 1], e.g. 2/255", lo=0.0, hi=1.0)
    attack_samples: int = opt(1000, "seeded subset of the scored split that is attacked (0: all)", lo=0)
    max_memory: str = opt("", "refuse up front a batch estimated above this size, e.g. 8GB")


@dataclass
class RunConfig:
    name: str = opt("run", "run name (default output directory runs/<name>)")
    data: DataConfig = field(default_factory=DataConfig)
    squeeze: SqueezeConfig = field(default_factory=SqueezeConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    methods: list[str] = opt(
        ["wmdd", "sre2l", "random"],
        "methods; 'm+guard' uses the GUARD teacher, 'm[key=value,...]' overrides distill fields",
    )
    guard: dict = opt(
        {"regularizer": "curvature"},
        "squeeze overrides of the teacher of '+guard' methods (merged over {regularizer: curvature})",
    )
    device: str = opt("auto", "auto, cpu, cuda, cuda:1, ...")
    amp: bool = opt(
        False, "bfloat16 autocast (CUDA; on CPUs with bf16 instructions ~1.7x faster student steps)"
    )
    channels_last: bool = opt(False, "channels-last memory format (CUDA only)")
    compile: bool = opt(False, "torch.compile student training (CPU: 1.3-1.8x faster steps after compiling)")

    def __post_init__(self) -> None:
        self.guard = {"regularizer": "curvature", **self.guard}


def help_text(f: dataclasses.Field) -> str:
    """The flag help of a config field: its doc, allowed values and default."""
    m = f.metadata
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    parts = [m.get("help", "")]
    if m.get("choices") and not isinstance(default, list):
        parts.append("one of: " + ", ".join(m["choices"]))
    parts.append(f"default: {default!r}")
    return "; ".join(p for p in parts if p).replace("%", "%%")


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
            if not isinstance(value, bool | int):
                raise TypeError(value)
            return bool(value)
        if hint in (int, float):
            if isinstance(value, bool):
                raise TypeError(value)
            if isinstance(value, str) and "/" in value:  # e.g. 2/255
                num, den = value.split("/")
                return hint(float(num) / float(den))
            if hint is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                return int(str(value), 0) if isinstance(value, str) else int(value)
            return float(value)
        if hint is str:
            if isinstance(value, dict | list):
                raise TypeError(value)
            return str(value)
        if origin in (tuple, list):
            if isinstance(value, str):
                value = split_list(value)
            if not isinstance(value, list | tuple):
                raise TypeError(value)
            inner = args[0] if args else str
            out = origin(_coerce(v, inner, where) for v in value)
            if origin is tuple and args and args[-1] is not Ellipsis and len(out) != len(args):
                raise ValueError(value)
            return out
        if origin is dict or hint is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value) or {}
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError, yaml.YAMLError) as e:
        raise GeodistillError(
            f"config {where}: cannot read {value!r} as {getattr(hint, '__name__', hint)}"
        ) from e
    return value


def split_list(text: str) -> list[str]:
    """``"a,b[x=1,y=2],c"`` -> ``["a", "b[x=1,y=2]", "c"]``: commas inside brackets do not split."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{(" and 1 or ch in "]})" and -1 or 0
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


def _check(f: dataclasses.Field, value: Any, where: str) -> None:
    """Enforce a field's allowed values and bounds."""
    m = f.metadata
    items = value if isinstance(value, list | tuple) else [value]
    for v in items:
        if v is None:
            continue
        if f.name == "attacks" and isinstance(v, str) and "@" in v:
            name, _, radius = v.partition("@")
            try:
                r = float(radius.split("/")[0]) / (float(radius.split("/")[1]) if "/" in radius else 1.0)
            except (ValueError, ZeroDivisionError):
                raise GeodistillError(
                    f"config {where}: cannot read the radius of {v!r}; write e.g. pgd100@2/255"
                ) from None
            if not 0 <= r <= 1:
                raise GeodistillError(f"config {where}: radius of {v!r} outside [0, 1] (write 8/255, not 8)")
            v = name
        if m.get("choices") and v not in m["choices"]:
            raise GeodistillError(f"config {where}: {v!r} is not one of {', '.join(m['choices'])}")
        if m.get("lo") is not None and isinstance(v, int | float) and v < m["lo"]:
            raise GeodistillError(f"config {where}: {v!r} is below the minimum {m['lo']}")
        if m.get("hi") is not None and isinstance(v, int | float) and v > m["hi"]:
            hint = " (radii are in pixel units: write 8/255, not 8)" if f.name == "eps" else ""
            raise GeodistillError(f"config {where}: {v!r} is above the maximum {m['hi']}{hint}")


def from_dict(cls, d: dict, where: str = ""):
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys and bad values."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(by_name)
    if unknown:
        raise GeodistillError(
            f"config {where or cls.__name__}: unknown key(s) {sorted(unknown)}; valid: {sorted(by_name)}"
        )
    kw = {}
    for k, v in d.items():
        w = f"{where}.{k}".lstrip(".")
        kw[k] = _coerce(v, hints[k], w)
        _check(by_name[k], kw[k], w)
    return cls(**kw)


def config_matches(saved: dict | None, cfg) -> bool:
    """Whether a config saved with an artifact equals ``cfg``, reading the saved one with today's
    defaults (a field added since it was written counts as its default, so finished work stays
    reusable); an unreadable saved config never matches."""
    if not isinstance(saved, dict):
        return False
    try:
        return from_dict(type(cfg), saved) == cfg
    except (GeodistillError, TypeError):
        return False


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
    except (OSError, UnicodeDecodeError) as e:
        raise GeodistillError(f"{path}: cannot read the config file ({e})") from e
    try:
        d = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise GeodistillError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(d, dict):
        raise GeodistillError(f"{path}: the top level must be a mapping")
    return d


def preset_names() -> list[str]:
    return sorted(
        r.name[:-5] for r in (resources.files("geodistill") / "presets").iterdir() if r.name.endswith(".yaml")
    )


def preset_path(name: str) -> Path:
    """A packaged preset (``presets/<name>.yaml``) or a file path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    res = resources.files("geodistill") / "presets" / f"{name}.yaml"
    if res.is_file():
        return Path(str(res))
    raise GeodistillError(f"{name}: no such config file or preset; presets: {preset_names()}")


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
    where = str(path) if path else "config"
    d = load_yaml(preset_path(str(path))) if path else {}
    for k, v in overrides.items():
        set_dotted(d, k, v)
    try:
        return from_dict(RunConfig, d)
    except GeodistillError as e:
        raise GeodistillError(f"{where}: {e}") from None


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from .files import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
