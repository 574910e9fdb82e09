"""Chapter 08 exercises (the diffusion transformer on spacetime patches: DiT, arXiv:2212.09748; flow matching,
arXiv:2209.03003 / arXiv:2210.02747): checkers shared by the notebook and the tests, hints, and known mistakes.

8.1 `patchify` (`minivid/ops/patches.py`): a clip (B, C, T, H, W) cut into (pt, ph, pw) boxes, one token each;
8.2 the adaLN-Zero block (`DiTBlock.forward`, `minivid/models/dit.py`): modulated LayerNorms, gated residual
branches, the text cross-attention between them; 8.3 `flow_interpolate` (`minivid/diffusion/flow.py`): the straight
path x_t = (1 - t) x0 + t noise and its velocity noise - x0. Each checker runs the learner's code (default:
minivid's) in float64 against a reference written out here another way - 8.1 box by box with slices, 8.2 from the
formulas with the LayerNorm and the modulation spelled out, 8.3 item by item - and on failure compares the answer
with the usual wrong ones and says what to fix. A pass prints one line and returns True; a failure raises
AssertionError (NotImplementedError while the exercise is a stub). The meta-test substitutes every mistake below and
requires a test marked for that exercise to fail on it.
"""
from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F

from minivid.exercises.base import Mistake, failed, guarded, passed

_TOL = 1e-10                   # float64 throughout
_TITLES = {"8.1": "spacetime patchify", "8.2": "the adaLN-Zero block", "8.3": "the flow-matching target"}
_WHERE = {"8.1": "minivid/ops/patches.py (patchify)", "8.2": "minivid/models/dit.py (DiTBlock.forward)",
          "8.3": "minivid/diffusion/flow.py (flow_interpolate)"}
_CRASH_HINTS = {
    "8.1": "reshape (B, C, T, H, W) to (B, C, nt, pt, nh, ph, nw, pw), permute to (B, nt, nh, nw, C, pt, ph, pw), "
           "then reshape to (B, nt*nh*nw, C*pt*ph*pw) (a permuted tensor needs reshape, not view)",
    "8.2": "the six vectors are (B, D); modulate(h, shift, scale) and gate(y, g) broadcast them over the L tokens; "
           "cross-attention runs only when context is not None",
    "8.3": "t is (B,): use tt, already shaped (B, 1, ..., 1) to broadcast over x0 of any rank",
}


def _run(ex: str, fn, *args, **kwargs):
    """fn(...) for exercise ex: see `minivid.exercises.base.guarded`."""
    return guarded(ex, _WHERE[ex], _TITLES[ex], fn, *args, hint=_CRASH_HINTS[ex], **kwargs)


def _diff(a, b) -> float:
    if not torch.is_tensor(a) or not torch.is_tensor(b) or a.shape != b.shape:
        return float("inf")
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


# ----------------------------------------------------------------------------- 8.1

def _patch3(patch) -> tuple[int, int, int]:
    return (patch,) * 3 if isinstance(patch, int) else tuple(patch)


def _patchify_ref(x: torch.Tensor, patch) -> torch.Tensor:
    """Box by box, in (t, h, w) row-major order: each box of all C channels flattened (C, pt, ph, pw)."""
    pt, ph, pw = _patch3(patch)
    B, C, T, H, W = x.shape
    rows = [x[:, :, a:a + pt, b:b + ph, c:c + pw].reshape(B, -1)
            for a in range(0, T, pt) for b in range(0, H, ph) for c in range(0, W, pw)]
    return torch.stack(rows, 1)                                                    # (B, L, C*pt*ph*pw)


