"""minivid.ops attention: naive vs tiled vs SDPA in float64, gradcheck of the tiled backward, edge cases."""
import math

import pytest
import torch

from minivid.ops import attention, naive_attention, tiled_attention, tiled_attention_forward
from minivid.ops.attention import _check_inputs
from minivid.compare import assert_close, available_devices

DEVICES = available_devices()
F64 = torch.float64


def _loop_attention(q, k, v, bias=None, mask=None, causal=False):
    """An independent row-by-row definition (python loops, float64): the ground truth of the reference."""
    B, Hh, Lq, D = q.shape
    Lk = k.shape[2]
    s_all = torch.einsum("bhid,bhjd->bhij", q.double(), k.double()) / math.sqrt(D)
    if bias is not None:
        s_all = s_all + bias.double().expand(B, Hh, Lq, Lk)
    allow = torch.ones(B, Hh, Lq, Lk, dtype=torch.bool) if mask is None else mask.expand(B, Hh, Lq, Lk).cpu()
    out = torch.zeros(B, Hh, Lq, v.shape[-1], dtype=F64)
    for b in range(B):
        for h in range(Hh):
            for i in range(Lq):
                keys = [j for j in range(Lk) if allow[b, h, i, j] and (not causal or j <= i + Lk - Lq)]
                if not keys:
                    continue  # a row that sees nothing: output 0
                w = torch.softmax(s_all[b, h, i, keys].cpu(), dim=0)
                out[b, h, i] = (w[:, None] * v[b, h, keys].double().cpu()).sum(0)
    return out


def _inputs(device, B=2, Hh=3, Lq=13, Lk=11, D=5, Dv=4, dtype=F64, grad=True):
    g = torch.Generator().manual_seed(Lq * 100 + Lk)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device).requires_grad_(grad)  # noqa: E731
    return mk(B, Hh, Lq, D), mk(B, Hh, Lk, D), mk(B, Hh, Lk, Dv)


CASES = [  # (name, Lq, Lk, bias shape or None, mask kind or None, causal)
    ("plain", 13, 11, None, None, False),
    ("bias-per-head", 13, 11, (3, 13, 11), None, False),
    ("bias-per-key", 9, 14, (1, 1, 1, 14), None, False),
    ("mask-with-empty-rows", 13, 11, None, "empty", False),
    ("causal-square", 12, 12, None, None, True),
    ("causal-more-keys", 5, 12, (2, 3, 5, 12), None, True),
    ("causal-more-queries", 12, 5, None, None, True),  # the first 7 rows see nothing
    ("everything", 10, 13, (3, 1, 13), "empty", True),
]


def _make(case, device):
    name, Lq, Lk, bshape, mkind, causal = case
    q, k, v = _inputs(device, Lq=Lq, Lk=Lk)
    g = torch.Generator().manual_seed(7)
    bias = None if bshape is None else torch.randn(*bshape, generator=g, dtype=F64).to(device).requires_grad_()
    mask = None
    if mkind == "empty":
        mask = torch.rand(2, 1, Lq, Lk, generator=g) > 0.4
        mask[0, 0, 2] = False
        mask[1, 0, Lq - 1] = False  # fully masked rows
        mask = mask.to(device)
    return q, k, v, bias, mask, causal


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reference_matches_loop_definition(device, case):
    q, k, v, bias, mask, causal = _make(case, device)
    out = naive_attention(q, k, v, bias=bias, mask=mask, causal=causal)
    assert_close(out, _loop_attention(q, k, v, bias, mask, causal), atol=1e-12, rtol=1e-10, name="naive")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl,block", [("tiled", 1), ("tiled", 4), ("tiled", 64), ("sdpa", 0), ("auto", 0)])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_and_grads_match_reference(device, case, impl, block):
    q, k, v, bias, mask, causal = _make(case, device)
    leaves = [t for t in (q, k, v, bias) if t is not None]
    ref = naive_attention(q, k, v, bias=bias, mask=mask, causal=causal)
    out = attention(q, k, v, bias=bias, mask=mask, causal=causal, impl=impl, block_size=max(block, 1))
    assert not torch.isnan(out).any()
    assert_close(out, ref, atol=1e-12, rtol=1e-10, name=f"{impl} out")
    dout = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, leaves, dout)
    g_out = torch.autograd.grad(out, leaves, dout)
    for name, a, e in zip("q k v bias".split(), g_out, g_ref):
        assert_close(a, e, atol=1e-12, rtol=1e-10, name=f"{impl} d{name}")


