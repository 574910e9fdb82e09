"""minivid.ops embeddings: timestep and sin-cos positions (closed forms), 3-D RoPE invariants, T5 buckets."""
import math

import pytest
import torch

from minivid.ops import (
    RelativePositionBias,
    Rope3D,
    attention,
    relative_position_bucket,
    sincos_pos_embed_1d,
    sincos_pos_embed_2d,
    sincos_pos_embed_3d,
    timestep_embedding,
)
from minivid.compare import assert_close, available_devices

DEVICES = available_devices()


@pytest.mark.parametrize("device", DEVICES)
def test_timestep_embedding_closed_form(device):
    t = torch.tensor([0.0, 1.0, 7.5, 999.0], dtype=torch.float64, device=device)
    emb = timestep_embedding(t, 10, max_period=100.0)
    assert emb.shape == (4, 10)
    for b, tv in enumerate(t.tolist()):
        for i in range(5):
            w = 100.0 ** (-i / 5)
            assert emb[b, i].item() == pytest.approx(math.cos(tv * w), abs=1e-12)
            assert emb[b, 5 + i].item() == pytest.approx(math.sin(tv * w), abs=1e-12)
    long_t = torch.tensor([0, 3, 250], device=device)
    assert_close(timestep_embedding(long_t, 16), timestep_embedding(long_t.float(), 16), atol=0, rtol=0, name="long t")
    odd = timestep_embedding(long_t, 7)
    assert odd.shape == (3, 7) and torch.equal(odd[:, -1], torch.zeros(3, device=device))
    with pytest.raises(ValueError, match="1-D tensor"):
        timestep_embedding(torch.zeros(2, 1), 8)


def test_sincos_positions_closed_form_and_structure():
    e1 = sincos_pos_embed_1d(6, 5)
    assert e1.shape == (5, 6)
    assert_close(e1[3], torch.tensor([math.sin(3), math.sin(3 * 1e4 ** (-1 / 3)), math.sin(3 * 1e4 ** (-2 / 3)),
                                      math.cos(3), math.cos(3 * 1e4 ** (-1 / 3)), math.cos(3 * 1e4 ** (-2 / 3))]),
                 atol=1e-6, rtol=0, name="1-D row 3")
    e2 = sincos_pos_embed_2d(8, (3, 5)).reshape(3, 5, 8)
    assert torch.equal(e2[1, :, :4], sincos_pos_embed_1d(4, 3)[1].expand(5, 4))  # row half depends on h only
    assert torch.equal(e2[:, 2, 4:], sincos_pos_embed_1d(4, 5)[2].expand(3, 4))  # column half on w only
    e3 = sincos_pos_embed_3d(16, (2, 3, 4), split=(4, 6, 6)).reshape(2, 3, 4, 16)
    assert torch.equal(e3[1, :, :, :4], sincos_pos_embed_1d(4, 2)[1].expand(3, 4, 4))
    assert torch.equal(e3[:, 2, :, 4:10], sincos_pos_embed_1d(6, 3)[2].expand(2, 4, 6))
    assert torch.equal(e3[:, :, 3, 10:], sincos_pos_embed_1d(6, 4)[3].expand(2, 3, 6))
    assert len({tuple(r.tolist()) for r in e3.reshape(-1, 16)}) == 24  # every token distinct
    assert sincos_pos_embed_3d(64, (2, 2, 2)).shape == (8, 64)
    with pytest.raises(ValueError, match="split must be"):
        sincos_pos_embed_3d(16, (2, 2, 2), split=(4, 5, 7))


