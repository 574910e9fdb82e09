"""Chapter 07 exercises (the causal video VAE of CogVideoX, arXiv:2408.06072, `minivid/models/video_vae.py`): checkers
shared by the notebook and the tests, hints, and known mistakes.

7.1 `latent_frames` (the 1 + 4k frame bookkeeping), 7.2 the conv-cache hand-off in `CachedCausalConv.forward`, 7.3
`chunk_spans` (which frames go in which chunk). Each checker runs the learner's function (default: minivid's) against
a reference written out here, and on failure compares the answer with the usual wrong ones and says what to fix:
7.1 on clip lengths of several compression factors, and on lengths that are no 1 + factor*k; 7.2 in float64 on one
conv cut into uneven chunks, on a stale cache at a new clip's first chunk, and on a whole small CausalVideoVAE
(chunked encoder and decoder == whole, the chunks written out by hand, so 7.3 is not needed); 7.3 on many lengths and
chunk sizes. The causal padding itself is exercise A.2 (`minivid.exercises.appendix.check_causal_pad`). The
meta-test substitutes every mistake below and requires a test marked for that exercise to fail on it.
"""
from __future__ import annotations

import numbers
import re
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F

from minivid.exercises.base import Mistake, call, failed, guarded, passed

_TOL = 1e-10                   # float64 throughout (7.2)
_TITLES = {"7.1": "the 1 + 4k frame count", "7.2": "the conv cache hand-off", "7.3": "the chunk spans"}
_WHERE = {"7.1": "minivid/models/video_vae.py (latent_frames)",
          "7.2": "minivid/models/video_vae.py (CachedCausalConv.forward)",
          "7.3": "minivid/models/video_vae.py (chunk_spans)"}


def _run(ex: str, fn, *args, **kwargs):
    """fn(...) for exercise ex: see `minivid.exercises.base.guarded`."""
    return guarded(ex, _WHERE[ex], _TITLES[ex], fn, *args, **kwargs)


# ----------------------------------------------------------------------------- 7.1

def _names(msg: str, *counts: int) -> bool:
    return all(re.search(rf"(?<!\d){c}(?!\d)", msg) for c in counts)


