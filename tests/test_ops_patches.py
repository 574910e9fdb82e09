"""minivid.ops patches and adaLN: round trips, the Conv3d equivalence, token order, modulation."""
import pytest
import torch
import torch.nn.functional as F

from minivid.ops import AdaLNZero, gate, modulate, patchify, unpatchify
from minivid.compare import assert_close, available_devices

DEVICES = available_devices()


@pytest.mark.exercise("8.1")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("patch", [(1, 1, 1), (2, 5, 3), (3, 1, 2), 1])
def test_unpatchify_inverts_patchify(device, patch):
    x = torch.randn(2, 3, 6, 5, 6, dtype=torch.float64, device=device)
    tok = patchify(x, patch)
    p = (patch,) * 3 if isinstance(patch, int) else patch
    assert tok.shape == (2, (6 // p[0]) * (5 // p[1]) * (6 // p[2]), 3 * p[0] * p[1] * p[2])
    assert torch.equal(unpatchify(tok, patch, (6, 5, 6), 3), x)
    assert torch.equal(unpatchify(tok, patch, x.shape), x)  # full shape: channels inferred


@pytest.mark.exercise("8.1")
@pytest.mark.parametrize("device", DEVICES)
def test_patch_token_order_and_conv3d_equivalence(device):
    x = torch.randn(2, 3, 4, 6, 4, dtype=torch.float64, device=device)
    tok = patchify(x, (2, 3, 2))  # grid (2, 2, 2)
    idx = (1 * 2 + 0) * 2 + 1  # token of patch (t=1, h=0, w=1), row-major
    assert torch.equal(tok[:, idx], x[:, :, 2:4, 0:3, 2:4].reshape(2, -1))
    w = torch.randn(5, 3, 2, 3, 2, dtype=torch.float64, device=device)
    conv = F.conv3d(x, w, stride=(2, 3, 2))  # (B, 5, 2, 2, 2)
    lin = tok @ w.reshape(5, -1).T  # (B, L, 5)
    assert_close(lin, conv.flatten(2).transpose(1, 2), atol=1e-12, rtol=1e-10, name="linear on patches vs Conv3d")


def test_patchify_errors():
    x = torch.zeros(1, 3, 4, 6, 6)
    with pytest.raises(ValueError, match="divisible by patch"):
        patchify(x, (3, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        patchify(x[0], (1, 2, 2))
    tok = patchify(torch.zeros(1, 3, 4, 8, 8), (1, 2, 2))
    with pytest.raises(ValueError, match="not the patch grid"):
        unpatchify(tok, (1, 2, 2), (4, 4, 4), 3)  # the patch grid, not the video size


@pytest.mark.parametrize("device", DEVICES)
def test_modulate_and_gate_closed_form(device):
    x = torch.randn(2, 7, 5, device=device)
    shift, scale, g = torch.randn(3, 2, 5, device=device)
    y = modulate(x, shift, scale)
    for b in range(2):
        for i in range(7):
            assert_close(y[b, i], x[b, i] * (1 + scale[b]) + shift[b], atol=1e-6, rtol=1e-6, name="modulate")
            assert_close(gate(x, g)[b, i], g[b] * x[b, i], atol=0, rtol=0, name="gate")
    v = torch.randn(2, 3, 4, 5, device=device)  # (B, T, L, D): broadcast over every token dim
    assert_close(modulate(v, shift, scale), v * (1 + scale[:, None, None]) + shift[:, None, None], atol=1e-6,
                 rtol=1e-6, name="4-D modulate")
    with pytest.raises(ValueError, match=r"scale must be \(B, D\)"):
        modulate(x, shift, scale[:, :4])


@pytest.mark.parametrize("device", DEVICES)
def test_adaln_zero_starts_as_identity(device):
    ada = AdaLNZero(dim=5, cond_dim=4).to(device)
    c = torch.randn(3, 4, device=device)
    chunks = ada(c)
    assert len(chunks) == 6 and all(t.shape == (3, 5) for t in chunks)
    shift, scale, g = chunks[:3]
    x = torch.randn(3, 7, 5, device=device)
    assert torch.equal(modulate(x, shift, scale), x) and torch.equal(gate(x, g), torch.zeros_like(x))
    (gate(modulate(x, shift, scale), g) + chunks[3].sum()).sum().backward()
    assert ada.proj[1].weight.grad.abs().sum() > 0  # zero init still learns
