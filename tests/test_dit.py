"""Chapter 08 model: the diffusion transformer on spacetime patches (DiT arXiv:2212.09748, Latte arXiv:2401.03048)."""
import pytest
import torch
import torch.nn.functional as F

from minivid.models.dit import (
    DiT,
    DiTBlock,
    attention_probs,
    dit_config,
    factorized_attention,
    model_flops,
)
from minivid.ops import Rope3D, naive_attention
from minivid.compare import assert_close
from minivid.train import count_params
from tiny_models import randomize

F64 = torch.float64


def _cfg(**kw):
    base = dict(dim=24, heads=2, depth=2, freq_dim=32)
    base.update(kw)
    return dit_config("dit-tiny", **base)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return DiT(_cfg(**kw))


def _masks(grid):
    """Reference masks by explicit coordinates: same frame, same (h, w) position. (L, L) bool each."""
    coords = [(t, h, w) for t in range(grid[0]) for h in range(grid[1]) for w in range(grid[2])]
    same_frame = torch.tensor([[a[0] == b[0] for b in coords] for a in coords])
    same_pos = torch.tensor([[a[1:] == b[1:] for b in coords] for a in coords])
    return same_frame, same_pos


def _ref_self_attention(attn, h, grid, rope):
    """SpacetimeAttention in float64 by the book: one dense masked attention per pass, on the full sequence."""
    B, L, D = h.shape
    q, k, v = attn.qkv(h).reshape(B, L, 3, attn.heads, D // attn.heads).permute(2, 0, 3, 1, 4)
    if rope is not None:
        cos, sin = rope.cos_sin(grid, dtype=F64)
        q, k = rope.apply(q, cos=cos, sin=sin), rope.apply(k, cos=cos, sin=sin)
    if attn.kind == "full":
        o = naive_attention(q, k, v)
    else:
        same_frame, same_pos = _masks(grid)
        o = naive_attention(q, k, naive_attention(q, k, v, mask=same_frame), mask=same_pos)
    return attn.proj(o.transpose(1, 2).reshape(B, L, D))


# ----------------------------------------------------------------------------- shapes, init


@pytest.mark.parametrize("attention", ["full", "factorized"])
@pytest.mark.parametrize("patch,size", [((1, 2, 2), (1, 4, 4)), ((1, 2, 2), (3, 8, 6)), ((1, 2, 2), (5, 8, 8)),
                                        ((2, 2, 2), (4, 4, 8)), ((2, 4, 2), (6, 8, 2))])
def test_shapes_for_any_divisible_clip_size(attention, patch, size):
    m = randomize(_model(attention=attention, patch=patch, context_dim=8, out_channels=5), scale=0.2)
    x = torch.randn(2, 3, *size)
    y = m(x, torch.tensor([0.1, 0.9]), context=torch.randn(2, 4, 8))
    assert y.shape == (2, 5, *size) and torch.isfinite(y).all() and y.abs().sum() > 0
    assert m(x, torch.tensor([3, 999])).shape == (2, 5, *size)                    # DDPM steps (long)
    assert m(x, torch.tensor(0.5)).shape == (2, 5, *size)                         # one t for the batch


def test_presets_and_long_vs_float_time():
    for name in ("dit-tiny", "dit-small", "dit-base"):
        assert dit_config(name).extra["preset"] == name
    assert dit_config("dit-tiny", in_channels=4).channels_out == 4
    m = randomize(_model(), scale=0.2)
    x = torch.randn(2, 3, 2, 4, 4)
    # float t in [0, 1] is flow-matching time, embedded as t * 1000: the same as DDPM step 500
    assert_close(m(x, torch.tensor([0.5, 0.25])), m(x, torch.tensor([500, 250])), atol=0, rtol=0, name="t")


@pytest.mark.exercise("8.2")
@pytest.mark.parametrize("attention", ["full", "factorized"])
def test_fresh_model_outputs_zero_and_every_block_is_identity(attention):
    m = _model(attention=attention, context_dim=8, pooled_dim=5).double()
    x = torch.randn(2, 3, 3, 4, 6, dtype=F64)
    kw = dict(context=torch.randn(2, 4, 8, dtype=F64), context_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool(),
              pooled=torch.randn(2, 5, dtype=F64))
    assert torch.equal(m(x, torch.tensor([0.3, 0.7]), **kw), torch.zeros_like(x))
    h, c = torch.randn(2, 3 * 2 * 3, 24, dtype=F64), torch.randn(2, 24, dtype=F64)
    rope = Rope3D(12)
    cos, sin = rope.cos_sin((3, 2, 3), dtype=F64)
    for blk in m.blocks:
        out = blk(h, c, (3, 2, 3), lambda z: rope.apply(z, cos=cos, sin=sin), kw["context"], kw["context_mask"])
        assert torch.equal(out, h), "a fresh DiT block must be the identity (adaLN-Zero)"


def test_adaln_zero_init_is_explicit_and_still_learns():
    m = _model(context_dim=8)
    for blk in m.blocks:
        assert blk.adaLN.proj[-1].weight.abs().sum() == 0 and blk.adaLN.proj[-1].bias.abs().sum() == 0
        assert blk.cross.proj.weight.abs().sum() == 0 and blk.cross.proj.bias is None
        assert blk.attn.qkv.weight.std() > 0 and blk.mlp[0].weight.std() > 0          # the rest is not zero
    for p in (m.final.adaLN.proj[-1].weight, m.final.linear.weight, m.final.linear.bias):
        assert p.abs().sum() == 0
    # initialize_weights() re-zeroes whatever it is given (it does not rely on constructors)
    randomize(m, scale=0.2).initialize_weights()
    assert m.blocks[0].adaLN.proj[-1].weight.abs().sum() == 0 and m.final.linear.weight.abs().sum() == 0
    # zero init is not a dead init: step 1 opens the output layer, step 2 the gates, then everything learns
    x, ctx = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 8)
    for _ in range(3):                                                             # plain SGD, lr 0.1
        m.zero_grad()
        (m(x, torch.tensor([0.2, 0.8]), context=ctx) - x).pow(2).mean().backward()
        with torch.no_grad():
            for p in m.parameters():
                p -= 0.1 * p.grad
    dead = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"no gradient at the third step: {dead}"


