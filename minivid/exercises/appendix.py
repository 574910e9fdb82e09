"""Appendix exercises (the ops behind the models): checkers shared by the tests and the reading, hints,
known mistakes.

A.1 is the online-softmax update inside `tiled_attention_forward` (FlashAttention, arXiv:2205.14135): only
`attention(..., impl="tiled")` runs it, the models use SDPA. A.2 is `causal_pad`, the front padding of a
causal conv (CogVideoX, arXiv:2408.06072); `CausalConv3d` pads with its own lines, so the video VAE of
chapter 07 never runs a learner's unfinished answer. Each checker compares with a float64 reference
(softmax over all keys at once; `F.pad(..., mode="replicate")`) and names the usual mistake.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from minivid.exercises.base import Mistake, call, failed, passed


def check_online_softmax(fn: Callable | None = None) -> bool:
    """Exercise A.1: the tiled forward (tiles of 3 keys, a ragged last tile, a masked-out row) equals softmax
    attention over all keys at once, and its log-sum-exp is each row's."""
    from minivid.ops.attention import _check_inputs, naive_attention, tiled_attention_forward
    fn = fn or tiled_attention_forward
    where = "minivid/ops/attention.py (tiled_attention_forward)"
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(1, 2, n, d, generator=g, dtype=torch.float64) for n, d in ((6, 4), (11, 4), (11, 3)))
    bias = 2 * torch.randn(2, 6, 11, generator=g, dtype=torch.float64)
    mask = torch.rand(1, 1, 6, 11, generator=g) > 0.3
    mask[..., 2, :] = False                                                     # a row that sees nothing
    out, lse = call("A.1", where, fn, q, k, v, *_check_inputs(q, k, v, bias, mask), causal=False, block_size=3)
    want = naive_attention(q, k, v, bias=bias, mask=mask)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(4) + bias
    want_lse = torch.logsumexp(s.masked_fill(~mask, float("-inf")), dim=-1)       # (1, 2, 6)
    err = float((out - want).abs().max())
    if not math.isfinite(err) or err > 1e-10:
        one = call("A.1", where, fn, q, k, v, *_check_inputs(q, k, v, bias, mask), causal=False, block_size=64)[0]
        single = float((one - want).abs().max()) < 1e-10
        raise failed("A.1", "online softmax", f"the output differs from softmax attention by {err:.3g}",
                     "with a single tile it is right, so the update across tiles is wrong: when the running max "
                     "grows, rescale the old sums l and acc by exp(m_old - m_new) before adding the new tile"
                     if single else "p = exp(s - m_new); l = alpha l + sum(p); acc = alpha acc + p @ v; m = m_new")
    got_lse = lse.squeeze(-1)
    empty = torch.isinf(want_lse)
    if not torch.equal(torch.isinf(got_lse), empty) or float((got_lse - want_lse)[~empty].abs().max()) > 1e-10:
        raise failed("A.1", "online softmax", "the output is right but the log-sum-exp is not",
                     "after the last tile, lse = m + log(l) for every row (m: the running max)")
    return passed("A.1", "online softmax")


def check_causal_pad(fn: Callable | None = None) -> bool:
    """Exercise A.2: `causal_pad(x, time_pad, cache)` puts the past in front of x: copies of the first frame at
    the start of a video, the cache for a later chunk."""
    from minivid.ops.causal_conv import causal_pad
    fn = fn or causal_pad
    where = "minivid/ops/causal_conv.py (causal_pad)"
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 4, 6, generator=g, dtype=torch.float64)
    cache = torch.randn(2, 3, 2, 4, 6, generator=g, dtype=torch.float64)
    for pad in (2, 3, 0):
        got = call("A.2", where, fn, x, pad)
        want = F.pad(x, (0, 0, 0, 0, pad, 0), mode="replicate")                  # frame 0 repeated, nothing behind
        if tuple(got.shape) != tuple(want.shape) or not torch.equal(got, want):
            behind = pad > 0 and tuple(got.shape) == tuple(want.shape) and torch.equal(got[:, :, :x.shape[2]], x)
            zeros = tuple(got.shape) == tuple(want.shape) and torch.equal(got, F.pad(x, (0, 0, 0, 0, pad, 0)))
            raise failed("A.2", "causal padding", f"time_pad={pad}, no cache: got shape {tuple(got.shape)}, expected "
                         f"{tuple(want.shape)} = {pad} copies of frame 0 then the {x.shape[2]} frames",
                         "the padding went behind the clip: causal means the past goes in FRONT" if behind else
                         "zeros in front make the first frames look like they faded in: repeat frame 0" if zeros else
                         "x[:, :, :1] repeated time_pad times, then x (torch.cat along dim 2)")
    got = call("A.2", where, fn, x, 2, cache)
    if tuple(got.shape) != (2, 3, 7, 4, 6) or not torch.equal(got, torch.cat([cache, x], 2)):
        raise failed("A.2", "causal padding", "with a cache the previous chunk's frames must go in front, unchanged "
                     f"(expected shape (2, 3, 7, 4, 6), got {tuple(got.shape)})",
                     "a later chunk has a true past: use the cache instead of repeating its first frame")
    return passed("A.2", "causal padding")


CHECKS = {"A.1": check_online_softmax, "A.2": check_causal_pad}

HINTS = {
    "A.1": ["Keep three running quantities per query row: the max m of the scores seen so far, the sum l of "
            "exp(s - m), and acc, the sum of exp(s - m) v.",
            "When a tile raises the max from m to m_new, everything summed so far was relative to the old max: "
            "multiply l and acc by alpha = exp(m - m_new) before adding the tile's p = exp(s - m_new).",
            "A row that has seen only -inf has m = -inf: use 0 in its place when subtracting, or exp(-inf - -inf) "
            "is nan."],
    "A.2": ["Causal: output frame t may only see input frames <= t, so all the padding goes in front of the clip.",
            "At the start of a video, repeat the first frame time_pad times (x[:, :, :1].expand(...)); in a later "
            "chunk the cache, the previous chunk's last frames, is the true past.",
            "torch.cat([front, x], dim=2)"],
}

MISTAKES = [
    Mistake("A.1", "the old sums not rescaled when the max grows",
            "l_sum = alpha * l_sum + p.sum(dim=-1, keepdim=True)", "l_sum = l_sum + p.sum(dim=-1, keepdim=True)"),
    Mistake("A.1", "the running max never updated", "        m = m_new\n", ""),
    Mistake("A.2", "the padding behind the clip (the future)", "torch.cat([front, x], dim=2)",
            "torch.cat([x, front], dim=2)"),
    Mistake("A.2", "the cache ignored (every chunk padded as a new video)", "if cache is None else cache",
            "if cache is None else x[:, :, :1].expand(-1, -1, time_pad, -1, -1)"),
]

__all__ = ["check_online_softmax", "check_causal_pad", "CHECKS", "HINTS", "MISTAKES"]
