import pytest
import torch
from torch import nn

from geodistill.teacher import REGULARIZERS, curvature_penalty, curvature_simple_penalty, default_h, objective


class Quadratic(nn.Module):
    """Per-sample loss l(x) = 1/2 x^T A x with a learnable symmetric A: input Hessian = A."""

    def __init__(self, d: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        m = torch.randn(d, d, generator=g, dtype=torch.float64)
        self.a = nn.Parameter(m @ m.T + torch.eye(d, dtype=torch.float64))

    def forward(self, x):
        return 0.5 * torch.einsum("ni,ij,nj->n", x, self.a, x)


def test_curvature_penalty_equals_h_times_hessian_times_z():
    q = Quadratic(5)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = 0.3
    pen = curvature_penalty(q, x, h)
    g = x @ q.a.detach()  # gradient A x
    z = g / g.norm(dim=1, keepdim=True)
    expect = h * (z @ q.a.detach()).norm(dim=1)
    torch.testing.assert_close(pen, expect, rtol=1e-10, atol=1e-12)
    # the penalty is differentiable w.r.t. the model parameters (double backprop)
    pen.mean().backward()
    assert q.a.grad is not None and q.a.grad.abs().sum() > 0


def test_curvature_simple_penalty_is_loss_difference():
    q = Quadratic(3)
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h = 0.1
    g = x @ q.a.detach()
    z = g / g.norm(dim=1, keepdim=True)
    expect = (q(x + h * z) - q(x)).abs().detach()
    torch.testing.assert_close(curvature_simple_penalty(q, x, h).detach(), expect)


def test_default_h_scales_with_image_size():
    assert default_h((3, 224, 224), [1.0] * 3) == pytest.approx(3.0)
    assert default_h((3, 32, 32), [1.0] * 3) == pytest.approx(3.0 * 32 / 224)
    assert default_h((3, 224, 224), [0.25] * 3) == pytest.approx(0.75)


@pytest.mark.parametrize("kind", REGULARIZERS)
def test_every_objective_trains(kind):
    from geodistill.models import create_model

    m = create_model("convnet-tiny", num_classes=3, in_chans=1, image_size=8, seed=0)
    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loss, logits, parts = objective(
        m, x, y, kind, h=0.05, eps=2 / 255, generator=torch.Generator().manual_seed(0)
    )
    assert logits.shape == (6, 3) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    assert m.training  # regularizers that switch to eval mode switch back
    if kind in ("curvature", "curvature-simple", "gradnorm", "trades"):
        assert parts["reg"] >= 0
