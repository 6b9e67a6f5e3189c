"""ResNet-18/50/101 and MobileNetV2 from torchvision, with a small-image stem for <= 64 px."""

from __future__ import annotations

import socket

import torchvision.models as tvm
from torch import nn

from ..files import GeodistillError
from .registry import register


def _imagenet_weights(arch: str, fn, weights: str):
    """Build with torchvision's ImageNet weights; a clear error offline instead of a hang."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return fn(weights=weights)
    except Exception as e:  # URLError, OSError, hash mismatch...
        raise GeodistillError(
            f"could not load torchvision ImageNet weights {weights} for {arch}: {e}. Offline? "
            "Place the weight file in $TORCH_HOME/hub/checkpoints/ (torchvision's cache) or "
            "train a teacher with `geodistill squeeze`"
        ) from e
    finally:
        socket.setdefaulttimeout(old)


def _resnet(arch: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
    fn = getattr(tvm, arch)
    m = _imagenet_weights(arch, fn, "IMAGENET1K_V1") if pretrained else fn()
    if image_size <= 64:  # CIFAR stem: 3x3 stride-1 conv, no max-pool
        m.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
    elif in_chans != 3:
        m.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
    head = nn.Linear(m.fc.in_features, num_classes)
    m.fc = nn.Identity()  # torchvision's forward then returns pooled, flattened features
    return m, head


for _arch in ("resnet18", "resnet50", "resnet101"):
    register(_arch)(lambda _a=_arch, **kw: _resnet(_a, **kw))


@register("mobilenet_v2")
def _mobilenet_v2(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
    m = (
        _imagenet_weights("mobilenet_v2", tvm.mobilenet_v2, "IMAGENET1K_V1")
        if pretrained
        else tvm.mobilenet_v2()
    )
    first = m.features[0][0]
    stride = (1, 1) if image_size <= 64 else first.stride
    if in_chans != 3 or stride != first.stride:
        m.features[0][0] = nn.Conv2d(in_chans, first.out_channels, 3, stride, 1, bias=False)
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(m.last_channel, num_classes))
    m.classifier = nn.Identity()
    return m, head
