"""minivid.ops convolutions: factorized space-time conv, causal Conv3d with cache, causal resampling."""
import pytest
import torch
import torch.nn.functional as F

from minivid.ops import (
    CausalConv3d,
    CausalTemporalDownsample,
    CausalTemporalUpsample,
    FactorizedConv3d,
    compressed_frames,
    conv3d_flops,
    factorized_conv3d_flops,
    factorized_conv3d_reference,
)
from minivid.compare import assert_close, available_devices

DEVICES = available_devices()
F64 = torch.float64


def _video(device, B=2, C=3, T=7, H=5, W=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, T, H, W, generator=g, dtype=F64).to(device)


# ----------------------------------------------------------------------------- factorized conv
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_factorized_fast_form_matches_reshape_reference(device, k):
    conv = FactorizedConv3d(3, 4, kernel_size=k).to(device, F64)
    x = _video(device)
    assert_close(conv(x), conv.forward_reference(x), atol=1e-12, rtol=1e-10, name="fast vs reference")


@pytest.mark.parametrize("device", DEVICES)
def test_factorized_equals_full_conv_with_composed_kernel(device):
    """Bias-free, spatial-then-temporal is one Conv3d whose kernel is the product of the two."""
    conv = FactorizedConv3d(3, 4, kernel_size=3).to(device, F64)
    with torch.no_grad():
        conv.spatial.bias.zero_()
        conv.temporal.bias.zero_()
    ws, wt = conv.spatial.weight[:, :, 0], conv.temporal.weight[:, :, :, 0, 0]  # (M, I, kh, kw), (O, M, kt)
    w_full = torch.einsum("omt,mihw->oithw", wt, ws)
    x = _video(device)
    assert_close(conv(x), F.conv3d(x, w_full, padding=1), atol=1e-12, rtol=1e-10, name="factorized vs composed Conv3d")


@pytest.mark.parametrize("device", DEVICES)
def test_identity_init_keeps_spatial_output(device):
    conv = FactorizedConv3d(3, 5, kernel_size=3, identity_init=True).to(device, F64)
    x = _video(device)
    h = conv.spatial(x)
    assert torch.equal(conv.temporal(h), h)  # the temporal layer leaves its input unchanged
    assert torch.equal(conv(x), h)
    with torch.no_grad():
        conv.temporal.weight.add_(0.01)
    assert not torch.allclose(conv(x), h)  # and the test can fail


def test_factorized_flops_and_errors():
    shape = (8, 64, 16, 32, 32)
    assert conv3d_flops(shape, 64, (3, 3, 3)) == 2 * 8 * 16 * 32 * 32 * 64 * 64 * 27
    assert factorized_conv3d_flops(shape, 64, 3) * 27 == conv3d_flops(shape, 64, (3, 3, 3)) * 12
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        FactorizedConv3d(3, 3, kernel_size=2)
    with pytest.raises(ValueError, match=r"C=3 channels"):
        FactorizedConv3d(3, 3)(torch.zeros(1, 4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        factorized_conv3d_reference(torch.zeros(1, 3, 3, 3), torch.zeros(3, 3, 3, 3), None, torch.zeros(3, 3, 3), None)


# ----------------------------------------------------------------------------- causal conv
def _causal(device, stride=1, kernel=(3, 3, 3), seed=0):
    torch.manual_seed(seed)
    return CausalConv3d(3, 4, kernel, stride=stride).to(device, F64)


@pytest.mark.parametrize("device", DEVICES)
def test_causal_conv_is_front_replicate_padded_conv(device):
    conv = _causal(device)
    x = _video(device)
    y, _ = conv(x)
    padded = F.pad(x, (0, 0, 0, 0, 2, 0), mode="replicate")  # 2 copies of frame 0 in front, nothing behind
    assert_close(y, F.conv3d(padded, conv.conv.weight, conv.conv.bias, padding=(0, 1, 1)),
                 atol=1e-12, rtol=1e-10, name="causal conv")
    still = x[:, :, :1].expand_as(x).contiguous()  # a still video: replicate padding makes every output frame equal
    ys, _ = conv(still)
    assert_close(ys, ys[:, :, :1].expand_as(ys), atol=1e-12, rtol=1e-10, name="still video")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride", [1, (2, 1, 1)])
def test_causal_conv_never_sees_the_future(device, stride):
    conv = _causal(device, stride)
    x = _video(device, T=9)
    y, _ = conv(x)
    st = 1 if stride == 1 else 2
    for t in range(9):
        x2 = x.clone()
        x2[:, :, t + 1:] = torch.randn_like(x2[:, :, t + 1:])
        y2, _ = conv(x2)
        n = t // st + 1  # output frames i with i * st <= t
        assert torch.equal(y2[:, :, :n], y[:, :, :n]), f"output changed after editing frames > {t}"
        if t < 8:
            assert not torch.equal(y2, y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride,kernel", [(1, (3, 3, 3)), ((2, 1, 1), (3, 3, 3)), (1, (4, 1, 3)), ((3, 2, 2), (3, 3, 3))])
@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1, 1, 1, 1, 1], [4, 5], [1, 2, 6], [2, 1, 1, 5]])
def test_chunked_equals_whole(device, stride, kernel, chunks):
    conv = _causal(device, stride, kernel)
    x = _video(device, T=9)
    whole, _ = conv(x)
    outs, cache, t0 = [], None, 0
    for n in chunks:
        y, cache = conv(x[:, :, t0:t0 + n], cache)
        outs.append(y)
        t0 += n
    assert_close(torch.cat(outs, dim=2), whole, atol=1e-12, rtol=1e-10, name=f"chunks {chunks}")