def _channels_last(x: torch.Tensor, patch) -> torch.Tensor:
    pt, ph, pw = _patch3(patch)
    B, C, T, H, W = x.shape
    y = x.reshape(B, C, T // pt, pt, H // ph, ph, W // pw, pw).permute(0, 2, 4, 6, 3, 5, 7, 1)
    return y.reshape(B, -1, C * pt * ph * pw)


def _token_sets(tok: torch.Tensor) -> torch.Tensor:
    """Each token's values sorted, then the tokens sorted by their smallest value: equal iff the same boxes."""
    s = tok.sort(-1).values
    return torch.gather(s, 1, s[..., :1].argsort(1).expand_as(s))


def check_patchify(fn: Callable | None = None) -> bool:
    """Exercise 8.1: `patchify(x, patch)` -> (B, L, C*pt*ph*pw), L = (T/pt)(H/ph)(W/pw) tokens in (t, h, w)
    row-major order, each token's values ordered (C, pt, ph, pw).

    fn: a function with that signature, e.g. your own version; default: minivid's.
    """
    if fn is None:
        from minivid.ops.patches import patchify as fn
    ex, title = "8.1", _TITLES["8.1"]
    cases = [((1, 4, 5, 8, 8), (1, 2, 2)), ((2, 3, 4, 6, 8), (2, 3, 2)), ((2, 2, 3, 4, 6), (3, 1, 2)),
             ((1, 3, 2, 6, 3), (1, 3, 3)), ((1, 2, 4, 4, 4), 2), ((2, 3, 2, 2, 2), (1, 1, 1))]
    for shape, patch in cases:
        x = torch.arange(torch.Size(shape).numel(), dtype=torch.float64).reshape(shape)  # every value tells its place
        got, want = _run(ex, fn, x.clone(), patch), _patchify_ref(x, patch)
        if _diff(got, want) <= _TOL:
            continue
        B, C = shape[:2]
        pt, ph, pw = _patch3(patch)
        L, Fd = want.shape[1:]
        what = f"patchify(x of shape {shape}, patch={patch})"
        if not torch.is_tensor(got):
            raise failed(ex, title, f"{what} returned {type(got).__name__}, expected a tensor (B, L, C*pt*ph*pw)")
        if got.shape != want.shape:
            hints = []
            if tuple(got.shape) == (B, Fd, L):
                hints.append("tokens are the rows: (B, L, C*pt*ph*pw), not (B, C*pt*ph*pw, L)")
            else:
                hints.append(f"{L} = ({shape[2]}/{pt})({shape[3]}/{ph})({shape[4]}/{pw}) tokens of {Fd} = "
                             f"{C}*{pt}*{ph}*{pw} values: use all three sizes of `patch`, not a fixed (1, 2, 2)")
            raise failed(ex, title, f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}", *hints)
        got, hints = got.detach().double(), []
        if torch.equal(got.sort(-1).values, want.sort(-1).values):
            if _diff(got, _channels_last(x, patch)) <= _TOL:
                hints.append("a transposed permute: the channels came out innermost, (pt, ph, pw, C). Each token is "
                             "(C, pt, ph, pw), channel outermost: permute(0, 2, 4, 6, 1, 3, 5, 7)")
            else:
                hints.append("every token holds the right values, in the wrong order: (C, pt, ph, pw), channel "
                             "outermost, then time, height, width within the box")
            hints.append("that order is what makes a Linear on the tokens equal a Conv3d with kernel = stride = "
                         "patch (its weight flattened), and what unpatchify undoes")
        elif torch.equal(_token_sets(got), _token_sets(want)):
            hints.append("the right boxes, in the wrong token order: tokens run row-major over the (nt, nh, nw) "
                         "grid, time outermost, then height, then width")
        elif torch.equal(got, x.reshape(B, L, Fd)):
            hints.append("a plain reshape mixes values of different boxes into one token: reshape to (B, C, nt, pt, "
                         "nh, ph, nw, pw) first, permute the box indices (nt, nh, nw) in front, then flatten")
        else:
            hints.append("a token must hold exactly the values of one pt x ph x pw box, all C channels")
        bad = int((got - want).abs().amax(-1).gt(_TOL).flatten().nonzero()[0]) % L
        nh, nw = shape[3] // ph, shape[4] // pw
        at = (bad // (nh * nw), bad // nw % nh, bad % nw)
        raise failed(ex, title, f"{what}: token {bad} is not the box at (t, h, w) = {at} of the patch grid "
                     f"(max difference {_diff(got, want):.3g})", *hints)
    return passed(ex, title)


# ----------------------------------------------------------------------------- 8.2

_BLOCK_MISTAKES = {   # what a wrong block does -> what to fix
    "attn ungated": "the attention branch is added without its gate: x = x + gate(self.attn(...), gate_msa). "
                    "With adaLN-Zero the gate starts at 0, so a fresh block is the identity",
    "mlp ungated": "the MLP branch is added without its gate: x = x + gate(self.mlp(...), gate_mlp)",
    "no 1 +": "modulate(h, shift, scale) is h * (1 + scale) + shift: a zero scale must leave h alone "
              "(use minivid.ops.modulate)",
    "shift/scale swapped": "the six vectors come as (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp): "
                           "modulate(norm(x), shift, scale), shift first",
    "msa/mlp swapped": "the first three vectors (_msa) belong to the attention branch, the last three (_mlp) to the MLP",
    "parallel": "the MLP reads x after the attention (and text) update: the branches run one after the other, "
                "norm2 of the new x, not of the block's input",
    "no text": "with context, the text cross-attention comes between the two branches, ungated and unmodulated: "
               "x = x + self.cross(self.norm_cross(x), context, context_mask)",
    "no rope": "pass the positions on: self.attn(h, grid, rope) (RoPE rotates q and k; without it no token knows "
               "where it is)",
    "no residual": "the residual is missing: each branch is ADDED to x, x = x + gate(branch, g)",
}


def _ln(h: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine parameters (eps 1e-6), written out."""
    mu = h.mean(-1, keepdim=True)
    return (h - mu) / torch.sqrt((h - mu).pow(2).mean(-1, keepdim=True) + 1e-6)


def _block_ref(blk, x, c, grid, rope, context, mask, wrong: str | None = None) -> torch.Tensor:
    lin = blk.adaLN.proj[-1]
    mods = [m[:, None, :] for m in (F.silu(c) @ lin.weight.T + lin.bias).chunk(6, -1)]     # six (B, 1, D)
    if wrong == "msa/mlp swapped":
        mods = mods[3:] + mods[:3]
    sh1, sc1, g1, sh2, sc2, g2 = mods
    if wrong == "shift/scale swapped":
        sh1, sc1, sh2, sc2 = sc1, sh1, sc2, sh2
    mod = (lambda h, sh, sc: h * sc + sh) if wrong == "no 1 +" else (lambda h, sh, sc: h * (1 + sc) + sh)
    res = (lambda z: 0) if wrong == "no residual" else (lambda z: z)
    y = blk.attn(mod(_ln(x), sh1, sc1), grid, None if wrong == "no rope" else rope)
    x1 = res(x) + (y if wrong == "attn ungated" else g1 * y)
    if context is not None and wrong != "no text":
        x1 = x1 + blk.cross(blk.norm_cross(x1), context, mask)
    y = blk.mlp(mod(_ln(x if wrong == "parallel" else x1), sh2, sc2))
    return res(x1) + (y if wrong == "mlp ungated" else g2 * y)


def check_adaln_block(forward: Callable | None = None) -> bool:
    """Exercise 8.2: `DiTBlock.forward(self, x, c, grid, rope=None, context=None, context_mask=None)`:
    x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa)), then (with text) x + cross(norm_cross(x)), then
    x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp)); a fresh block (all six vectors 0) is the identity.

    forward: a function with the method's signature, e.g. your own version, run in place of the method; default:
    minivid's.
    """
    from minivid.models.dit import DiTBlock, DiTConfig, grid_positions
    from minivid.ops import Rope3D
    ex, title = "8.2", _TITLES["8.2"]
    grid, B, D = (3, 2, 2), 2, 12
    g = torch.Generator().manual_seed(8)
    x, c = torch.randn(B, 12, D, generator=g, dtype=torch.float64), torch.randn(B, D, generator=g, dtype=torch.float64)
    ctx = torch.randn(B, 4, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False], [False] * 4])                 # row 2: no text (guidance)
    rope = Rope3D(D // 2)
    cos, sin = rope.cos_sin_at(grid_positions(grid), dtype=torch.float64)

    def rotate(z):
        return rope.apply(z, cos=cos, sin=sin)

    def block(kind: str, fresh: bool):
        with torch.random.fork_rng(devices=[]):                           # every weight is set below
            blk = DiTBlock(DiTConfig(in_channels=3, dim=D, heads=2, context_dim=5, attention=kind)).double()
        with torch.no_grad():
            for name, prm in blk.named_parameters():
                if not (fresh and (name.startswith("adaLN") or name.startswith("cross.proj"))):
                    prm.copy_(0.3 * torch.randn(prm.shape, generator=g, dtype=prm.dtype))
                else:
                    prm.zero_()                                           # adaLN-Zero, and the text branch shut
        if forward is not None:
            blk.forward = types.MethodType(forward, blk)
        return blk

    # 1. at initialisation every gate is 0: the block must return x exactly
    blk = block("full", fresh=True)
    with torch.no_grad():
        got = _run(ex, blk, x, c, grid, rotate, ctx, mask)
    if _diff(got, x) > _TOL:
        hints = []
        if _diff(got, torch.zeros_like(x)) <= _TOL:
            hints.append(_BLOCK_MISTAKES["no residual"])
        for wrong in ("attn ungated", "mlp ungated"):
            if _diff(got, _block_ref(blk, x, c, grid, rotate, ctx, mask, wrong)) <= _TOL:
                hints.append(_BLOCK_MISTAKES[wrong])
        raise failed(ex, title, "a fresh block (adaLN-Zero: all six vectors 0, the text projection 0) changed its "
                     f"input by {_diff(got, x):.3g}; it must be the identity, x exactly",
                     *(hints or ["a zero gate must close its branch: x + gate(branch, g) adds exactly 0 when g = 0"]))

    # 2. trained-like weights (every vector non-zero), both attention patterns, with and without text
    for kind in ("full", "factorized"):
        blk = block(kind, fresh=False)
        for cx, mk, how in ((ctx, mask, "with text"), (None, None, "without text (context=None)")):
            with torch.no_grad():
                got = _run(ex, blk, x, c, grid, rotate, cx, mk)
                want = _block_ref(blk, x, c, grid, rotate, cx, mk)
                if _diff(got, want) <= _TOL:
                    continue
                hints = [h for wrong, h in _BLOCK_MISTAKES.items()
                         if _diff(got, _block_ref(blk, x, c, grid, rotate, cx, mk, wrong)) <= _TOL]
            raise failed(ex, title, f"a block with random weights ({kind} attention, {how}) differs from the "
                         f"reference by {_diff(got, want):.3g}" + ("" if torch.is_tensor(got) and got.shape == x.shape
                                                                   else f" (output {type(got).__name__} "
                                                                   f"{tuple(getattr(got, 'shape', ()))})"),
                         *(hints or ["x <- x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa), grid, rope); "
                                     "x <- x + cross(norm_cross(x), context, context_mask) when context is given; "
                                     "x <- x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp))"]))
    return passed(ex, title)


# ----------------------------------------------------------------------------- 8.3

def _path_ref(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Item by item: x_t = (1 - t) x0 + t noise, v = noise - x0."""
    x_t = torch.stack([(1 - float(ti)) * a + float(ti) * e for a, e, ti in zip(x0, noise, t)])
    return x_t, torch.stack([e - a for a, e in zip(x0, noise)])