def check_frame_count(fn: Callable | None = None) -> bool:
    """Exercise 7.1: `latent_frames(T, factor=4)` -> 1 + k for T = 1 + factor * k (the first frame alone, then one
    latent frame per `factor` frames); any other T raises a ValueError that names the two nearest valid counts.

    fn: a function with that signature, e.g. your own version; default: minivid's.
    """
    if fn is None:
        from minivid.models.video_vae import latent_frames as fn
    ex, title = "7.1", _TITLES["7.1"]
    for factor, ks in ((4, (0, 1, 2, 3, 4, 12, 16)), (2, (0, 1, 3, 8)), (3, (0, 2, 5)), (1, (0, 1, 5))):
        for k in ks:
            T, want = 1 + factor * k, 1 + k
            try:
                got = _run(ex, fn, T, factor=factor)
            except AssertionError as e:
                if not isinstance(e.__cause__, ValueError):
                    raise
                raise failed(ex, title, f"latent_frames({T}, factor={factor}) raised ValueError({e.__cause__}), but "
                             f"{T} = 1 + {factor}*{k} is a valid count ({want} latent frames)",
                             "right for factor 4 only? the factor is hard-coded: use the `factor` argument"
                             if factor != 4 else "the remainder of divmod(T - 1, factor) is 0 here") from None
            if isinstance(got, numbers.Integral) and not isinstance(got, bool) and got == want:
                continue
            hints = []
            if not isinstance(got, numbers.Integral) or isinstance(got, bool):
                hints.append(f"return an int, not {type(got).__name__}: divmod(T - 1, factor) or // keeps it one")
            elif factor != 4 and got == 1 + (T - 1) // 4:
                hints.append("right for factor 4 only: the factor is hard-coded, use the `factor` argument")
            elif got == k:
                hints.append("the first frame was forgotten: it is a latent frame of its own (encoded alone, as an "
                             "image), so 1 + factor*k frames give 1 + k latent frames, not k")
            elif got == T:
                hints.append("nothing was compressed: one latent frame per `factor` frames after the first")
            raise failed(ex, title, f"latent_frames({T}, factor={factor}) returned {got!r}, expected {want} "
                         f"(1 + {factor}*{k} frames: the first frame, then {k} group(s) of {factor})", *hints)
    for T, factor in ((16, 4), (2, 4), (4, 4), (8, 4), (18, 4), (20, 4), (6, 2), (10, 2), (12, 5)):
        lo = 1 + factor * ((T - 1) // factor)
        hi = lo + factor
        try:
            got = call(ex, _WHERE[ex], fn, T, factor=factor)
        except NotImplementedError:
            raise
        except ValueError as e:
            if not _names(str(e), lo, hi):
                raise failed(ex, title, f"latent_frames({T}, factor={factor}) raised ValueError({str(e)!r}), which "
                             f"does not name the nearest valid counts {lo} and {hi}",
                             f"say what would work: 'got {T} frames; a causal video needs 1 + {factor}k frames: use "
                             f"{lo} or {hi}' (lo = 1 + factor * ((T - 1) // factor), hi = lo + factor)") from None
            continue
        except Exception as e:  # noqa: BLE001
            raise failed(ex, title, f"latent_frames({T}, factor={factor}) raised {type(e).__name__}: {e}",
                         "a wrong frame count is a ValueError (raise ValueError(...))") from e
        raise failed(ex, title, f"latent_frames({T}, factor={factor}) returned {got!r}; {T} frames are not "
                     f"1 + {factor}k, so it must raise a ValueError",
                     "rounding would silently drop or invent frames: check the remainder of divmod(T - 1, factor) "
                     f"and raise, naming the nearest valid counts ({lo} or {hi})")
    return passed(ex, title)


# ----------------------------------------------------------------------------- 7.2

def _randomize(module, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in module.parameters():
            prm.copy_(0.2 * torch.randn(prm.shape, generator=g, dtype=prm.dtype))
    return module.double()


def _clip(T: int, C: int, H: int, seed: int) -> torch.Tensor:
    return torch.randn(1, C, T, H, H, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _conv_ref(conv, x: torch.Tensor) -> torch.Tensor:
    """The whole clip through a 3x3x3 CachedCausalConv, written out: frame 0 twice in front, zero padding in space."""
    w, b = conv.conv.conv.weight, conv.conv.conv.bias
    return F.conv3d(torch.cat([x[:, :, :1], x[:, :, :1], x], 2), w, b, padding=(0, 1, 1))


def _chunks(module, x: torch.Tensor, spans, state=None):
    """Run `module` chunk by chunk (spans written out by hand) with one ChunkState: (output, state)."""
    from minivid.models.video_vae import ChunkState
    state = state or ChunkState()
    outs = []
    for i, (a, b) in enumerate(spans):
        state.first_chunk = i == 0
        y = _run("7.2", module, x[:, :, a:b], state)
        if not torch.is_tensor(y):
            raise failed("7.2", _TITLES["7.2"], f"a chunk returned a {type(y).__name__}, expected a tensor",
                         "CausalConv3d returns (y, new_cache): return y, and store new_cache in state.caches")
        outs.append(y)
    return torch.cat(outs, 2), state


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float("inf") if a.shape != b.shape else float((a - b).detach().abs().max())


def check_cache_handoff(forward: Callable | None = None) -> bool:
    """Exercise 7.2: `CachedCausalConv.forward(self, x, state)` in chunked use reads the previous chunk's conv cache
    (None in the first chunk) and stores its own new one under `self.key`, so that chunked == whole.

    forward: a function with the method's signature, `forward(self, x, state=None)`, e.g. your own version, run in
    place of the method on every CachedCausalConv here; default: minivid's.
    """
    from minivid.models.video_vae import CachedCausalConv, CausalVideoVAE, ChunkState, video_vae_config
    ex, title = "7.2", _TITLES["7.2"]

    def use(module):
        if forward is not None:
            for m in module.modules():
                if isinstance(m, CachedCausalConv):
                    m.forward = types.MethodType(forward, m)
        return module

    torch.manual_seed(0)
    conv = _randomize(CachedCausalConv(3, 4), seed=1)
    x = _clip(7, 3, 5, seed=2)
    want = _conv_ref(conv, x)
    use(conv)
    spans = [(0, 1), (1, 3), (3, 4), (4, 7)]
    try:
        got, state = _chunks(conv, x, spans)
    except AssertionError as e:
        if isinstance(e.__cause__, KeyError):
            raise failed(ex, title, f"a later chunk found no cache ({e.__cause__!r} missing from state.caches)",
                         "every chunk must store the conv's new cache for the next one: "
                         "y, state.caches[self.key] = self.conv(x, cache)") from None
        raise
    if _diff(got, want) > _TOL:
        hints = []
        fresh = torch.cat([_conv_ref(conv, x[:, :, a:b]) for a, b in spans], 2)
        if _diff(got, fresh) <= _TOL:
            hints.append("every chunk was padded like the first, as if it started a new clip: a later chunk must "
                         "read the previous chunk's cache, cache = state.caches[self.key], and pass it to self.conv")
        elif _diff(got[:, :, :1], want[:, :, :1]) > _TOL:
            hints.append("the first chunk is already wrong: it has no past, so self.conv(x, None) pads it with copies "
                         "of its first frame")
        bad = next(t for t in range(x.shape[2]) if _diff(got[:, :, t], want[:, :, t]) > _TOL) \
            if got.shape == want.shape else None
        where = f" (first wrong output frame: {bad})" if bad is not None else f" (shape {tuple(got.shape)})"
        raise failed(ex, title, f"one conv, 7 frames in chunks {spans}: the chunks differ from the whole clip by "
                     f"{_diff(got, want):.3g}{where}", *hints)
    if set(state.caches) != {conv.key} or _diff(state.caches[conv.key], x[:, :, -2:]) > _TOL:
        raise failed(ex, title, f"after the last chunk state.caches holds {sorted(state.caches)}, expected only "
                     f"{conv.key!r} (the conv's key) with the last 2 input frames",
                     "store the cache CausalConv3d returns under self.key: state.caches[self.key]")

    # a new clip starts with a stale state: the first chunk must not read it
    stale = ChunkState(caches={conv.key: _clip(2, 3, 5, seed=3)}, first_chunk=True)
    got = _run(ex, conv, x[:, :, :3], stale)
    if not torch.is_tensor(got) or _diff(got, _conv_ref(conv, x[:, :, :3])) > _TOL:
        raise failed(ex, title, "a first chunk (state.first_chunk True) whose state still holds a cache from "
                     "another clip gave a different output than the clip on its own",
                     "the first chunk has no past whatever the state holds: cache = None if state.first_chunk, "
                     "not state.caches.get(self.key)")

    # a whole small video VAE: every conv has a cache of its own
    torch.manual_seed(0)
    model = _randomize(CausalVideoVAE(video_vae_config("video-vae-tiny", channels=8, groups=4)), seed=4)
    xv = _clip(17, 3, 8, seed=5)
    with torch.no_grad():
        whole_h = model.encoder(xv)
        z = whole_h[:, :model.cfg.latent_channels]
        whole_x = model.decoder(z)
        use(model)
        for name, stack, inp, want, spans in (
                ("encoder", model.encoder, xv, whole_h, [(0, 1), (1, 9), (9, 17)]),
                ("encoder", model.encoder, xv, whole_h, [(0, 5), (5, 9), (9, 13), (13, 17)]),
                ("decoder", model.decoder, z, whole_x, [(0, 1), (1, 3), (3, 5)]),
                ("decoder", model.decoder, z, whole_x, [(0, 2), (2, 3), (3, 4), (4, 5)])):
            got, state = _chunks(stack, inp, spans)
            if _diff(got, want) > _TOL:
                n = sum(isinstance(m, CachedCausalConv) for m in stack.modules())
                hint = (f"{n} convs share {len(state.caches)} cache(s): each conv must store its own cache under its "
                        "own key, state.caches[self.key] (the model names every conv by its module path)"
                        if len(state.caches) < n else
                        "one conv alone works: check that every chunk after the first reads "
                        "state.caches[self.key] and stores the new cache there")
                raise failed(ex, title, f"a small CausalVideoVAE's {name} in chunks {spans} differs from the whole "
                             f"clip by {_diff(got, want):.3g}", hint)
    return passed(ex, title)


# ----------------------------------------------------------------------------- 7.3

def _spans_ref(T: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Cut from the end: as many whole chunks as fit behind the lone first frame; what is left opens the clip."""
    whole = (T - 1) // chunk_frames
    first = T - whole * chunk_frames
    return [(0, first)] + [(first + i * chunk_frames, first + (i + 1) * chunk_frames) for i in range(whole)]


def _as_spans(got):
    try:
        spans = [tuple(int(v) for v in s) for s in got]
    except (TypeError, ValueError):
        return None
    return spans if all(len(s) == 2 for s in spans) else None


def check_chunk_spans(fn: Callable | None = None) -> bool:
    """Exercise 7.3: `chunk_spans(T, chunk_frames, factor=4)` -> [(start, stop), ...] covering 0..T in order: the
    first chunk holds 1 + (T - 1) % chunk_frames frames (the lone first frame and the remainder), every later chunk
    exactly chunk_frames.

    fn: a function with that signature, e.g. your own version; default: minivid's.
    """
    if fn is None:
        from minivid.models.video_vae import chunk_spans as fn
    ex, title = "7.3", _TITLES["7.3"]
    cases = [(T, c, 4) for T in (1, 5, 9, 13, 17, 21, 33, 65) for c in (4, 8, 12, 16, 20)]
    cases += [(n, c, 1) for n in (1, 2, 4, 5, 9, 17) for c in (1, 2, 3, 4)]
    for T, c, factor in cases:
        raw = _run(ex, fn, T, c, factor=factor)
        got, want = _as_spans(raw), _spans_ref(T, c)
        if got == want:
            continue
        call_s = f"chunk_spans({T}, {c}, factor={factor})"
        if got is None:
            raise failed(ex, title, f"{call_s} returned {raw!r}", "return a list of (start, stop) pairs")
        hints = []
        first = 1 + (T - 1) % c
        if got and got[0][1] == first - 1:
            hints.append(f"the first chunk is one frame short: it holds the lone first frame PLUS the {first - 1} "
                         f"frame(s) left over, 1 + (T - 1) % chunk_frames = {first}")
        elif got and got[0] == (0, 1) and first > 1:
            hints.append(f"the {first - 1} frame(s) that do not fill a whole chunk go in the FIRST chunk, with the lone "
                         "first frame, so that every later chunk is exactly chunk_frames: first = 1 + (T - 1) % "
                         "chunk_frames")
        elif got and got[0] == (0, 1 + c) and first == 1:
            hints.append("when T - 1 is a multiple of chunk_frames nothing is left over: the first chunk is the lone "
                         "first frame, (0, 1)")
        elif got and got[0][1] != first:
            hints.append(f"the first chunk should hold 1 + (T - 1) % chunk_frames = {first} frames, yours holds "
                         f"{got[0][1] - got[0][0]}")
        if not got or got[0][0] != 0 or got[-1][1] != T or any(a[1] != b[0] for a, b in zip(got, got[1:])):
            hints.append(f"the spans must cover frames 0..{T} in order, each chunk starting where the one before "
                         "stopped (no gap, no overlap, nothing past T)")
        raise failed(ex, title, f"{call_s} returned {got}, expected {want}", *hints)
    return passed(ex, title)


CHECKS = {"7.1": check_frame_count, "7.2": check_cache_handoff, "7.3": check_chunk_spans}

HINTS = {
    "7.1": ["The first frame is encoded on its own; every later group of `factor` frames becomes one latent frame.",
            "T = 1 + factor * k -> 1 + k latent frames; any other T is an error that names the nearest valid counts."],
    "7.2": ["A causal conv in a later chunk must see the previous chunk's last input frames (its cache) instead "
            "of padding.",
            "The first chunk has no cache (None); every chunk stores the conv's new cache under the conv's key."],
    "7.3": ["The first chunk holds the lone first frame plus the frames that do not fill a whole chunk; every "
            "later chunk holds exactly chunk_frames frames.",
            "first = 1 + (T - 1) % chunk_frames; then (a, a + chunk_frames) for a from first to T."],
}

MISTAKES = [
    Mistake("7.1", "the first frame forgotten (k latent frames instead of 1 + k)", "return 1 + k", "return k"),
    Mistake("7.2", "the cache never handed on (every chunk padded like the first)",
            "cache = None if state.first_chunk else state.caches[self.key]", "cache = None"),
    Mistake("7.3", "the first chunk one frame short", "first = 1 + (T - 1) % chunk_frames",
            "first = max(1, (T - 1) % chunk_frames)"),
]

__all__ = ["check_frame_count", "check_cache_handoff", "check_chunk_spans", "CHECKS", "HINTS", "MISTAKES"]
