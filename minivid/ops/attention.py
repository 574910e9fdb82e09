"""Exact attention three ways: a readable reference, a tiled FlashAttention-style op, and torch's SDPA.

The tiled op follows FlashAttention (Dao et al. 2022, arXiv:2205.14135) and its backward pass
from FlashAttention-2 (Dao 2023, arXiv:2307.08691), written in plain PyTorch so the same code
runs on CPU and CUDA tensors:

* forward: loop over tiles of keys, keep a running row max `m`, a running sum `l` and an
  un-normalised output `acc`; rescale them whenever the max grows (the *online softmax*,
  Milakov & Gimelshein 2018, arXiv:1805.02867). Only the output and the log-sum-exp
  `lse = m + log l` of every query row are saved for backward: O(L) memory, never O(L^2).
* backward: recompute each tile's probabilities from `lse` (`p = exp(s - lse)`) instead of
  storing them, and accumulate dq, dk, dv (and d bias) tile by tile.

Conventions shared by all three implementations (tests hold them to the same answers):

* q: (B, heads, Lq, D), k: (B, heads, Lk, D), v: (B, heads, Lk, Dv); scale 1/sqrt(D).
* bias: float, broadcastable to (B, heads, Lq, Lk), added to the scaled scores.
* mask: bool, broadcastable to (B, heads, Lq, Lk), True = this query may attend this key.
* causal: query i sees key j iff j <= i + (Lk - Lq) (aligned bottom-right, so a chunk of new
  queries sees the whole cached past; for Lq == Lk it is the usual lower triangle).
* a query row that can see no key at all (fully masked) gets output 0 and gradient 0.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

IMPLS = ("naive", "tiled", "sdpa", "auto")
NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- input checks
def _as_4d(t: torch.Tensor | None, name: str, target: tuple[int, ...]) -> torch.Tensor | None:
    """View `t` (bias or mask) as 4-D with leading 1s and check it broadcasts to `target`."""
    if t is None:
        return None
    if t.dim() > 4:
        raise ValueError(f"{name} must have at most 4 dims broadcastable to (B, heads, Lq, Lk)={target}, "
                         f"got shape {tuple(t.shape)}")
    t4 = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
    for have, want in zip(t4.shape, target):
        if have not in (1, want):
            raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to (B, heads, Lq, Lk)={target}")
    return t4


def _check_inputs(q, k, v, bias, mask):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor (B, heads, L, D), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"q, k, v must share (B, heads): got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have the head dim of q ({q.shape[-1]}), got k {tuple(k.shape)}")
    if v.shape[2] != k.shape[2]:
        raise ValueError(f"v must have as many positions as k ({k.shape[2]}), got v {tuple(v.shape)}")
    if bias is not None and (bias.dtype == torch.bool or not bias.is_floating_point()):
        raise ValueError(f"bias must be a float tensor (use mask= for booleans), got dtype {bias.dtype}")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = may attend), got dtype {mask.dtype}")
    target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return _as_4d(bias, "bias", target), _as_4d(mask, "mask", target)


def causal_mask(Lq: int, Lk: int, device=None, k_start: int = 0, k_end: int | None = None) -> torch.Tensor:
    """(Lq, k_end - k_start) bool, True where query i may see key j: j <= i + (Lk - Lq)."""
    k_end = Lk if k_end is None else k_end
    i = torch.arange(Lq, device=device).unsqueeze(1) + (Lk - Lq)
    j = torch.arange(k_start, k_end, device=device).unsqueeze(0)
    return j <= i


def _allowed(mask4, causal, Lq, Lk, device):
    """The combined bool mask (broadcastable to (B, heads, Lq, Lk)), or None when all is visible."""
    if not causal:
        return mask4
    c = causal_mask(Lq, Lk, device)
    return c if mask4 is None else (mask4 & c)


# ----------------------------------------------------------------------------- reference
def naive_attention(q, k, v, *, bias=None, mask=None, causal=False) -> torch.Tensor:
    """The readable reference: materialise all (B, heads, Lq, Lk) scores, softmax, weight v.

    q: (B, heads, Lq, D); k: (B, heads, Lk, D); v: (B, heads, Lk, Dv) -> (B, heads, Lq, Dv).
    Memory O(Lq * Lk) per head, in forward and again in backward (autograd keeps the probabilities).
    """
    bias4, mask4 = _check_inputs(q, k, v, bias, mask)
    Lq, Lk = q.shape[2], k.shape[2]
    s = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, heads, Lq, Lk)
    if bias4 is not None:
        s = s + bias4.to(s.dtype)
    allowed = _allowed(mask4, causal, Lq, Lk, q.device)
    if allowed is not None:
        s = s.masked_fill(~allowed, NEG_INF)
    if allowed is None and bias4 is None:  # nothing can hide a whole row
        return torch.softmax(s, dim=-1) @ v
    empty = (s == NEG_INF).all(dim=-1, keepdim=True)  # (B, heads, Lq, 1): rows that see nothing
    p = torch.softmax(s.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return p @ v


# ----------------------------------------------------------------------------- tiled (FlashAttention-style)
def _score_tile(qs, k, bias4, mask4, causal, j0, j1):
    """Scaled scores of all queries against keys j0:j1, -inf where hidden: (B, heads, Lq, j1-j0)."""
    s = qs @ k[:, :, j0:j1].transpose(-2, -1).to(qs.dtype)
    if bias4 is not None:
        s += bias4[..., j0:j1] if bias4.shape[-1] > 1 else bias4
    if mask4 is not None:
        s.masked_fill_(~(mask4[..., j0:j1] if mask4.shape[-1] > 1 else mask4), NEG_INF)
    if causal:
        s.masked_fill_(~causal_mask(qs.shape[2], k.shape[2], qs.device, j0, j1), NEG_INF)
    return s


def _acc_dtype(dtype):
    """Half-precision inputs accumulate in float32 (as the CUDA kernels do)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def tiled_attention_forward(q, k, v, bias4=None, mask4=None, causal=False, block_size=64):
    """Forward pass over tiles of `block_size` keys; returns (out (B,h,Lq,Dv), lse (B,h,Lq,1)).

    bias4 / mask4 are 4-D (see `_check_inputs`). Empty rows get out = 0 and lse = -inf.
    """
    B, Hh, Lq, D = q.shape
    Lk, Dv = k.shape[2], v.shape[-1]
    dt = _acc_dtype(q.dtype)
    qs = q.to(dt) * (D ** -0.5)
    bias4 = None if bias4 is None else bias4.to(dt)
    m = torch.full((B, Hh, Lq, 1), NEG_INF, dtype=dt, device=q.device)  # running row max
    l_sum = torch.zeros((B, Hh, Lq, 1), dtype=dt, device=q.device)  # running sum l of exp(s - m)
    acc = torch.zeros((B, Hh, Lq, Dv), dtype=dt, device=q.device)  # running sum of exp(s - m) v
    for j0 in range(0, Lk, block_size):
        j1 = min(j0 + block_size, Lk)
        s = _score_tile(qs, k, bias4, mask4, causal, j0, j1)  # (B, heads, Lq, bk)
        v_j = v[:, :, j0:j1].to(dt)  # (B, heads, bk, Dv)
        ### BEGIN SOLUTION  # exercise A.1: online-softmax update
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        m_use = m_new.masked_fill(m_new == NEG_INF, 0.0)  # a row that has seen nothing yet: avoid -inf - -inf
        alpha = torch.exp(m - m_use)  # <= 1: moves the old sums from the old max to the new one
        p = s.sub_(m_use).exp_()  # exp(s - m_new), in place: one tile of memory
        l_sum = alpha * l_sum + p.sum(dim=-1, keepdim=True)
        acc = alpha * acc + p @ v_j
        m = m_new
        ### END SOLUTION
    out = acc / l_sum.masked_fill(l_sum == 0, 1.0)  # empty rows: acc = 0, so out = 0
    lse = torch.where(l_sum > 0, m + l_sum.log(), torch.full_like(m, NEG_INF))
    return out.to(q.dtype), lse