# ----------------------------------------------------------------------------- the block and attention


@pytest.mark.exercise("8.2")
@pytest.mark.parametrize("attention", ["full", "factorized"])
def test_block_matches_float64_reference(attention):
    cfg = _cfg(attention=attention, context_dim=8)
    torch.manual_seed(0)
    blk = randomize(DiTBlock(cfg), scale=0.3).double()
    grid, B, D = (3, 2, 2), 2, 24
    x, c = torch.randn(B, 12, D, dtype=F64), torch.randn(B, D, dtype=F64)
    ctx, mask = torch.randn(B, 5, 8, dtype=F64), torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]).bool()
    rope = Rope3D(12)
    cos, sin = rope.cos_sin(grid, dtype=F64)
    out = blk(x, c, grid, lambda z: rope.apply(z, cos=cos, sin=sin), ctx, mask)

    lin = blk.adaLN.proj[-1]
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (F.silu(c) @ lin.weight.T + lin.bias).chunk(6, -1)
    ln = lambda z: F.layer_norm(z, (D,), eps=1e-6)                                    # noqa: E731
    h = ln(x) * (1 + scale_a[:, None]) + shift_a[:, None]
    x1 = x + gate_a[:, None] * _ref_self_attention(blk.attn, h, grid, rope)
    cr = blk.cross
    q = cr.q(blk.norm_cross(x1)).reshape(B, 12, 2, 12).transpose(1, 2)
    k, v = cr.kv(ctx).reshape(B, 5, 2, 2, 12).permute(2, 0, 3, 1, 4)
    x2 = x1 + cr.proj(naive_attention(q, k, v, mask=mask[:, None, None]).transpose(1, 2).reshape(B, 12, D))
    h = ln(x2) * (1 + scale_m[:, None]) + shift_m[:, None]
    expected = x2 + gate_m[:, None] * blk.mlp(h)
    assert_close(out, expected, atol=1e-10, rtol=1e-10, name=f"DiT block ({attention})")


