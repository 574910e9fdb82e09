"""Temporal layers (minivid.models.temporal): Make-A-Video's pseudo-3-D conv and its identity initialisation."""
import pytest
import torch
from torch import nn

from minivid.models.temporal import Pseudo3DConv, dirac_temporal_conv
from minivid.compare import assert_close


def _conv2d(cin=3, cout=4, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, 3, padding=1)


def _reference(layer: Pseudo3DConv, x: torch.Tensor) -> torch.Tensor:
    """float64, frame by frame then pixel by pixel: spatial conv per frame, then a 1-D conv along time per pixel."""
    x = x.double()
    B, C, T, H, W = x.shape
    w2, b2 = layer.spatial.weight.double(), layer.spatial.bias.double()
    h = torch.stack([torch.nn.functional.conv2d(x[:, :, t], w2, b2, padding=1) for t in range(T)], 2)
    wt, bt = layer.temporal.weight.double()[..., 0, 0], layer.temporal.bias.double()  # (C, C, k)
    k = wt.shape[-1]
    pad = torch.nn.functional.pad(h, (0, 0, 0, 0, k // 2, k // 2))             # zero padding in time
    out = torch.zeros_like(h)
    for t in range(T):
        window = pad[:, :, t:t + k]                                             # (B, C, k, H, W)
        out[:, :, t] = torch.einsum("oik,bikhw->bohw", wt, window) + bt[None, :, None, None]
    return out


@pytest.mark.exercise("4.2")
def test_dirac_temporal_conv_is_the_identity():
    conv = dirac_temporal_conv(5)
    x = torch.randn(2, 5, 9, 3, 4)                                              # (B, C, T, H, W)
    assert torch.equal(conv(x), x), "a Dirac-initialised temporal conv must return its input exactly"
    w = conv.weight[..., 0, 0]
    assert w[:, :, 1].equal(torch.eye(5)) and w[:, :, 0].abs().sum() == 0 and w[:, :, 2].abs().sum() == 0
    assert conv.bias.abs().sum() == 0


@pytest.mark.exercise("4.1")
@pytest.mark.exercise("4.2")
def test_pseudo3d_at_init_is_the_image_conv_frame_by_frame_exactly():
    conv = _conv2d()
    layer = Pseudo3DConv(conv)
    x = torch.randn(2, 3, 5, 8, 8)                                              # (B, C, T, H, W)
    per_frame = torch.stack([conv(x[:, :, t]) for t in range(5)], 2)
    assert torch.equal(layer(x), per_frame)
    assert layer.spatial is conv, "the image model's conv is reused, not copied"


@pytest.mark.exercise("4.1")
def test_pseudo3d_matches_a_float64_reference_and_skips_time_for_images():
    layer = Pseudo3DConv(_conv2d(3, 4, seed=1))
    with torch.no_grad():
        layer.temporal.weight.normal_(0, 0.3)
        layer.temporal.bias.normal_(0, 0.1)
    x = torch.randn(2, 3, 6, 5, 7)                                              # odd sizes
    assert_close(layer(x), _reference(layer, x), atol=1e-5, rtol=1e-5, name="pseudo-3-D conv")
    image = torch.tensor([True, False])
    out = layer(x, image)
    per_frame = torch.stack([layer.spatial(x[0:1, :, t]) for t in range(6)], 2)
    assert_close(out[0:1], per_frame, atol=1e-6, rtol=1e-6, name="an image item's frames must not mix")
    assert_close(out[1:], _reference(layer, x)[1:], atol=1e-5, rtol=1e-5, name="clip item")
    # frames are not swapped for channels or pixels: moving one frame moves only its temporal neighbours
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    d = (layer(x2) - layer(x)).abs().amax(dim=(0, 1, 3, 4))
    assert d[0] > 0 and d[1] > 0 and bool((d[2:] == 0).all()), "a 3-tap conv in time reaches only the next frame"


def test_pseudo3d_trains_only_what_is_new_when_the_image_conv_is_frozen():
    conv = _conv2d().requires_grad_(False)
    layer = Pseudo3DConv(conv)
    trainable = [n for n, p in layer.named_parameters() if p.requires_grad]
    assert trainable == ["temporal.weight", "temporal.bias"]
    layer(torch.randn(1, 3, 4, 6, 6)).square().sum().backward()
    assert conv.weight.grad is None and layer.temporal.weight.grad is not None
