"""``timm/<name>`` passthrough: any timm model, split into features and classifier."""

from __future__ import annotations

from torch import nn

from ..files import GeodistillError


class _TimmBody(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def build_timm(
    name: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False, **kw
):
    try:
        import timm
    except ImportError as e:
        raise GeodistillError("timm/<name> models need timm: pip install 'geodistill[timm]'") from e
    try:
        m = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kw)
    except RuntimeError as e:
        raise GeodistillError(f"timm model {name!r}: {e}") from e
    except Exception as e:  # hub download failures
        if pretrained:
            raise GeodistillError(
                f"could not load pretrained timm weights for {name!r} (offline?): {e}"
            ) from e
        raise
    head = m.get_classifier()
    m.reset_classifier(0)  # forward_head(pre_logits) then gives features; head keeps the weights
    return _TimmBody(m), head if isinstance(head, nn.Module) else nn.Identity()