@pytest.mark.parametrize("grid", [(3, 2, 2), (1, 3, 2), (4, 1, 1), (2, 3, 1)])
@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_factorized_attention_reshape_matches_masked_reference(grid, impl):
    L = grid[0] * grid[1] * grid[2]
    q, k, v = torch.randn(3, 2, 2, L, 6, dtype=F64)
    same_frame, same_pos = _masks(grid)
    expected = naive_attention(q, k, naive_attention(q, k, v, mask=same_frame), mask=same_pos)
    assert_close(factorized_attention(q, k, v, grid, impl), expected, atol=1e-12, rtol=1e-10, name="factorized")
    # the dense map the notebook shows is the same operator
    assert_close(attention_probs(q, k, grid, "factorized") @ v, expected, atol=1e-12, rtol=1e-10, name="A_t A_s")
    if grid[0] == 1:  # one frame: spatial attention sees everything, temporal is the identity
        assert_close(expected, naive_attention(q, k, v), atol=1e-12, rtol=1e-10, name="one frame == full")
    with pytest.raises(ValueError, match="tokens"):
        factorized_attention(q, k, v, (grid[0] + 1, grid[1], grid[2]))


def test_full_and_factorized_have_equal_parameters_and_agree_on_one_frame():
    for kw in (dict(), dict(context_dim=8, pooled_dim=4), dict(dim=48, heads=4, depth=3, patch=(2, 2, 2))):
        full, fact = _model(**kw), _model(attention="factorized", **kw)
        assert count_params(full) == count_params(fact)
        assert {k: v.shape for k, v in full.state_dict().items()} == {k: v.shape for k, v in fact.state_dict().items()}
    full = randomize(_model(), scale=0.2).double()
    fact = _model(attention="factorized").double()
    fact.load_state_dict(full.state_dict())
    x1, t = torch.randn(2, 3, 1, 6, 8, dtype=F64), torch.tensor([0.2, 0.6])
    assert_close(fact(x1, t), full(x1, t), atol=1e-12, rtol=1e-10, name="one-frame clip")
    x3 = torch.randn(2, 3, 3, 6, 8, dtype=F64)
    assert (fact(x3, t) - full(x3, t)).abs().max() > 1e-3, "on a clip the two attention patterns must differ"


def test_model_flops_factorized_is_cheaper_on_long_clips():
    full, fact = _model(), _model(attention="factorized")
    f_full, f_fact = model_flops(full, T=4, size=16), model_flops(fact, T=4, size=16)     # L = 4*8*8 = 256 tokens
    assert isinstance(f_full, int) and f_fact > 0
    # the only difference is the scores: L^2 vs L (nh*nw + nt) per head (q.k and p.v, 2 FLOPs each), 2 blocks
    L, d = 256, 24
    assert f_full - f_fact == 2 * (2 * 2 * L * L * d - 2 * 2 * L * (64 + 4) * d)


# ----------------------------------------------------------------------------- positions, text, maps


def test_rope_depends_on_offsets_only_and_sincos_does_not():
    x, t = torch.randn(2, 3, 3, 4, 6, dtype=F64), torch.tensor([0.3, 0.8])
    for attention in ("full", "factorized"):
        m = randomize(_model(attention=attention), scale=0.2).double()
        assert_close(m(x, t, pos_offset=(5, -3, 7)), m(x, t), atol=1e-9, rtol=1e-9, name="RoPE shift invariance")
    m = randomize(_model(rope=False), scale=0.2).double()
    assert (m(x, t, pos_offset=(5, -3, 7)) - m(x, t)).abs().max() > 1e-3, "absolute positions must see the shift"