@pytest.mark.parametrize("device", DEVICES)
def test_strided_causal_conv_maps_1_plus_2k_to_1_plus_k(device):
    conv = _causal(device, stride=(2, 1, 1))
    for k in range(4):
        assert conv(_video(device, T=1 + 2 * k))[0].shape[2] == 1 + k


def test_causal_conv_errors():
    conv = CausalConv3d(3, 4)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        conv(torch.zeros(1, 2, 3, 4, 4))
    with pytest.raises(ValueError, match="cache must be"):
        conv(torch.zeros(1, 3, 3, 4, 4), torch.zeros(1, 3, 2, 5, 4))
    with pytest.raises(ValueError, match="kernel_size"):
        CausalConv3d(3, 4, kernel_size=(3, 3))
    with pytest.raises(ValueError, match="1 \\+ 4\\*k frames"):
        compressed_frames(6, 4)
    assert compressed_frames(17, 4) == 5


# ----------------------------------------------------------------------------- temporal resampling
@pytest.mark.parametrize("device", DEVICES)
def test_temporal_down_up_bookkeeping(device):
    down, up = CausalTemporalDownsample(), CausalTemporalUpsample()
    x = _video(device, T=7)
    d = down(x)
    assert d.shape[2] == 4 and torch.equal(d[:, :, 0], x[:, :, 0])
    assert_close(d[:, :, 2], (x[:, :, 3] + x[:, :, 4]) / 2, atol=1e-12, rtol=0, name="pair mean")
    u = up(d)
    assert u.shape[2] == 7 and torch.equal(down(u), d)  # down(up(z)) == z
    assert torch.equal(u[:, :, 3], d[:, :, 2]) and torch.equal(u[:, :, 4], d[:, :, 2])
    with pytest.raises(ValueError, match="1 \\+ 2k frames"):
        down(_video(device, T=6))
    with pytest.raises(ValueError, match="even number"):
        down(_video(device, T=5), first_chunk=False)


@pytest.mark.parametrize("device", DEVICES)
def test_temporal_resampling_chunked_equals_whole_and_causal(device):
    down, up = CausalTemporalDownsample(), CausalTemporalUpsample()
    x = _video(device, T=9)
    chunked = torch.cat([down(x[:, :, :3]), down(x[:, :, 3:7], first_chunk=False), down(x[:, :, 7:], first_chunk=False)], 2)
    assert torch.equal(chunked, down(x))
    z = down(x)
    assert torch.equal(torch.cat([up(z[:, :, :2]), up(z[:, :, 2:], first_chunk=False)], 2), up(z))
    x2 = x.clone()
    x2[:, :, 5:] = 0  # edit frames >= 5: latent frames 0..2 (covering input 0..4) must not move
    assert torch.equal(down(x2)[:, :, :3], z[:, :, :3])


def test_factorized_channels_last_layout_same_values():
    conv = FactorizedConv3d(8, 8, kernel_size=3)
    x = torch.randn(2, 8, 5, 6, 7)
    cl = torch.channels_last_3d
    y = conv.to(memory_format=cl)(x.contiguous(memory_format=cl))
    assert y.is_contiguous(memory_format=cl)
    assert_close(y, conv.forward_reference(x), atol=1e-5, rtol=1e-4, name="channels-last")