@pytest.mark.parametrize("device", DEVICES)
def test_rope3d_preserves_norms_and_scores_depend_on_offsets_only(device):
    rope = Rope3D(14, split=(2, 6, 6))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2 * 3 * 5, 14, generator=g, dtype=torch.float64).to(device)
    xr = rope.apply(x, (2, 3, 5))
    assert_close(xr.norm(dim=-1), x.norm(dim=-1), atol=1e-12, rtol=1e-12, name="norms")
    assert_close(xr[:, :, 0], x[:, :, 0], atol=1e-15, rtol=0, name="position (0,0,0) is not rotated")
    assert not torch.allclose(xr, x)
    q, k = torch.randn(2, 14, generator=g, dtype=torch.float64).to(device)
    p = torch.tensor([[3.0, 1.0, 4.0], [1.0, 5.0, 9.0]], device=device)  # a query and a key position
    scores = []
    for shift in ([0.0, 0.0, 0.0], [7.0, -2.0, 11.5], [-3.0, 4.0, 0.25]):
        cos, sin = rope.cos_sin_at(p + torch.tensor(shift, device=device), dtype=torch.float64)
        qr = rope.apply(q[None], cos=cos[:1], sin=sin[:1])
        kr = rope.apply(k[None], cos=cos[1:], sin=sin[1:])
        scores.append((qr * kr).sum())
    assert_close(torch.stack(scores), scores[0].expand(3), atol=1e-12, rtol=1e-12, name="shifted scores")
    cos, sin = rope.cos_sin_at(p[[0, 0]], dtype=torch.float64)  # same position: q.k unchanged
    assert_close((rope.apply(q[None], cos=cos[:1], sin=sin[:1]) * rope.apply(k[None], cos=cos[1:], sin=sin[1:])).sum(),
                 (q * k).sum(), atol=1e-12, rtol=1e-12, name="zero offset")
    with pytest.raises(ValueError, match="multiply to L"):
        rope.apply(x, (2, 3, 4))


def test_rope3d_axes_rotate_their_own_slice():
    rope = Rope3D(12, split=(4, 4, 4))
    cos, sin = rope.cos_sin_at(torch.tensor([[0.0, 2.0, 0.0]]), dtype=torch.float64)  # only h moves
    x = torch.randn(1, 12, dtype=torch.float64)
    y = rope.apply(x, cos=cos, sin=sin)
    assert torch.equal(y[:, :4], x[:, :4]) and torch.equal(y[:, 8:], x[:, 8:])
    # h slice (x4..x7): pairs (4,6) and (5,7) rotate by 2*theta^0 and 2*theta^(-1/2)
    for i, ang in ((0, 2.0), (1, 2.0 * 1e4 ** -0.5)):
        a, b = x[0, 4 + i].item(), x[0, 6 + i].item()
        assert y[0, 4 + i].item() == pytest.approx(a * math.cos(ang) - b * math.sin(ang), abs=1e-12)
        assert y[0, 6 + i].item() == pytest.approx(b * math.cos(ang) + a * math.sin(ang), abs=1e-12)
    assert Rope3D(64).split == (16, 24, 24)


def test_relative_position_buckets_hand_values():
    rel = torch.tensor([0, -1, 1, -7, -8, -16, 16, -127, -128, -1000, 1000])
    # 32 buckets, bidirectional -> 16 per side, exact below 8, then 8 log-spaced buckets up to 128
    assert relative_position_bucket(rel).tolist() == [0, 1, 17, 7, 8, 10, 26, 15, 15, 15, 31]
    uni = relative_position_bucket(rel, bidirectional=False, num_buckets=8, max_distance=16)
    # one-sided: the future shares bucket 0; exact below 4, log-spaced 4..7 up to 16
    assert uni.tolist() == [0, 1, 0, 5, 6, 7, 0, 7, 7, 7, 0]


@pytest.mark.parametrize("device", DEVICES)
def test_relative_position_bias_is_toeplitz_and_learnable(device):
    rpb = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=16).to(device)
    assert torch.equal(rpb(5, 7), torch.zeros(3, 5, 7, device=device))  # zero init: plain attention
    with torch.no_grad():
        rpb.embedding.weight.normal_()
    b = rpb(6, 9)
    assert b.shape == (3, 6, 9)
    for i in range(6):
        for j in range(9):
            assert torch.equal(b[:, i, j], b[:, max(i - j, 0) + 0, max(j - i, 0)])  # depends on j - i only
    q = torch.randn(2, 3, 6, 4, device=device)
    kv = torch.randn(2, 3, 9, 4, device=device)
    attention(q, kv, kv, bias=b, impl="tiled", block_size=4).sum().backward()
    assert rpb.embedding.weight.grad is not None and rpb.embedding.weight.grad.abs().sum() > 0