@pytest.mark.exercise("A.1")
def test_exercise_online_softmax_update():
    """The tiled forward (online softmax over 3-key tiles, ragged last tile) equals the reference."""
    q, k, v, bias, mask, causal = _make(CASES[-1], "cpu")
    out, lse = tiled_attention_forward(q.detach(), k.detach(), v.detach(), *_check_inputs(q, k, v, bias.detach(), mask),
                                       causal=causal, block_size=3)
    assert_close(out, naive_attention(q, k, v, bias=bias, mask=mask, causal=causal), atol=1e-12, rtol=1e-10, name="out")
    # lse is the log-sum-exp of each row's visible scores; -inf for rows that see nothing
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]) + bias
    s = s.masked_fill(~(mask & (torch.arange(13)[None] <= torch.arange(10)[:, None] + 3)), float("-inf"))
    expected, got = torch.logsumexp(s, dim=-1), lse.squeeze(-1)
    empty = expected == float("-inf")
    assert empty.any() and torch.equal(got == float("-inf"), empty)
    assert_close(got[~empty], expected[~empty], atol=1e-12, rtol=1e-10, name="lse")


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_tiled_q_k_v_bias(device):
    q, k, v = _inputs(device, B=1, Hh=2, Lq=5, Lk=7, D=3, Dv=2)
    g = torch.Generator().manual_seed(3)
    bias = torch.randn(2, 5, 7, generator=g, dtype=F64).to(device).requires_grad_()
    mask = (torch.rand(1, 1, 5, 7, generator=g) > 0.3).to(device)
    mask[..., 1, :] = False

    def f(q, k, v, bias):
        return tiled_attention(q, k, v, bias=bias, mask=mask, causal=True, block_size=3)

    assert torch.autograd.gradcheck(f, (q, k, v, bias))
    key_bias = torch.randn(1, 7, generator=g, dtype=F64).to(device).requires_grad_()  # broadcast over queries
    assert torch.autograd.gradcheck(lambda b: tiled_attention(q, k, v, bias=b, block_size=2), (key_bias,))


@pytest.mark.parametrize("device", DEVICES)
def test_tiled_saves_no_quadratic_tensor(device):
    """What autograd keeps for backward is O(L): inputs, output, lse; never an (Lq, Lk) matrix."""
    q, k, v = _inputs(device, B=1, Hh=2, Lq=64, Lk=64, D=8, Dv=8, dtype=torch.float32)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        tiled_attention(q, k, v, causal=True, block_size=16).sum().backward()
    assert sizes and max(sizes) <= 2 * 64 * 8, sizes
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive_attention(q, k, v, causal=True).sum()
    assert max(sizes) >= 2 * 64 * 64  # the reference does keep the probabilities


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["naive", "tiled", "sdpa", "auto"])
def test_fully_masked_rows_give_zero_and_finite_grads_float32(device, impl):
    q, k, v = _inputs(device, B=1, Hh=2, Lq=6, Lk=9, D=4, Dv=4, dtype=torch.float32)
    mask = torch.ones(1, 1, 6, 9, dtype=torch.bool, device=device)
    mask[..., 3, :] = False
    bias = torch.zeros(6, 9, device=device)
    bias[0] = float("-inf")  # an additive -inf hides a row too
    out = attention(q, k, v, mask=mask, bias=bias, impl=impl, block_size=4)
    assert torch.equal(out[:, :, [0, 3]], torch.zeros_like(out[:, :, [0, 3]]))
    assert out[:, :, [1, 2, 4, 5]].abs().sum() > 0
    out.square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert torch.equal(q.grad[:, :, [0, 3]], torch.zeros_like(q.grad[:, :, [0, 3]]))


@pytest.mark.parametrize("device", DEVICES)
def test_float32_long_sequence_tiled_vs_sdpa(device):
    q, k, v = _inputs(device, B=1, Hh=2, Lq=300, Lk=257, D=16, Dv=16, dtype=torch.float32)
    ref = attention(q, k, v, causal=True, impl="sdpa")
    out = attention(q, k, v, causal=True, impl="tiled", block_size=64)
    assert_close(out, ref, atol=2e-5, rtol=1e-4, name="tiled vs sdpa (float32)")


def test_bad_inputs_raise_clear_errors():
    q, k, v = _inputs("cpu", grad=False)
    with pytest.raises(ValueError, match="q must be a 4-D"):
        attention(q[0], k, v)
    with pytest.raises(ValueError, match="v must have as many positions"):
        attention(q, k, v[:, :, :3])
    with pytest.raises(ValueError, match="mask must be a bool"):
        attention(q, k, v, mask=torch.ones(13, 11))
    with pytest.raises(ValueError, match="bias of shape"):
        attention(q, k, v, bias=torch.zeros(5, 11))
    with pytest.raises(ValueError, match="impl must be one of"):
        attention(q, k, v, impl="flash")
    with pytest.raises(ValueError, match="block_size"):
        attention(q, k, v, impl="tiled", block_size=0)


def test_auto_impl_makes_attention_countable_and_restores_sdpa():
    from torch.utils.flop_counter import FlopCounterMode

    from minivid.ops.attention import auto_impl
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=g) for _ in range(3))

    def counted():
        with FlopCounterMode(display=False) as fc:
            out = attention(q, k, v)
        return out, fc.get_total_flops()
    with auto_impl("naive"):
        out, flops = counted()
        assert torch.equal(out, naive_attention(q, k, v)), "auto runs the naive path inside the block"
    assert flops >= 2 * (2 * 3 * 17 * 17 * 8), "q k^T and the weighted sum of v are counted"
    sdpa, _ = counted()
    assert_close(sdpa, out, atol=1e-5, rtol=1e-5)          # back to SDPA after the block: the same function
    with pytest.raises(ValueError, match="impl must be one of"):
        with auto_impl("auto"):
            pass