def test_cross_attention_all_false_mask_is_no_text():
    m = randomize(_model(context_dim=8), scale=0.2).double()
    x, t, ctx = torch.randn(2, 3, 2, 4, 4, dtype=F64), torch.tensor([0.4, 0.9]), torch.randn(2, 5, 8, dtype=F64)
    none = torch.zeros(2, 5, dtype=torch.bool)
    assert torch.equal(m(x, t, context=ctx, context_mask=none), m(x, t))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]).bool()
    y = m(x, t, context=ctx, context_mask=mask)
    ctx2 = ctx.clone()
    ctx2[:, 3:] = 100.0                                                            # padding: ignored
    assert_close(m(x, t, context=ctx2, context_mask=mask), y, atol=1e-12, rtol=1e-12, name="padding ignored")
    assert (y - m(x, t)).abs().max() > 1e-3, "real text tokens must change the output"
    mixed = torch.stack([none[0], mask[1]])                                        # item 0 without text
    assert_close(m(x, t, context=ctx, context_mask=mixed)[0], m(x, t)[0], atol=1e-12, rtol=1e-12, name="no-text item")


def test_attention_maps():
    m = randomize(_model(context_dim=8, attention="factorized"), scale=0.2)
    x, mask = torch.randn(2, 3, 2, 4, 6), torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()
    maps = m.attention_maps(x, torch.tensor([0.5, 0.5]), context=torch.randn(2, 3, 8), context_mask=mask)
    assert maps["grid"] == (2, 2, 3) and len(maps["self"]) == 2 and len(maps["cross"]) == 2
    for a in maps["self"]:
        assert a.shape == (2, 2, 12, 12)
        assert_close(a.sum(-1), torch.ones(2, 2, 12), atol=1e-5, rtol=0, name="self rows")
        assert (a > 0).all(), "space then time reaches every token in one block"
    for a in maps["cross"]:
        assert a.shape == (2, 2, 12, 3)
        assert_close(a[0].sum(-1), torch.ones(2, 12), atol=1e-5, rtol=0, name="cross rows")
        assert a[0, :, :, 2].abs().max() == 0 and a[1].abs().max() == 0, "padding and no-text items get no weight"
    assert all(b.attn.record is None for b in m.blocks), "recording is switched off afterwards"


def test_errors():
    with pytest.raises(ValueError, match="heads"):
        _cfg(dim=24, heads=5)
    with pytest.raises(ValueError, match="attention must be"):
        _cfg(attention="axial")
    with pytest.raises(ValueError, match="rope needs"):
        _cfg(dim=24, heads=6)                                                      # head dim 4 < 6
    with pytest.raises(ValueError, match="patch must be"):
        _cfg(patch=(1, 0, 2))
    with pytest.raises(ValueError, match="unknown DiT preset"):
        dit_config("dit-huge")
    m = _model(pooled_dim=4)
    x, t = torch.randn(2, 3, 2, 4, 4), torch.tensor([0.1, 0.2])
    for call, msg in [
        (lambda: m(torch.randn(2, 4, 2, 4, 4), t), r"x must be video \(B, 3"),
        (lambda: m(torch.randn(2, 3, 2, 5, 4), t), "divisible by the patch"),
        (lambda: m(x, torch.tensor([0.1, 0.2, 0.3])), r"t must be \(B,\)"),
        (lambda: m(x, torch.tensor([0.5, 2.0])), r"flow-matching time in \[0, 1\]"),
        (lambda: m(x, t, context=torch.randn(2, 3, 8)), "context_dim=None"),
        (lambda: m(x, t, context_mask=torch.ones(2, 3).bool()), "without context"),
        (lambda: m(x, t, pooled=torch.randn(2, 3)), r"pooled must be \(B, pooled_dim\)"),
    ]:
        with pytest.raises(ValueError, match=msg):
            call()
    m = _model(context_dim=8)
    with pytest.raises(ValueError, match=r"context must be \(B, Lc, context_dim\)"):
        m(x, t, context=torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match=r"context_mask must be \(B, Lc\)"):
        m(x, t, context=torch.randn(2, 3, 8), context_mask=torch.ones(2, 4).bool())
    with pytest.raises(ValueError, match="pooled_dim=None"):
        m(x, t, pooled=torch.randn(2, 3))
