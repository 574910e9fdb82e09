"""Chapter 02 exercises (minivid/text): checkers shared by the notebook and the tests, hints, known mistakes.

Each `check_*` runs the learner's function (default: the one in minivid) against a naive float64
reference written out here with loops, and on failure compares the answer with the usual mistakes
(a missing normalisation, one direction of the loss only, a forgotten 1/sqrt(d), an ignored mask,
a flipped coin...) to say what to fix. A pass prints one line and returns True; a failure raises
AssertionError with the diagnosis.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minivid.exercises.base import Mistake
from minivid.exercises.base import call as _call


def _ok(ex: str, what: str) -> bool:
    print(f"exercise {ex} ({what}): ok")
    return True


# ----------------------------------------------------------------------------- 2.1 contrastive loss

def naive_clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: float, pos: torch.Tensor | None = None) -> float:
    """Float64 loops: for images then captions, mean over rows of -sum_j target_ij log softmax_j(scale cos)."""
    img, txt = img.double(), txt.double()
    B = img.shape[0]
    pos = torch.eye(B, dtype=torch.bool) if pos is None else pos
    cos = torch.zeros(B, B, dtype=torch.float64)
    for i in range(B):
        for j in range(B):
            cos[i, j] = img[i] @ txt[j] / (img[i].norm() * txt[j].norm())
    total = 0.0
    for sims, P in ((scale * cos, pos), (scale * cos.T, pos.T)):
        for i in range(B):
            logz = math.log(sum(math.exp(float(s)) for s in sims[i]))
            k = int(P[i].sum())
            total += sum(-(float(sims[i, j]) - logz) / k for j in range(B) if P[i, j]) / B
    return total / 2


def check_clip_loss(fn: Callable | None = None) -> bool:
    """Exercise 2.1: `clip_loss(image_emb, text_emb, scale, positives=None)`."""
    if fn is None:
        from minivid.text.clip import clip_loss as fn
    where = "minivid/text/clip.py (clip_loss)"
    g = torch.Generator().manual_seed(21)
    B, E, scale = 6, 5, 3.0
    img, txt = torch.randn(B, E, generator=g), 2 * torch.randn(B, E, generator=g)
    pos = torch.eye(B, dtype=torch.bool)
    pos[0, 3] = pos[3, 0] = True                                # items 0 and 3 say the same thing
    for name, P in (("identity positives", None), ("a duplicate pair", pos)):
        got = float(_call("2.1", where, fn, img, txt, torch.tensor(scale), P))
        want = naive_clip_loss(img, txt, scale, P)
        if abs(got - want) <= 1e-5 * max(1.0, abs(want)):
            continue
        logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        raw = scale * img @ txt.T
        tgt = torch.arange(B)
        hints = {
            "the image->text direction only (average it with text->image)": F.cross_entropy(logits, tgt),
            "the text->image direction only (average it with image->text)": F.cross_entropy(logits.T, tgt),
            "the sum of both directions (take their mean)": F.cross_entropy(logits, tgt) + F.cross_entropy(logits.T, tgt),
            "logits without L2-normalising the embeddings": (F.cross_entropy(raw, tgt) + F.cross_entropy(raw.T, tgt)) / 2,
            "logits without the scale (temperature)": (F.cross_entropy(logits / scale, tgt)
                                                        + F.cross_entropy(logits.T / scale, tgt)) / 2,
        }
        hint = [h for h, v in hints.items() if abs(float(v) - got) < 1e-5 and P is None]
        extra = f"\n  -> your value equals {hint[0]}" if hint else (
            "\n  -> with several positives per row, the target is uniform over the row's positives "
            "(use target_i2t / target_t2i)" if P is not None else "")
        raise AssertionError(f"Exercise 2.1: clip_loss with {name}: got {got:.6f}, expected {want:.6f}{extra}")
    return _ok("2.1", "symmetric InfoNCE")


# ----------------------------------------------------------------------------- 2.2 cross-attention

@torch.no_grad()
def naive_cross_attention(h, ctx, q_proj: nn.Linear, kv_proj: nn.Linear, heads: int, mask=None):
    """Float64, one head and one query at a time: (out (N, Lq, C), probs (N, heads, Lq, L))."""
    h, ctx = h.double(), ctx.double()
    Wq, bq = q_proj.weight.double(), q_proj.bias.double()
    Wkv, bkv = kv_proj.weight.double(), kv_proj.bias.double()
    N, Lq, C = h.shape
    L, d = ctx.shape[1], C // heads
    mask = torch.ones(N, L, dtype=torch.bool) if mask is None else mask
    out = torch.zeros(N, Lq, C, dtype=torch.float64)
    probs = torch.zeros(N, heads, Lq, L, dtype=torch.float64)
    for n in range(N):
        q = h[n] @ Wq.T + bq
        kv = ctx[n] @ Wkv.T + bkv
        k, v = kv[:, :C], kv[:, C:]
        for a in range(heads):
            sl = slice(a * d, (a + 1) * d)
            for i in range(Lq):
                s = [float(q[i, sl] @ k[j, sl]) / math.sqrt(d) if mask[n, j] else -math.inf for j in range(L)]
                m = max(s)
                w = torch.tensor([math.exp(x - m) for x in s], dtype=torch.float64)
                probs[n, a, i] = w / w.sum()
                out[n, i, sl] = probs[n, a, i] @ v[:, sl]
    return out, probs


def check_cross_attention(fn: Callable | None = None) -> bool:
    """Exercise 2.2: `cross_attention(h, context, q_proj, kv_proj, heads, mask)` -> (out, probs)."""
    if fn is None:
        from minivid.text.xattn import cross_attention as fn
    where = "minivid/text/xattn.py (cross_attention)"
    torch.manual_seed(22)
    N, Lq, C, L, Dc, heads = 2, 5, 8, 4, 6, 2
    q_proj, kv_proj = nn.Linear(C, C), nn.Linear(Dc, 2 * C)
    h, ctx = torch.randn(N, Lq, C), torch.randn(N, L, Dc)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    with torch.no_grad():
        out, probs = _call("2.2", where, fn, h, ctx, q_proj, kv_proj, heads, mask)
        want_out, want_p = naive_cross_attention(h, ctx, q_proj, kv_proj, heads, mask)
    if tuple(probs.shape) != (N, heads, Lq, L) or tuple(out.shape) != (N, Lq, C):
        raise AssertionError(f"Exercise 2.2: shapes: got out {tuple(out.shape)}, probs {tuple(probs.shape)}; expected out "
                             f"{(N, Lq, C)}, probs {(N, heads, Lq, L)}")
    perr = float((probs.double() - want_p).abs().max())
    if perr > 1e-5:
        hints = []
        if float(probs[1, :, :, 1:].abs().max()) > 1e-6:
            hints.append("padding tokens got weight: fill masked scores with -inf before the softmax")
        _, unscaled = naive_cross_attention(h * math.sqrt(C // heads), ctx, q_proj, kv_proj, heads, mask)
        if float((probs.double() - unscaled).abs().max()) < 1e-4:
            hints.append("the scores are not divided by sqrt(d) (d = C // heads)")
        if not torch.allclose(probs.sum(-1).double(), torch.ones(N, heads, Lq, dtype=torch.float64), atol=1e-5):
            hints.append("rows do not sum to 1: take the softmax over the last (token) axis")
        raise AssertionError(f"Exercise 2.2: attention probabilities differ from the reference by {perr:.3g}"
                             + "".join(f"\n  -> {x}" for x in hints or ["check how q and k are split into heads"]))
    oerr = float((out.double() - want_out).abs().max())
    if oerr > 1e-5:
        raise AssertionError(f"Exercise 2.2: probabilities are right but the output differs by {oerr:.3g}: out = probs @ v, "
                             "then put the heads back side by side: (N, heads, Lq, d) -> (N, Lq, heads * d)")
    return _ok("2.2", "cross-attention forward")


# ----------------------------------------------------------------------------- 2.3 caption dropout

def check_caption_dropout(fn: Callable | None = None) -> bool:
    """Exercise 2.3: `caption_dropout({"ids", "mask"}, null, p, generator)` -> ({"ids", "mask"}, dropped)."""
    if fn is None:
        from minivid.text.conditioning import caption_dropout as fn
    where = "minivid/text/conditioning.py (caption_dropout)"
    B, L = 2000, 8                                   # hand-made encodings (independent of exercise 2.4)
    n = torch.arange(B) % 5 + 2                      # real tokens per row
    mask = torch.arange(L)[None, :] < n[:, None]
    ids = torch.where(mask, torch.randint(3, 60, (B, L), generator=torch.Generator().manual_seed(0)), 0)
    null_ids, null_mask = torch.tensor([2] + [0] * (L - 1)), torch.tensor([True] + [False] * (L - 1))
    for p in (0.0, 0.1, 1.0):
        g = torch.Generator().manual_seed(23)
        out, dropped = _call("2.3", where, fn, {"ids": ids, "mask": mask}, {"ids": null_ids, "mask": null_mask}, p, g)
        d_ids, d_mask = out["ids"], out["mask"]
        want = torch.rand(len(ids), generator=torch.Generator().manual_seed(23)) < p
        if dropped.dtype != torch.bool or dropped.shape != (len(ids),):
            raise AssertionError(f"Exercise 2.3: dropped must be a ({len(ids)},) bool tensor, got {tuple(dropped.shape)} {dropped.dtype}")
        if not torch.equal(dropped, want):
            rate = float(dropped.float().mean())
            hint = " (the comparison is flipped: drop where u < p)" if abs(rate - (1 - p)) < 0.03 else ""
            raise AssertionError(f"Exercise 2.3: with p={p} you dropped {rate:.3f} of the captions; expected {float(want.float().mean()):.3f}"
                                 f" with the coins u < p drawn before the region{hint}")
        if not (torch.equal(d_ids[dropped], null_ids.expand(int(dropped.sum()), -1))
                and torch.equal(d_mask[dropped], null_mask.expand(int(dropped.sum()), -1))):
            raise AssertionError("Exercise 2.3: dropped rows must become the null caption exactly: ids AND mask of \"\"")
        if not (torch.equal(d_ids[~dropped], ids[~dropped]) and torch.equal(d_mask[~dropped], mask[~dropped])):
            raise AssertionError("Exercise 2.3: rows that are not dropped must keep their ids and mask unchanged")
    return _ok("2.3", "caption dropout")


# ----------------------------------------------------------------------------- 2.4 packing token lists

def check_encode(fn: Callable | None = None) -> bool:
    """Exercise 2.4: `pad_and_mask(rows, max_len, pad_id)` -> (ids (B, L) long, mask (B, L) bool)."""
    from minivid.text.tokenizer import Tokenizer, pad_and_mask
    fn = fn or pad_and_mask
    where = "minivid/text/tokenizer.py (pad_and_mask)"
    tok = Tokenizer(max_len=8)
    prompts = ["a big red circle", "", "The tiny, lime wedge!", "a big red circle moving to the left"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # the last prompt is cut to max_len - 1 words
        cases = [("the tokenizer's rows of " + repr(prompts), [tok.tokenize(p) for p in prompts], 8, tok.pad_id),
                 ("rows [[0, 3, 0], [], [1, 2, 3, 4]] with pad_id 7 (a real token may be 0)",
                  [[0, 3, 0], [], [1, 2, 3, 4]], 4, 7)]
    for name, rows, L, pad in cases:
        ids, mask = _call("2.4", where, fn, rows, L, pad)
        if tuple(ids.shape) != (len(rows), L) or ids.dtype != torch.long or mask.dtype != torch.bool \
                or tuple(mask.shape) != (len(rows), L):
            raise AssertionError(f"Exercise 2.4: for {name} expected ids ({len(rows)}, {L}) long and mask "
                                 f"({len(rows)}, {L}) bool, got {tuple(ids.shape)} {ids.dtype}, {tuple(mask.shape)} "
                                 f"{mask.dtype}")
        for b, row in enumerate(rows):
            want = list(row) + [pad] * (L - len(row))
            if ids[b].tolist() != want:
                hint = " (the padding goes after the tokens, on the right)" if ids[b].tolist()[L - len(row):] == \
                    list(row) and row else ""
                raise AssertionError(f"Exercise 2.4: {name}, row {b}: ids {ids[b].tolist()}, expected {want}{hint}")
            mwant = [True] * len(row) + [False] * (L - len(row))
            if mask[b].tolist() != mwant:
                n = int(mask[b].sum())
                hint = (" (one short: the last real token, <eos>, counts)" if n == len(row) - 1 else
                        " (the padding must be False)" if n > len(row) else
                        " (mark the real tokens by position, not by comparing ids with a pad id)")
                raise AssertionError(f"Exercise 2.4: {name}, row {b}: mask {mask[b].tolist()}, expected {mwant}"
                                     f"{hint}")
    return _ok("2.4", "pad and mask")


CHECKS = {"2.1": check_clip_loss, "2.2": check_cross_attention, "2.3": check_caption_dropout, "2.4": check_encode}

HINTS = {
    "2.1": ["The logits are scale * cosine similarities: L2-normalise both embeddings, then one matrix product "
            "gives all B x B pairs.",
            "Cross-entropy of each row of logits against its target row (uniform over its positives: target_i2t), "
            "and of each column (logits.T against target_t2i); mean over rows.",
            "loss = (CE(images -> captions) + CE(captions -> images)) / 2 with log_softmax over the last axis."],
    "2.2": ["Project: q from h (N, Lq, C), keys and values from the context through kv_proj (first C outputs "
            "keys, last C values); split C into `heads` heads of d = C // heads.",
            "scores = q k^T / sqrt(d), (N, heads, Lq, L); masked tokens get -inf before the softmax over the last "
            "axis (the text tokens).",
            "out = probs @ v, then put the heads back side by side: (N, heads, Lq, d) -> (N, Lq, heads * d)."],
    "2.3": ["The coins u are drawn for you; an item is dropped when its coin says so with probability p.",
            "dropped = u < p (probability p); dropped rows take the null caption, for every key of cond.",
            "torch.where(dropped reshaped to (B, 1, ...), null[k], v) for each key k (null broadcasts over the batch)."],
    "2.4": ["Start from an all-pad ids tensor (B, max_len) and an all-False mask; fill each row from the left.",
            "ids[b, :len(row)] = the row; mask[b, :len(row)] = True: mark real tokens by their position (a "
            "token id may be anything, even 0).",
            "Check the empty row: it stays all pad and all False."],
}

MISTAKES = [
    Mistake("2.1", "the image->text direction only", "return (loss_i2t + loss_t2i) / 2", "return loss_i2t"),
    Mistake("2.1", "no L2 normalisation of the embeddings", "img = F.normalize(image_emb, dim=-1)",
            "img = image_emb"),
    Mistake("2.1", "the scale (inverse temperature) left out", "logits = scale * img @ txt.T",
            "logits = img @ txt.T"),
    Mistake("2.2", "scores not divided by sqrt(d)", "/ math.sqrt(d)", ""),
    Mistake("2.2", "the padding mask ignored", "if mask is not None:", "if False:"),
    Mistake("2.2", "softmax over the query axis", "scores.softmax(dim=-1)", "scores.softmax(dim=-2)"),
    Mistake("2.3", "the coin flipped: drops with probability 1 - p", "dropped = u < p", "dropped = u >= p"),
    Mistake("2.4", "the mask stops one token short (leaves out <eos>)", "mask[b, : len(row)] = True",
            "mask[b, : len(row) - 1] = True"),
    Mistake("2.4", "padding on the left", "ids[b, : len(row)] =", "ids[b, max_len - len(row):] ="),
]

__all__ = ["naive_clip_loss", "naive_cross_attention", "check_clip_loss", "check_cross_attention",
           "check_caption_dropout", "check_encode", "CHECKS", "HINTS", "MISTAKES"]
