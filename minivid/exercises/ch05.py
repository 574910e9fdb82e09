"""Chapter 05 exercises (Imagen Video, Ho et al. 2022, arXiv:2210.02303; Cascaded Diffusion Models, Ho et al. 2021,
arXiv:2106.15282): checkers shared by the notebook and the tests, hints, known mistakes.

All three live in `minivid/pipelines/ch05_sr.py`: 5.1 the TSR input (`tsr_input`: the low clip on the even frames,
the in-between frames repeated or blank plus a mask channel), 5.2 noise-conditioning augmentation (`augment`),
5.3 the SSR input (`ssr_input`: every frame upsampled bilinearly, then concatenated). (The v-prediction target and
its conversions are exercise 1.5.) Each checker runs the learner's function in float64 against a reference written
another way - loops over frames, alpha-bar as an explicit product of (1 - beta), bilinear upsampling as two
interpolation matrices - with B, C, T, H, W all different so a swapped axis cannot hide. On failure it compares
the output with the usual wrong answers and says what to fix. A pass prints one line and returns True; a failure
raises AssertionError (NotImplementedError while the exercise is a stub).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minivid.exercises.base import Mistake, failed, guarded, passed

_TOL = 1e-10                   # float64 throughout
_TITLES = {"5.1": "TSR input", "5.2": "noise-conditioning augmentation", "5.3": "SSR input"}
_WHERE = {"5.1": "minivid/pipelines/ch05_sr.py (tsr_input)", "5.2": "minivid/pipelines/ch05_sr.py (augment)",
          "5.3": "minivid/pipelines/ch05_sr.py (ssr_input)"}
_CRASH_HINTS = {
    "5.1": "low (B, C, T, H, W) -> the conditioning (B, C, 2T, H, W): repeat_interleave(2, dim=2), or zeros with "
           "cond[:, :, ::2] = low plus a (B, 1, 2T, H, W) mask; then torch.cat([x_t, cond], 1)",
    "5.2": "the table of alpha-bars by level has T + 1 entries: torch.cat([ones(1), schedule.alpha_bars]); "
           "gather(table, level, low) shapes it (B, 1, 1, 1, 1)",
    "5.3": "fold_frames(low) is (B*T, C, H, W); F.interpolate(..., size=(2H, 2W), mode='bilinear', "
           "align_corners=False); unfold_frames(up, T) brings back (B, C, T, 2H, 2W)",
}


def _same(a, b) -> bool:
    return torch.is_tensor(a) and tuple(a.shape) == tuple(b.shape) and float((a.double() - b).abs().max()) <= _TOL


def _rand(*shape, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def _run(ex: str, fn, *args, **kwargs):
    """fn(...) for exercise ex: see `minivid.exercises.base.guarded`."""
    return guarded(ex, _WHERE[ex], _TITLES[ex], fn, *args, hint=_CRASH_HINTS[ex], **kwargs)


def _shape_of(x) -> tuple | str:
    return tuple(x.shape) if torch.is_tensor(x) else type(x).__name__


# ----------------------------------------------------------------------------- 5.1 TSR input

def tsr_input_reference(x_t: torch.Tensor, low: torch.Tensor, fill: str) -> torch.Tensor:
    """float64 loops over the output frames: frame j of the conditioning is low's frame j // 2 ("repeat"), or
    low's frame j / 2 on even j and zeros on odd j plus a mask channel 1 on even j ("blank")."""
    B, C, T, H, W = low.shape
    out = torch.zeros(B, 2 * C + (fill == "blank"), 2 * T, H, W, dtype=torch.float64)
    out[:, :C] = x_t.double()
    for j in range(2 * T):
        if fill == "repeat":
            out[:, C:2 * C, j] = low[:, :, j // 2].double()
        elif j % 2 == 0:
            out[:, C:2 * C, j] = low[:, :, j // 2].double()
            out[:, 2 * C, j] = 1.0
    return out


def check_tsr_input(fn: Callable | None = None) -> bool:
    """Exercise 5.1: `tsr_input(x_t, low, fill)`: x_t (B, C, 2T, H, W), low (B, C, T, H, W) -> x_t then the low clip
    on the even frames; the odd frames repeat the frame before ("repeat") or are zeros with a mask channel
    (1 = a frame of low) last ("blank")."""
    if fn is None:
        from minivid.pipelines.ch05_sr import tsr_input as fn
    ex, title = "5.1", _TITLES["5.1"]
    B, C, T, H, W = 2, 3, 4, 5, 6
    x_t, low = _rand(B, C, 2 * T, H, W, seed=1), _rand(B, C, T, H, W, seed=2, shift=3.0)   # low: no zero pixel
    for fill in ("repeat", "blank"):
        want = tsr_input_reference(x_t, low, fill)
        got = _run(ex, fn, x_t, low, fill)
        label = f'fill="{fill}"'
        if not torch.is_tensor(got) or tuple(got.shape) != tuple(want.shape):
            shape = _shape_of(got)
            hint = (_CRASH_HINTS[ex] if not torch.is_tensor(got) or got.dim() != 5 else
                    "the mask channel is missing: blank frames need a channel saying which frames are known"
                    if fill == "blank" and shape[1] == 2 * C else
                    'fill="repeat" has no mask channel: the repeated frames carry the conditioning themselves'
                    if fill == "repeat" and shape[1] == 2 * C + 1 else
                    f"the output has the frames of x_t, 2T = {2 * T}: place low's frame i on frame 2i"
                    if shape[2] != 2 * T else _CRASH_HINTS[ex])
            raise failed(ex, title, f"{label}: output {shape}, expected {tuple(want.shape)}", hint)
        if _same(got, want):
            continue
        g = got.double()
        hints = []
        if not _same(g[:, :C], x_t):
            hints.append("channels 0..C-1 must be x_t unchanged: torch.cat([x_t, cond], 1), x_t first" if
                         _same(g[:, -C:] if fill == "repeat" else g[:, C + 1:], x_t) else
                         "channels 0..C-1 must be x_t unchanged")
        cond = g[:, C:2 * C] if not hints else None
        if cond is not None and fill == "repeat" and _same(cond, low.repeat(1, 1, 2, 1, 1)):
            hints.append("the clip is played twice (frames 0..T-1, 0..T-1): low.repeat tiles the whole clip; "
                         "each frame must be repeated in place - low.repeat_interleave(2, dim=2)")
        elif cond is not None and fill == "blank":
            even, odd, zeros = cond[:, :, ::2], cond[:, :, 1::2], 0 * low
            if _same(even, low) and not _same(odd, zeros):
                hints.append("the frames to invent must be blank (zeros) with fill='blank': start from zeros, "
                             "then cond[:, :, ::2] = low")
            elif _same(odd, low) and _same(even, zeros):
                hints.append("low's frames sit on the odd frames: frame 2i shows low's frame i (cond[:, :, ::2] = low)")
            elif _same(even, low) and _same(odd, zeros):
                hints.append("the mask channel is inverted: 1 on the frames that carry a frame of low (the even ones)"
                             if _same(g[:, 2 * C], 1 - want[:, 2 * C]) else
                             "the mask channel must be 1 on the even frames (those of low) and 0 on the odd ones")
        if not hints:
            bad = sorted({int(j) for j in ((g - want).abs() > _TOL).any(dim=(0, 1, 3, 4)).nonzero().flatten()})
            hints.append(f"frames {bad} differ: frame j of the conditioning is low's frame j // 2 (repeat), or low's "
                         "frame j // 2 on even j and zeros on odd j (blank)")
        raise failed(ex, title, f"{label}: differs from the reference by {float((g - want).abs().max()):.3g}", *hints)
    out = _run(ex, fn, x_t.float(), low.float(), "blank")
    if out.dtype != torch.float32:
        raise failed(ex, title, f"a float32 clip gave a {out.dtype} output: build the blanks and the mask with "
                     "low.new_zeros(...) so they keep low's dtype")
    return passed(ex, title)


# ----------------------------------------------------------------------------- 5.2 noise-conditioning augmentation

def augment_reference(low: torch.Tensor, level: torch.Tensor, noise: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """float64: after k forward steps the clip is sqrt(a_k) low + sqrt(1 - a_k) noise, a_k = prod_{s < k} (1 - beta_s)
    (an empty product: a_0 = 1)."""
    out = torch.empty(low.shape, dtype=torch.float64)
    for b, k in enumerate(level.tolist()):
        a = float(torch.prod(1 - betas.double()[:k]))
        out[b] = a ** 0.5 * low[b].double() + (1 - a) ** 0.5 * noise[b].double()
    return out


def check_augment(fn: Callable | None = None) -> bool:
    """Exercise 5.2: `augment(low, level, noise, schedule)`: the conditioning clip noised by `level` steps of the
    forward process, sqrt(a) low + sqrt(1 - a) noise with a = alpha_bar after `level` steps (a = 1 at level 0, which
    returns low exactly)."""
    from minivid.diffusion import make_schedule
    if fn is None:
        from minivid.pipelines.ch05_sr import augment as fn
    ex, title = "5.2", _TITLES["5.2"]
    for kind, T in (("cosine", 50), ("linear", 30)):
        s = make_schedule(kind, T)
        low, noise = _rand(5, 3, 2, 3, 4, seed=T), _rand(5, 3, 2, 3, 4, seed=T + 1)
        for name, level in (("levels 0, 1, 7, T/2, T-1", [0, 1, 7, T // 2, T - 1]),
                            ("the top level T (all T steps)", [T, 0, 2, T, 1])):
            level = torch.tensor(level)
            want = augment_reference(low, level, noise, s.betas)
            got = _run(ex, fn, low, level, noise, s)
            label = f"{kind} schedule, T={T}, {name}"
            if not torch.is_tensor(got) or tuple(got.shape) != tuple(low.shape):
                raise failed(ex, title, f"{label}: output {_shape_of(got)}, expected {tuple(low.shape)}",
                             _CRASH_HINTS[ex])
            if _same(got, want):
                continue
            g, hints = got.double(), []
            zero = level == 0
            if not _same(g[zero], low[zero]):
                hints.append("level 0 must return the clean clip exactly (no step taken: a = 1); the table of "
                             "alpha-bars by level is torch.cat([ones(1), schedule.alpha_bars]) - "
                             "schedule.alpha_bars[0] is already one step of noise")
            shifted = torch.cat([s.alpha_bars, s.alpha_bars[-1:]])[level].view(-1, 1, 1, 1, 1)
            if _same(g, shifted.sqrt() * low + (1 - shifted).sqrt() * noise):
                hints.append("off by one: level k has taken k steps, its alpha-bar is schedule.alpha_bars[k - 1]")
            a = torch.tensor([float(torch.prod(1 - s.betas[:k])) for k in level.tolist()],
                             dtype=torch.float64).view(-1, 1, 1, 1, 1)
            if _same(g, a * low + (1 - a) * noise):
                hints.append("a and 1 - a are variances: scale by their square roots")
            elif _same(g, low + (1 - a).sqrt() * noise):
                hints.append("scale the clip too, by sqrt(a): the forward process shrinks the signal as it adds noise")
            elif _same(g, (1 - a).sqrt() * low + a.sqrt() * noise):
                hints.append("the clip and the noise swapped their scales: sqrt(a) low + sqrt(1 - a) noise")
            raise failed(ex, title, f"{label}: differs from the reference by {float((g - want).abs().max()):.3g}",
                         *hints)
    s = make_schedule("cosine", 50)
    out = _run(ex, fn, low.float(), torch.tensor([0, 3, 9, 50, 1]), noise.float(), s)
    if out.dtype != torch.float32:
        raise failed(ex, title, f"a float32 clip gave a {out.dtype} output: gather() casts the table to low's dtype")
    return passed(ex, title)


# ----------------------------------------------------------------------------- 5.3 SSR input

def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64: row i holds the weights of output pixel i, sampled at (i + 0.5) n_in / n_out - 0.5
    (the half-pixel convention, align_corners=False), clamped at the border."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        w = src - i0
        m[i, i0] += 1 - w
        m[i, i1] += w
    return m


def ssr_input_reference(x_t: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """x_t, then each frame of low upsampled by two interpolation matrices (rows, then columns), one frame at a time."""
    B, C, T, H, W = low.shape
    mh, mw = bilinear_matrix(H, 2 * H), bilinear_matrix(W, 2 * W)
    up = torch.stack([mh @ low[:, :, t].double() @ mw.T for t in range(T)], 2)      # (B, C, T, 2H, 2W)
    return torch.cat([x_t.double(), up], 1)


def _wrong_ssr(x_t, low) -> dict:
    B, C, T, H, W = low.shape
    fold = low.transpose(1, 2).reshape(B * T, C, H, W)
    unfold = lambda y: y.reshape(B, T, C, 2 * H, 2 * W).transpose(1, 2)     # noqa: E731
    up = lambda z, **kw: F.interpolate(z, size=(2 * H, 2 * W), **kw)        # noqa: E731
    bil = unfold(up(fold, mode="bilinear", align_corners=False))
    mixed = ("frames and channels mixed by a plain reshape: fold with fold_frames(low) (it brings T next to B "
             "first) and unfold with unfold_frames(up, T)")
    return {
        "nearest-neighbour upsampling: every pixel copied into a 2x2 block; use mode='bilinear'":
            torch.cat([x_t, unfold(up(fold, mode="nearest"))], 1),
        "align_corners=True stretches the corner pixels' centres onto the corners (a half-pixel shift inside the "
        "frame); image resizing uses align_corners=False":
            torch.cat([x_t, unfold(up(fold, mode="bilinear", align_corners=True))], 1),
        mixed: torch.cat([x_t, unfold(up(low.reshape(B * T, C, H, W), mode="bilinear", align_corners=False))], 1),
        mixed + " (on the way back too)": torch.cat([x_t, up(low.reshape(B * T, C, H, W), mode="bilinear",
                                                                align_corners=False).reshape(B, C, T, 2 * H, 2 * W)], 1),
        "the upsampled clip comes first: x_t is channels 0..C-1, torch.cat([x_t, up], 1)": torch.cat([bil, x_t], 1),
    }


def check_ssr_input(fn: Callable | None = None) -> bool:
    """Exercise 5.3: `ssr_input(x_t, low)`: x_t (B, C, T, 2H, 2W), low (B, C, T, H, W) -> (B, 2C, T, 2H, 2W): x_t,
    then every frame of low upsampled bilinearly (align_corners=False), frames never mixed."""
    if fn is None:
        from minivid.pipelines.ch05_sr import ssr_input as fn
    ex, title = "5.3", _TITLES["5.3"]
    for B, C, T, H, W in ((2, 3, 4, 5, 6), (1, 2, 3, 4, 3)):
        x_t, low = _rand(B, C, T, 2 * H, 2 * W, seed=H), _rand(B, C, T, H, W, seed=W + 10)
        want = ssr_input_reference(x_t, low)
        got = _run(ex, fn, x_t, low)
        label = f"low {(B, C, T, H, W)}"
        if not torch.is_tensor(got) or tuple(got.shape) != tuple(want.shape):
            shape = _shape_of(got)
            hint = ("x_t is missing: concatenate it first, torch.cat([x_t, up], 1)" if shape == (B, C, T, 2 * H, 2 * W)
                    else _CRASH_HINTS[ex])
            raise failed(ex, title, f"{label}: output {shape}, expected {tuple(want.shape)}", hint)
        if _same(got, want):
            continue
        hints = [what for what, alt in _wrong_ssr(x_t, low).items() if _same(got, alt)][:1]
        if not hints:
            hints.append("each output pixel (i, j) mixes the 4 nearest low pixels around ((i + 0.5) / 2 - 0.5, "
                         "(j + 0.5) / 2 - 0.5): F.interpolate(..., mode='bilinear', align_corners=False) on "
                         "fold_frames(low)")
        raise failed(ex, title, f"{label}: differs from the reference by {float((got.double() - want).abs().max()):.3g}",
                     *hints)
    return passed(ex, title)


CHECKS = {"5.1": check_tsr_input, "5.2": check_augment, "5.3": check_ssr_input}

HINTS = {
    "5.1": ["The TSR network sees the noisy 2T-frame clip and, on more channels, the T-frame clip it must fill in: "
            "low's frame i sits on frame 2i.",
            "'repeat': frame 2i + 1 shows low's frame i again - low.repeat_interleave(2, dim=2) (low.repeat would play "
            "the clip twice).",
            "'blank': start from zeros (B, C, 2T, H, W), set cond[:, :, ::2] = low, and add a mask (B, 1, 2T, H, W) that "
            "is 1 on the even frames.",
            "Return torch.cat([x_t, cond], 1): x_t first, then the conditioning (then the mask)."],
    "5.2": ["Noise-conditioning augmentation noises the conditioning clip with the forward process q(x_k | x_0).",
            "Level k means k steps taken: alpha-bar after 0 steps is 1 (the clean clip), after k steps "
            "schedule.alpha_bars[k - 1].",
            "table = torch.cat([torch.ones(1, dtype=...), schedule.alpha_bars]); a = gather(table, level, low); "
            "return a.sqrt() * low + (1 - a).sqrt() * noise."],
    "5.3": ["The SSR network sees the noisy high-res clip and, on more channels, the low-res clip resized to its size.",
            "Upsample frame by frame: fold_frames(low) puts the frames in the batch, (B*T, C, H, W).",
            "F.interpolate(fold_frames(low), size=(2 * H, 2 * W), mode='bilinear', align_corners=False), then "
            "unfold_frames(up, T) and torch.cat([x_t, up], 1)."],
}

MISTAKES = [
    Mistake("5.1", "the clip tiled (played twice) instead of each frame repeated", "low.repeat_interleave(2, dim=2)",
            "low.repeat(1, 1, 2, 1, 1)"),
    Mistake("5.1", "low's frames placed on the odd frames", "cond[:, :, ::2] = low", "cond[:, :, 1::2] = low"),
    Mistake("5.1", "the mask inverted (1 on the frames to invent)", "known[:, :, ::2] = 1", "known[:, :, 1::2] = 1"),
    Mistake("5.1", "the in-between frames not blanked", "cond = low.new_zeros(B, C, 2 * T, H, W)",
            "cond = low.repeat_interleave(2, dim=2)"),
    Mistake("5.1", "the conditioning before x_t on the channels", "torch.cat([x_t, cond], 1)",
            "torch.cat([cond, x_t], 1)"),
    Mistake("5.2", "alpha_bars indexed by the level (off by one: level 0 is not the clean clip)",
            "a = gather(table, level, low)", "a = gather(schedule.alpha_bars, level, low)"),
    Mistake("5.2", "variances used as scales (no square roots)", "a.sqrt() * low + (1 - a).sqrt() * noise",
            "a * low + (1 - a) * noise"),
    Mistake("5.2", "the clip not scaled down (noise only added)", "a.sqrt() * low + ", "low + "),
    Mistake("5.3", "nearest-neighbour upsampling", 'mode="bilinear", align_corners=False', 'mode="nearest"'),
    Mistake("5.3", "align_corners=True", "align_corners=False", "align_corners=True"),
    Mistake("5.3", "frames and channels mixed by a plain reshape", "fold_frames(low)", "low.reshape(B * T, C, H, W)"),
    Mistake("5.3", "the upsampled clip before x_t", "torch.cat([x_t, unfold_frames(up, T)], 1)",
            "torch.cat([unfold_frames(up, T), x_t], 1)"),
]

__all__ = ["check_tsr_input", "check_augment", "check_ssr_input", "tsr_input_reference", "augment_reference",
           "bilinear_matrix", "ssr_input_reference", "CHECKS", "HINTS", "MISTAKES"]