def tiled_attention_backward(dout, q, k, v, out, lse, bias4, mask4, causal, block_size, need_dbias):
    """Gradients (dq, dk, dv, dbias4) recomputing each tile's probabilities from the saved lse."""
    D = q.shape[-1]
    dt = _acc_dtype(q.dtype)
    scale = D ** -0.5
    qs, do = q.to(dt) * scale, dout.to(dt)
    bias_dt = None if bias4 is None else bias4.to(dt)
    delta = (do * out.to(dt)).sum(dim=-1, keepdim=True)  # (B, heads, Lq, 1) = rowsum(dO * O)
    lse_use = lse.masked_fill(lse == NEG_INF, 0.0)  # empty rows: s = -inf everywhere, so p = 0
    dq = torch.zeros_like(qs)
    dk = torch.empty(k.shape, dtype=dt, device=k.device)
    dv = torch.empty(v.shape, dtype=dt, device=v.device)
    dbias = torch.zeros(bias4.shape, dtype=dt, device=bias4.device) if need_dbias else None
    full = (q.shape[0], q.shape[1], q.shape[2])
    for j0 in range(0, k.shape[2], block_size):
        j1 = min(j0 + block_size, k.shape[2])
        k_j, v_j = k[:, :, j0:j1].to(dt), v[:, :, j0:j1].to(dt)
        p = _score_tile(qs, k, bias_dt, mask4, causal, j0, j1).sub_(lse_use).exp_()  # (B, h, Lq, bk)
        dv[:, :, j0:j1] = p.transpose(-2, -1) @ do
        ds = (do @ v_j.transpose(-2, -1)).sub_(delta).mul_(p)  # dL/ds = p * (dL/dp - delta)
        dq += ds @ k_j
        dk[:, :, j0:j1] = ds.transpose(-2, -1) @ qs
        if dbias is not None:  # ds summed over the dims that bias broadcasts along
            dims = [d for d in range(3) if bias4.shape[d] == 1 and full[d] > 1]
            red = ds.sum(dim=dims, keepdim=True) if dims else ds
            if bias4.shape[-1] == 1:
                dbias += red.sum(dim=-1, keepdim=True)
            else:
                dbias[..., j0:j1] += red
    return (dq * scale).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias


