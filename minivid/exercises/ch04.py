"""Chapter 04 exercises (Make-A-Video, Singer et al. 2022, arXiv:2209.14792): checkers shared by the notebook
and the tests, hints, known mistakes.

4.1 the pseudo-3-D conv (`Pseudo3DConv.forward`) and 4.2 its identity (Dirac) initialisation
(`dirac_temporal_conv`) live in `minivid/models/temporal.py`; 4.3 the frame-interpolation network's input
(`interpolation_input`) in `minivid/models/pseudo3d.py`. Each checker runs the learner's function in float64
against a reference written out here another way (a loop over frames for the 2-D conv, an explicit sum
over time windows for the 1-D conv, loops for the mask; no fold/unfold, no Conv3d), with every weight random
and odd sizes (T, H, W all different, so a swapped axis cannot hide). On failure it compares the output with the usual wrong answers (the temporal conv before the
spatial one, frames and channels swapped in a reshape, the identity on the wrong tap, unknown frames not
zeroed, the mask channel missing...) and says what to fix. A pass prints one line and returns True; a failure
raises AssertionError (NotImplementedError while the exercise is a stub).

The 4.1 checker builds its layer without `dirac_temporal_conv`, so 4.1 can be checked before 4.2 is written.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minivid.exercises.base import Mistake, call, failed, passed

_TOL = 1e-10                   # float64 throughout


def _same(a, b) -> bool:
    return torch.is_tensor(a) and tuple(a.shape) == tuple(b.shape) and float((a.double() - b).abs().max()) <= _TOL


def _rand(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _run(ex: str, where: str, fn: Callable, *args):
    """call() that turns any other exception of the learner's code into a failure naming the exercise."""
    try:
        return call(ex, where, fn, *args)
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - a learner's bug of any kind becomes feedback
        raise failed(ex, _TITLES[ex], f"raised {type(e).__name__}: {e}", _CRASH_HINTS[ex]) from e


_TITLES = {"4.1": "pseudo-3-D conv", "4.2": "Dirac initialisation", "4.3": "interpolation input"}
_CRASH_HINTS = {
    "4.1": "shapes: x (B, Cin, T, H, W) -> fold_frames -> (B*T, Cin, H, W) -> self.spatial -> (B*T, Cout, H, W) "
           "-> unfold_frames(., T) -> (B, Cout, T, H, W) -> self.temporal (Cout channels in and out)",
    "4.2": "change the weight and bias in place inside `with torch.no_grad():` (they are leaves that require grad)",
    "4.3": "m = mask.expand(B, T)[:, None, :, None, None] is (B, 1, T, 1, 1): it broadcasts against the clip",
}


# ----------------------------------------------------------------------------- 4.1 pseudo-3-D conv