def check_flow_target(fn: Callable | None = None) -> bool:
    """Exercise 8.3: `flow_interpolate(x0, noise, t)` -> (x_t, v): the point x_t = (1 - t) x0 + t noise on the
    straight path from data (t = 0) to noise (t = 1), and its velocity v = d x_t / dt = noise - x0.

    fn: a function with that signature, e.g. your own version; default: minivid's.
    """
    if fn is None:
        from minivid.diffusion.flow import flow_interpolate as fn
    ex, title = "8.3", _TITLES["8.3"]
    g = torch.Generator().manual_seed(83)
    cases = [((6, 2), [0.0, 1.0, 0.25, 0.5, 0.9, 0.3]), ((3, 4, 3, 5, 5), None), ((4, 1, 7), [0.6, 0.0, 1.0, 0.05])]
    for shape, ts in cases:
        x0 = torch.randn(shape, generator=g, dtype=torch.float64)
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        t = torch.tensor(ts, dtype=torch.float64) if ts else torch.rand(shape[0], generator=g, dtype=torch.float64)
        out = _run(ex, fn, x0.clone(), noise.clone(), t.clone())
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise failed(ex, title, f"returned {type(out).__name__}, expected the pair (x_t, v)", "return x_t, v")
        x_t, v = out
        want_x, want_v = _path_ref(x0, noise, t)
        what = f"x0 of shape {shape}, t = {[round(float(s), 3) for s in t]}"
        tt = t.reshape(-1, *[1] * (len(shape) - 1))
        if _diff(x_t, want_x) > _TOL:
            hints = []
            if _diff(x_t, want_v) <= _TOL and _diff(v, want_x) <= _TOL:
                hints.append("the pair is in the wrong order: return (x_t, v)")
            elif _diff(x_t, tt * x0 + (1 - tt) * noise) <= _TOL:
                hints.append("x0 and noise are swapped: t = 0 is the data (x_t = x0), t = 1 pure noise")
            elif _diff(x_t, (1 - tt).sqrt() * x0 + tt.sqrt() * noise) <= _TOL or \
                    _diff(x_t, torch.cos(tt * torch.pi / 2) * x0 + torch.sin(tt * torch.pi / 2) * noise) <= _TOL:
                hints.append("that is a variance-preserving (curved) path, chapter 01's kind; rectified flow walks the "
                             "straight line: weights (1 - t) and t, which sum to 1")
            elif _diff(x_t, x0 + tt * noise) <= _TOL:
                hints.append("the data must fade as the noise grows: (1 - t) x0 + t noise")
            raise failed(ex, title, f"x_t is wrong by {_diff(x_t, want_x):.3g} ({what})",
                         *(hints or ["x_t = (1 - tt) * x0 + tt * noise"]))
        if _diff(v, want_v) > _TOL:
            hints = []
            if _diff(v, x0 - noise) <= _TOL:
                hints.append("the velocity's sign is flipped: the path runs from data at t = 0 to noise at t = 1, so "
                             "d x_t / dt = noise - x0 (the sampler walks it backwards, from t = 1 to 0)")
            elif _diff(v, noise) <= _TOL:
                hints.append("that is the eps target of chapter 01; the velocity is the time derivative of x_t: "
                             "noise - x0")
            elif _diff(v, x0) <= _TOL or _diff(v, -x0) <= _TOL:
                hints.append("that is an x0 target; the velocity is the time derivative of x_t: noise - x0")
            elif _diff(v, noise - (1 - tt) * x0) <= _TOL or _diff(v, tt * noise - x0) <= _TOL:
                hints.append("v does not depend on t: differentiate (1 - t) x0 + t noise in t, noise - x0")
            raise failed(ex, title, f"v is wrong by {_diff(v, want_v):.3g} ({what})",
                         *(hints or ["v = d x_t / dt = noise - x0, the same at every t"]))
    return passed(ex, title)