class TiledAttention(torch.autograd.Function):
    """autograd.Function: saves q, k, v, bias, mask, out and lse; backward recomputes the tiles."""

    @staticmethod
    def forward(ctx, q, k, v, bias4, mask4, causal, block_size):
        out, lse = tiled_attention_forward(q, k, v, bias4, mask4, causal, block_size)
        ctx.save_for_backward(q, k, v, bias4, mask4, out, lse)
        ctx.causal, ctx.block_size = causal, block_size
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, bias4, mask4, out, lse = ctx.saved_tensors
        need_dbias = bias4 is not None and ctx.needs_input_grad[3]
        dq, dk, dv, dbias = tiled_attention_backward(
            dout, q, k, v, out, lse, bias4, mask4, ctx.causal, ctx.block_size, need_dbias)
        if dbias is not None:
            dbias = dbias.to(bias4.dtype)
        return dq, dk, dv, dbias, None, None, None


def tiled_attention(q, k, v, *, bias=None, mask=None, causal=False, block_size=64) -> torch.Tensor:
    """FlashAttention-style exact attention, O(Lq * block_size) extra memory. Shapes as `attention`."""
    bias4, mask4 = _check_inputs(q, k, v, bias, mask)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    out = TiledAttention.apply(q, k, v, bias4, mask4, bool(causal), block_size)
    return out


# ----------------------------------------------------------------------------- torch SDPA
def sdpa_attention(q, k, v, *, bias=None, mask=None, causal=False) -> torch.Tensor:
    """torch's F.scaled_dot_product_attention with our conventions (bottom-right causal, empty rows -> 0).

    Bias, mask and causality are folded into one `attn_mask`; rows that see no key are opened up
    (so no backend computes 0/0) and their output is set to 0 afterwards.
    """
    bias4, mask4 = _check_inputs(q, k, v, bias, mask)
    Lq, Lk = q.shape[2], k.shape[2]
    if bias4 is None and mask4 is None:
        if not causal:
            return F.scaled_dot_product_attention(q, k, v)
        if Lq == Lk:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    allowed = _allowed(mask4, causal, Lq, Lk, q.device)
    if bias4 is None:
        attn, empty = allowed, ~allowed.any(dim=-1, keepdim=True)
        fill = True
    else:
        attn = bias4.to(q.dtype)
        if allowed is not None:
            attn = attn.masked_fill(~allowed, NEG_INF)
        empty, fill = (attn == NEG_INF).all(dim=-1, keepdim=True), 0.0
    if not bool(empty.any()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn.masked_fill(empty, fill))
    return out.masked_fill(empty, 0.0)


_AUTO = ["sdpa"]                       # what impl="auto" runs (`auto_impl` changes it inside a block)


@contextlib.contextmanager
def auto_impl(impl: str):
    """Inside the block, impl="auto" attention runs `impl` - e.g. "naive" while torch's FlopCounterMode counts a
    step, since the counter does not see the CPU SDPA kernel (its FLOPs would be missed)."""
    if impl not in IMPLS or impl == "auto":
        raise ValueError(f"impl must be one of {tuple(i for i in IMPLS if i != 'auto')}, got {impl!r}")
    old, _AUTO[0] = _AUTO[0], impl
    try:
        yield
    finally:
        _AUTO[0] = old


def attention(q, k, v, *, bias=None, mask=None, causal=False, impl="auto", block_size=64) -> torch.Tensor:
    """Exact softmax attention.

    q: (B, heads, Lq, D); k: (B, heads, Lk, D); v: (B, heads, Lk, Dv) -> (B, heads, Lq, Dv).
    bias: float, broadcastable to (B, heads, Lq, Lk), added to q k^T / sqrt(D) (may require grad).
    mask: bool, broadcastable to (B, heads, Lq, Lk), True = may attend. causal: see module doc.
    impl: "naive" (reference), "tiled" (FlashAttention-style, `block_size` keys per tile),
    "sdpa" (torch built-in), "auto" (= "sdpa": it handles every case here and was the fastest
    measured, see chapters/appendix_ops.md). Rows that see no key give output 0.
    """
    if impl == "auto":
        impl = _AUTO[0]
    if impl == "naive":
        return naive_attention(q, k, v, bias=bias, mask=mask, causal=causal)
    if impl == "tiled":
        return tiled_attention(q, k, v, bias=bias, mask=mask, causal=causal, block_size=block_size)
    if impl in ("sdpa", "auto"):
        return sdpa_attention(q, k, v, bias=bias, mask=mask, causal=causal)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


__all__ = ["attention", "auto_impl", "naive_attention", "tiled_attention", "sdpa_attention", "tiled_attention_forward",
           "TiledAttention", "causal_mask"]
