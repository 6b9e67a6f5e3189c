"""The dataset-distillation ConvNet: ``depth`` x [conv3x3 -> norm -> ReLU -> avgpool2]."""

from __future__ import annotations

from torch import nn

from .registry import register


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.GroupNorm(ch, ch, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(32, ch), ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use batch, instance, group or none")


def convnet(
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    pretrained: bool = False,
    depth: int | None = None,
    width: int = 128,
    norm: str = "batch",
):
    """Depth defaults to 3 at 32 px, 4 at 64 px, 5 at 128 px (features end at 4x4)."""
    if pretrained:
        raise ValueError("convnet has no pretrained weights")
    if depth is None:
        depth = max(1, (image_size // 4).bit_length() - 1)
    layers: list[nn.Module] = []
    ch, size = in_chans, image_size
    for _ in range(depth):
        layers += [
            nn.Conv2d(ch, width, 3, padding=1, bias=norm == "none"),
            _norm(norm, width),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
        ]
        ch, size = width, size // 2
    if size < 1:
        raise ValueError(f"convnet depth {depth} is too deep for {image_size}px images")
    body = nn.Sequential(*layers, nn.Flatten())
    return body, nn.Linear(width * size * size, num_classes)


@register("convnet")
def _convnet(**kw):
    return convnet(**kw)


@register("convnet3")
def _convnet3(**kw):
    return convnet(**{"depth": 3, **kw})


@register("convnet-tiny")
def _convnet_tiny(**kw):
    """A fast test model: 2 layers, 16 channels."""
    return convnet(**{"depth": 2, "width": 16, **kw})