def pseudo3d_reference(x, w2, b2, wt, bt, image=None) -> torch.Tensor:
    """Make-A-Video eq. 2, written out: the 2-D conv on each frame (a loop), then at every pixel a 1-D conv over
    time as a sum over the window of frames t - k//2 .. t + k//2 (zeros outside the clip). x (B, Cin, T, H, W); w2 (Cout, Cin, kh, kw);
    wt (Cout, Cout, k, 1, 1). Image items (image[b] True) keep the per-frame output."""
    B, _, T, H, W = x.shape
    h = torch.stack([F.conv2d(x[:, :, t], w2, b2, padding=w2.shape[-1] // 2) for t in range(T)], 2)
    k = wt.shape[2]
    zeros = h.new_zeros(B, h.shape[1], k // 2, H, W)
    windows = torch.cat([zeros, h, zeros], 2).unfold(2, k, 1)                 # (B, C, T, H, W, k): frames t-k//2..
    out = torch.einsum("oij,bithwj->bothw", wt[:, :, :, 0, 0], windows) + bt.view(1, -1, 1, 1, 1)
    if image is not None:
        for b in range(B):
            if image[b]:
                out[b] = h[b]
    return out


def _bare_layer(cin: int, cout: int, k: int = 3, seed: int = 0):
    """A Pseudo3DConv with random float64 weights, built without dirac_temporal_conv (exercise 4.2)."""
    from minivid.models.temporal import Pseudo3DConv
    layer = Pseudo3DConv.__new__(Pseudo3DConv)
    nn.Module.__init__(layer)
    layer.spatial = nn.Conv2d(cin, cout, 3, padding=1).double()
    layer.temporal = nn.Conv3d(cout, cout, (k, 1, 1), padding=(k // 2, 0, 0)).double()
    with torch.no_grad():
        for i, p in enumerate(layer.parameters()):
            p.copy_(_rand(*p.shape, seed=seed + i, scale=0.3))
    return layer


def _fold(x: torch.Tensor) -> torch.Tensor:
    B, C, T, H, W = x.shape
    return x.transpose(1, 2).reshape(B * T, C, H, W)                   # (B*T, C, H, W)


def _wrong_orders(layer, x):
    """The same maths with the usual mistakes: {what went wrong: output}."""
    B, C, T, H, W = x.shape
    sp, tp = layer.spatial, layer.temporal
    fold = _fold(x)
    bad_fold = x.reshape(B * T, C, H, W)                                # frames and channels swapped
    unfold = lambda y: y.reshape(B, T, -1, H, W).transpose(1, 2)       # noqa: E731
    bad_unfold = lambda y: y.reshape(B, -1, T, H, W)                   # noqa: E731
    swap = ("frames and channels swapped in a reshape{}: (B, C, T, H, W) -> (B*T, C, H, W) must bring T next "
            "to B first - x.transpose(1, 2).reshape(B * T, C, H, W), which is fold_frames(x) - and back with "
            "unfold_frames(h, T); a plain .reshape() or .view() mixes frames with channels").format
    out = {swap(""): tp(bad_unfold(sp(bad_fold))),
           swap(" (on the way back)"): tp(bad_unfold(sp(fold))),
           swap(" (on the way in)"): tp(unfold(sp(bad_fold)))}
    if C == tp.in_channels:
        out["the temporal conv ran before the spatial one: eq. 2 of the paper is Conv1D(Conv2D(x)) - the frozen "
            "image conv first, on every frame, then self.temporal across frames (this order only runs at all "
            "when Cin = Cout)"] = unfold(sp(_fold(tp(x))))
    return out


@torch.no_grad()
def check_pseudo3d_conv(forward: Callable | None = None) -> bool:
    """Exercise 4.1: `Pseudo3DConv.forward(self, x, image=None)`: (B, Cin, T, H, W) -> (B, Cout, T, H, W), the
    2-D conv `self.spatial` on every frame, then the temporal conv `self.temporal` across frames at every
    pixel; image items (image[b] True) keep the per-frame output.

    forward: a function (layer, x, image) -> output, e.g. your own version of the method; default: minivid's.
    """
    from minivid.models.temporal import Pseudo3DConv
    fwd = forward or Pseudo3DConv.forward
    where = "minivid/models/temporal.py (Pseudo3DConv.forward)"
    ex, title = "4.1", _TITLES["4.1"]
    cases = [("clips (image=None)", None), ("an image item and a clip", torch.tensor([True, False])),
             ("clips (image all False)", torch.tensor([False, False])), ("two image items", torch.tensor([True, True]))]
    for cin, cout, k, n_cases in ((4, 4, 3, 4), (3, 5, 3, 2), (4, 4, 5, 1)):
        layer = _bare_layer(cin, cout, k, seed=10 * cin + k)
        x = _rand(2, cin, 5, 6, 7, seed=cin + cout + k)                           # (B, C, T, H, W): all differ
        sp, tp = layer.spatial, layer.temporal
        ref = pseudo3d_reference(x, sp.weight, sp.bias, tp.weight, tp.bias)
        per_frame = pseudo3d_reference(x, sp.weight, sp.bias, tp.weight, tp.bias, image=[True, True])
        for name, image in cases[:n_cases]:
            want = ref if image is None else torch.where(image[:, None, None, None, None], per_frame, ref)
            got = _run(ex, where, fwd, layer, x, image)
            label = f"Cin={cin}, Cout={cout}, {k} taps, {name}"
            if not torch.is_tensor(got) or tuple(got.shape) != tuple(want.shape):
                shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
                hint = ("frames and channels are swapped in the output: return (B, Cout, T, H, W) - "
                        "unfold_frames(h, T) after the per-frame conv" if shape == (2, 5, cout, 6, 7) else
                        _CRASH_HINTS[ex])
                raise failed(ex, title, f"{label}: output {shape}, expected {tuple(want.shape)}", hint)
            if _same(got, want):
                continue
            err = float((got.double() - want).abs().max())
            hints = []
            if image is not None and image.any() and _same(got, ref):
                hints.append("image items went through the temporal conv too: keep their per-frame output "
                             "(torch.where(image[:, None, None, None, None], h, out)), so independent images "
                             "never mix")
            elif image is not None and image.any() and _same(got, torch.where(image[:, None, None, None, None],
                                                                             ref, per_frame)):
                hints.append("clips and images are swapped: torch.where(cond, a, b) takes a where cond is True, "
                             "so torch.where(image[:, None, None, None, None], h, out)")
            elif image is not None and _same(got, per_frame):
                hints.append("with `image` given, the clip items (image[b] False) skipped the temporal conv too: "
                             "only image items keep the per-frame output (torch.where(cond, a, b) takes a where "
                             "cond is True: torch.where(image[:, None, None, None, None], h, out))")
            elif _same(got, per_frame):
                hints.append("only the per-frame 2-D conv ran: apply self.temporal (across frames, at every "
                             "pixel) to its output")
            else:
                alts = _wrong_orders(layer, x)
                hints += [what for what, alt in alts.items() if _same(got, alt)][:1]
            if not hints:
                hints.append(_probe(fwd, layer, x, k))
            raise failed(ex, title, f"{label}: differs from the float64 reference by {err:.3g}", *hints)
    return passed(ex, title)


def _probe(fwd, layer, x, k) -> str:
    """Which outputs move when one input frame of one item moves (3 taps: only that frame and its neighbours)."""
    x2 = x.clone()
    x2[0, :, 2] += 1.0
    try:
        d = (fwd(layer, x2, None).double() - fwd(layer, x, None).double()).abs().amax(dim=(1, 3, 4))   # (B, T)
    except Exception:  # noqa: BLE001 - the comparison above already failed; give the recipe instead
        d = None
    if d is None or d.dim() != 2 or tuple(d.shape) != (x.shape[0], x.shape[2]):
        return ("spatial first: h = unfold_frames(self.spatial(fold_frames(x)), T); then out = self.temporal(h); "
                "image items keep h")
    moved = [t for t in range(x.shape[2]) if d[0, t] > 1e-12]
    reach = list(range(max(0, 2 - k // 2), min(x.shape[2], 3 + k // 2)))
    if float(d[1].max()) > 1e-12:
        return "changing one item changed another: the batch axis got mixed (check every reshape/permute)"
    if moved and moved != reach:
        return (f"changing input frame 2 moved output frames {moved}; a {k}-tap conv in time reaches only {reach}: "
                "a reshape mixes frames with channels or pixels (use fold_frames / unfold_frames)")
    return ("spatial first: h = unfold_frames(self.spatial(fold_frames(x)), T); then out = self.temporal(h); "
            "image items keep h")


# ----------------------------------------------------------------------------- 4.2 Dirac init

def _dirac_reference(c: int, k: int) -> torch.Tensor:
    w = torch.zeros(c, c, k, 1, 1, dtype=torch.float64)
    for o in range(c):
        w[o, o, k // 2, 0, 0] = 1.0
    return w


def _diagnose_weight(w: torch.Tensor, c: int, k: int) -> str:
    """What a wrong (c, c, k, 1, 1) temporal weight does, in words."""
    w = w.double()[..., 0, 0]                                                     # (c, c, k)
    eye = torch.eye(c, dtype=torch.float64)
    if float(w.abs().max()) == 0:
        return ("the weight is all zeros: the layer outputs only its bias and the frozen image model would see "
                "nothing; the identity has weight[o, o, k // 2] = 1")
    taps = [j for j in range(k) if torch.equal(w[:, :, j], eye)]
    zero = [j for j in range(k) if float(w[:, :, j].abs().max()) == 0]
    if len(taps) == 1 and len(zero) == k - 1 and taps[0] != k // 2:
        s = taps[0] - k // 2
        return (f"the identity sits on tap {taps[0]} of 0..{k - 1}: output frame t copies input frame t{s:+d}, "
                f"the clip shifted in time; put it on the centre tap k // 2 = {k // 2}")
    if len(taps) == k:
        return (f"every tap is the identity: output frame t is the sum of frames t-{k // 2} .. t+{k // 2}; only the "
                "centre tap is 1")
    centre = w[:, :, k // 2]
    if torch.equal(centre, torch.ones(c, c, dtype=torch.float64)):
        return ("every output channel sums all input channels at the centre tap: the identity has 1 only where "
                "the output channel equals the input channel (o == i)")
    if torch.allclose(centre, centre[0, 0] * eye) and float(centre[0, 0]) not in (0.0, 1.0):
        return f"the centre tap is {float(centre[0, 0]):.4g} times the identity: identity means exactly 1"
    return f"weight[:, :, :, 0, 0] should be zeros with weight[o, o, {k // 2}] = 1 (nn.init.dirac_ does this)"


def check_dirac_init(fn: Callable | None = None) -> bool:
    """Exercise 4.2: `dirac_temporal_conv(channels, kernel)` -> a (kernel, 1, 1) Conv3d that is exactly the
    identity: weight[o, i, k] = 1 when o == i and k is the centre tap, 0 elsewhere; zero bias; still trainable."""
    if fn is None:
        from minivid.models.temporal import dirac_temporal_conv as fn
    where = "minivid/models/temporal.py (dirac_temporal_conv)"
    ex, title = "4.2", _TITLES["4.2"]
    for c, k in ((4, 3), (3, 5), (2, 1)):
        conv = _run(ex, where, fn, c, k)
        w, b = getattr(conv, "weight", None), getattr(conv, "bias", None)
        if not isinstance(conv, nn.Module) or not torch.is_tensor(w) or not torch.is_tensor(b):
            raise failed(ex, title, f"expected an nn.Conv3d with a weight and a bias, got {type(conv).__name__}",
                         "build the conv first (the line above the region), then change its weight and bias")
        if tuple(w.shape) != (c, c, k, 1, 1) or tuple(b.shape) != (c,):
            raise failed(ex, title, f"channels={c}, kernel={k}: weight {tuple(w.shape)} and bias {tuple(b.shape)}, "
                         f"expected ({c}, {c}, {k}, 1, 1) and ({c},)")
        label = f"channels={c}, kernel={k}"
        if not torch.equal(w.detach().double(), _dirac_reference(c, k)):
            raise failed(ex, title, f"{label}: the weight is not the identity in time", _diagnose_weight(w.detach(), c, k))
        if float(b.detach().abs().max()) != 0:
            raise failed(ex, title, f"{label}: the bias is not zero (max |bias| = {float(b.detach().abs().max()):.3g})",
                         "nn.Conv3d starts its bias random: zero it (conv.bias.zero_()), or the output is shifted")
        if not (isinstance(w, nn.Parameter) and isinstance(b, nn.Parameter) and w.requires_grad and b.requires_grad):
            raise failed(ex, title, f"{label}: the weight and bias must stay trainable nn.Parameters (requires_grad)",
                         "change them in place under torch.no_grad() - do not replace them or freeze them: the "
                         "temporal conv is what Make-A-Video trains")
        x = _rand(2, c, 7, 3, 4, seed=c + k)                                       # (B, C, T, H, W)
        with torch.no_grad():
            y = _run(ex, where, conv.double(), x)
        if not _same(y, x):
            raise failed(ex, title, f"{label}: conv(x) != x (max error {float((y - x).abs().max()):.3g})",
                         "the padding must be 'same' in time (kernel // 2), as built above the region")
    return passed(ex, title)


# ----------------------------------------------------------------------------- 4.3 interpolation input

def interpolation_input_reference(known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float64 loops: channels 0..C-1 are the known frames with the unknown ones zeroed, channel C is the mask."""
    B, C, T, H, W = known.shape
    m = mask.double() if mask.dim() == 2 else mask.double()[None].repeat(B, 1)       # (B, T)
    out = torch.zeros(B, C + 1, T, H, W, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            out[b, :C, t] = known[b, :, t].double() * m[b, t]
            out[b, C, t] = m[b, t]
    return out


def check_interpolation_input(fn: Callable | None = None) -> bool:
    """Exercise 4.3: `interpolation_input(known, mask)`: known (B, C, T, H, W), mask (T,) or (B, T) (1 = known)
    -> (B, C + 1, T, H, W): the clip with the frames to fill in zeroed, then the mask as one more channel."""
    if fn is None:
        from minivid.models.pseudo3d import interpolation_input as fn
    where = "minivid/models/pseudo3d.py (interpolation_input)"
    ex, title = "4.3", _TITLES["4.3"]
    B, C, T, H, W = 2, 3, 5, 4, 6
    known = _rand(B, C, T, H, W, seed=7) + 2.0                      # no pixel is zero: a zeroed frame shows
    masks = [("a (T,) mask, every other frame known", torch.tensor([1.0, 0, 1, 0, 1], dtype=torch.float64)),
             ("a (T,) mask, the first frames known (extrapolation)", torch.tensor([1.0, 1, 1, 0, 0], dtype=torch.float64)),
             ("a (B, T) mask, one per item", torch.tensor([[1.0, 1, 1, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.float64))]
    for name, mask in masks:
        want = interpolation_input_reference(known, mask)
        got = _run(ex, where, fn, known, mask)
        if not torch.is_tensor(got) or tuple(got.shape) != (B, C + 1, T, H, W):
            shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
            hint = ("the mask channel is missing: concatenate the mask, expanded to (B, 1, T, H, W), after the "
                    "clip along dim=1" if shape == (B, C, T, H, W) else
                    "the mask goes in as one more channel: torch.cat([...], dim=1) (channels are dim 1)"
                    if torch.is_tensor(got) and got.dim() == 5 else _CRASH_HINTS[ex])
            raise failed(ex, title, f"{name}: output {shape}, expected {(B, C + 1, T, H, W)}", hint)
        if _same(got, want):
            continue
        g, m = got.double(), want[:, C:]
        hints = []
        if _same(g[:, :C], known):
            hints.append("the frames to fill in still hold their pixels: multiply the clip by the mask, so the "
                         "network never sees the answer")
        elif _same(g[:, :C], known * (1 - m)):
            hints.append("you zeroed the known frames and kept the ones to fill in: 1 in the mask = known")
        if _same(g[:, C:], 1 - m):
            hints.append("the mask channel is inverted: 1 = known frame, 0 = frame to fill in")
        if _same(g[:, :1], m) and _same(g[:, 1:], want[:, :C]):
            hints.append("the mask channel comes first: it goes last, torch.cat([known * m, mask], dim=1)")
        if not hints and mask.dim() == 2:
            hints.append("a (B, T) mask - one per item - came out wrong: reshape it to (B, 1, T, 1, 1) "
                         "(mask.expand(B, T)[:, None, :, None, None]) before multiplying")
        if not hints:
            bad = sorted({int(t) for t in ((g - want).abs() > _TOL).any(dim=(0, 1, 3, 4)).nonzero().flatten()})
            hints.append(f"frames {bad} differ: the clip channels are known * m, the last channel is m, with m of "
                         "shape (B, 1, T, 1, 1)")
        raise failed(ex, title, f"{name}: differs from the reference by {float((g - want).abs().max()):.3g}", *hints)
    out = _run(ex, where, fn, known.float(), torch.tensor([1.0, 0, 1, 0, 1]))
    if out.dtype != torch.float32:
        raise failed(ex, title, f"a float32 clip gave a {out.dtype} output: keep the clip's dtype (mask.to(known))")
    return passed(ex, title)


CHECKS = {"4.1": check_pseudo3d_conv, "4.2": check_dirac_init, "4.3": check_interpolation_input}

HINTS = {
    "4.1": ["Pseudo-3-D = the image model's 2-D conv on every frame, then a 1-D conv across frames at every pixel.",
            "fold_frames / unfold_frames move T in and out of the batch for the 2-D conv (self.spatial is an "
            "nn.Conv2d). self.temporal is a Conv3d with a (k, 1, 1) kernel: it takes (B, C, T, H, W) as it is - "
            "a 1-D conv along T at every pixel, no reshape needed.",
            "Image items keep the per-frame output (torch.where on image), so independent images never mix.",
            "h = unfold_frames(self.spatial(fold_frames(x)), T); out = self.temporal(h); then, when image is "
            "given, torch.where(image[:, None, None, None, None], h, out)."],
    "4.2": ["At initialisation the layer must be exactly the identity in time, so the frozen image model is "
            "unchanged.",
            "weight[o, i, k] = 1 when o == i and k is the centre tap, else 0 (nn.init.dirac_), and a zero bias.",
            "Both are leaves that require grad: change them in place inside `with torch.no_grad():`."],
    "4.3": ["The interpolation network sees the clip with the frames to fill in zeroed, plus one more channel: "
            "the mask itself (1 = known frame).",
            "Broadcast the mask to (B, 1, T, 1, 1): multiply the clip by it, expand it to (B, 1, T, H, W) and "
            "concatenate along the channels."],
}

MISTAKES = [
    Mistake("4.1", "image items sent through the temporal conv too", "if image is not None:", "if False:"),
    Mistake("4.1", "the temporal conv forgotten (spatial only)", "out = self.temporal(h)", "out = h"),
    Mistake("4.1", "frames and channels swapped in the reshape (a plain reshape instead of fold_frames)",
            "self.spatial(fold_frames(x))", "self.spatial(x.reshape(-1, x.shape[1], *x.shape[3:]))"),
    Mistake("4.2", "zeros instead of the identity", "nn.init.dirac_(conv.weight)", "nn.init.zeros_(conv.weight)"),
    Mistake("4.2", "the bias left at its random initialisation", "conv.bias.zero_()", "conv.bias.mul_(1)"),
    Mistake("4.2", "the identity on the first tap (a shift in time)", "nn.init.dirac_(conv.weight)",
            "conv.weight.zero_()[:, :, 0, 0, 0] = torch.eye(conv.weight.shape[0])"),
    Mistake("4.3", "the frames to fill in not zeroed (the network sees the answer)", "known * m", "known"),
    Mistake("4.3", "the mask inverted (1 = frame to fill in)", "known * m, m.expand(B, 1, T, H, W)",
            "known * m, (1 - m).expand(B, 1, T, H, W)"),
    Mistake("4.3", "the mask channel missing", "torch.cat([known * m, m.expand(B, 1, T, H, W)], dim=1)",
            "known * m"),
]

__all__ = ["check_pseudo3d_conv", "check_dirac_init", "check_interpolation_input", "pseudo3d_reference",
           "interpolation_input_reference", "CHECKS", "HINTS", "MISTAKES"]