CHECKS = {"8.1": check_patchify, "8.2": check_adaln_block, "8.3": check_flow_target}

HINTS = {
    "8.1": ["Cut (B, C, T, H, W) into (pt, ph, pw) blocks: reshape to (B, C, nt, pt, nh, ph, nw, pw).",
            "Tokens are ordered time, then height, then width; each token holds C * pt * ph * pw values with the "
            "channel outermost: permute to (B, nt, nh, nw, C, pt, ph, pw), then flatten."],
    "8.2": ["adaLN-Zero: each branch reads modulate(norm(x), shift, scale) and its output is multiplied by a gate "
            "before the residual add.",
            "The gates start at zero, so a fresh block is the identity: x + gate * branch(...)."],
    "8.3": ["Rectified flow walks a straight line from data (t = 0) to noise (t = 1).",
            "x_t = (1 - t) x0 + t noise; the velocity is its time derivative, noise - x0."],
}

MISTAKES = [
    Mistake("8.1", "a transposed permute (channels innermost)", "x.permute(0, 2, 4, 6, 1, 3, 5, 7)",
            "x.permute(0, 2, 4, 6, 3, 5, 7, 1)"),
    Mistake("8.2", "the attention branch without its gate",
            "x = x + gate(self.attn(modulate(self.norm1(x), shift_msa, scale_msa), grid, rope), gate_msa)",
            "x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa), grid, rope)"),
    Mistake("8.3", "the velocity's sign flipped", "v = noise - x0", "v = x0 - noise"),
]

__all__ = ["check_patchify", "check_adaln_block", "check_flow_target", "CHECKS", "HINTS", "MISTAKES"]
