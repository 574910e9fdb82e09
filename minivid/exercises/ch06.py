"""Chapter 06 exercises (Video LDM, arXiv:2304.08818): a checker shared by the notebook and the tests, hints, and
known mistakes.

6.1 the KL term and 6.2 the latent scale factor live in `minivid/models/vae.py`; 6.3, the alpha blend of the
spatial and temporal outputs with the image-item override (`alpha_blend`), in `minivid/models/alignment.py`.
`check_alpha_blend` runs the learner's function in float64 against the formula written out here, with random
inputs of odd sizes; on failure it compares the output with the usual wrong answers (no sigmoid, the two weights
swapped, image items not overridden, the image flags repeated in the wrong order, the form that is right in exact
arithmetic but not bit-exact at initialisation) and says what to fix. The meta-test substitutes every mistake
below and requires a test marked for that exercise to fail on it.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minivid.exercises.base import Mistake, call, failed, passed

_TOL = 1e-10                   # float64 throughout
_TITLE = "alpha blend"
_WHERE = "minivid/models/alignment.py (alpha_blend)"


def _rand(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(a, b) -> bool:
    return torch.is_tensor(a) and a.shape == b.shape and float((a.double() - b).abs().max()) <= _TOL


def _run(fn, *args):
    try:
        return call("6.3", _WHERE, fn, *args)
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - a learner's bug of any kind becomes feedback
        raise failed("6.3", _TITLE, f"raised {type(e).__name__}: {e}",
                     "alpha = torch.sigmoid(logit) is a 0-d tensor: it broadcasts against (B*T, C, H, W); the image "
                     "flags (B,) need one entry per folded frame, image.repeat_interleave(num_frames), viewed as "
                     "(B*T, 1, 1, 1)") from e


def check_alpha_blend(fn: Callable | None = None) -> bool:
    """Exercise 6.3: `alpha_blend(spatial, temporal, logit, image=None, num_frames=1)` -> (B*T, C, H, W):
    alpha * spatial + (1 - alpha) * temporal with alpha = sigmoid(logit), exactly `spatial` for the frames of image
    items (image[b] True), and exactly `spatial` where temporal == spatial.

    fn: a function with that signature, e.g. your own version; default: minivid's.
    """
    if fn is None:
        from minivid.models.alignment import alpha_blend as fn
    B, T, C, H, W = 3, 4, 2, 3, 5
    s, t = _rand(B * T, C, H, W, seed=1), _rand(B * T, C, H, W, seed=2)
    logit = torch.tensor(0.4, dtype=torch.float64)
    a = 1 / (1 + math.exp(-0.4))
    want = a * s + (1 - a) * t
    got = _run(fn, s, t, logit)
    if not torch.is_tensor(got) or got.shape != s.shape:
        shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
        raise failed("6.3", _TITLE, f"output {shape}, expected {tuple(s.shape)} (the shape of spatial)")
    if not _close(got, want):
        hints = []
        if _close(got, 0.4 * s + 0.6 * t):
            hints.append("the logit was used as alpha itself: alpha = torch.sigmoid(logit), which keeps it in [0, 1]")
        elif _close(got, (1 - a) * s + a * t):
            hints.append("the weights are swapped: alpha weighs the spatial output (alpha = 1 is the image model)")
        elif _close(got, t) or _close(got, s):
            hints.append("the output is one of the two inputs: blend them, alpha * spatial + (1 - alpha) * temporal")
        raise failed("6.3", _TITLE, f"logit 0.4, no image items: differs from sigmoid(0.4) * spatial + (1 - "
                     f"sigmoid(0.4)) * temporal by {float((got.double() - want).abs().max()):.3g}", *hints)
    for what, args in (("temporal == spatial (an identity-initialised temporal layer)", (s, s.clone(), logit)),
                       ("alpha = 1 (logit = +inf)", (s, t, torch.tensor(math.inf, dtype=torch.float64)))):
        if not torch.equal(_run(fn, *args), s):
            raise failed("6.3", _TITLE, f"with {what} the output is not exactly `spatial`",
                         "a * s + (1 - a) * s rounds away from s in the last bit: write the same blend as spatial + "
                         "(1 - alpha) * (temporal - spatial), which is exact there - so a video model whose temporal "
                         "layers start as the identity is the image model exactly, whatever alpha is")
    image = torch.tensor([True, False, True])
    rows = image.repeat_interleave(T)
    got = _run(fn, s, t, logit, image, T)
    if not torch.is_tensor(got) or got.shape != s.shape or not torch.equal(got[rows], s[rows]) or not _close(
            got[~rows], want[~rows]):
        hints = []
        if _close(got, want):
            hints.append("image items were blended like clips: their frames must be exactly `spatial` (alpha = 1), "
                         "torch.where(keep, spatial, out)")
        elif torch.is_tensor(got) and got.shape == s.shape and _close(
                got, torch.where(image.repeat(T)[:, None, None, None], s, want)):
            hints.append("the image flags went to the wrong frames: item b owns the folded rows b*T .. b*T + T - 1, "
                         "so repeat each flag T times in place, image.repeat_interleave(num_frames) (not .repeat)")
        raise failed("6.3", _TITLE, "image = [True, False, True], T = 4: the image items' frames must be exactly "
                     "`spatial` and the clip's frames the blend", *hints)
    lg = logit.clone().requires_grad_(True)
    out = _run(fn, s, t, lg)
    if out.requires_grad:
        out.sum().backward()
    if lg.grad is None or float(lg.grad.abs()) == 0:
        raise failed("6.3", _TITLE, "no gradient reaches the logit",
                     "compute alpha from the tensor (torch.sigmoid(logit)), not from a Python float: alpha is learned")
    return passed("6.3", _TITLE)


CHECKS = {"6.3": check_alpha_blend}

HINTS = {
    "6.1": ["For a diagonal Gaussian against N(0, I) the KL has a closed form, one term per latent dimension.",
            "KL = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2) per dimension, summed (not averaged) over an item's "
            "dimensions."],
    "6.2": ["Latent diffusion wants latents of unit variance: scale them by one number.",
            "The scale factor is 1 / std of the latents (all elements together), in float64."],
    "6.3": ["Video LDM merges the frozen spatial layer's output z and the temporal layer's z' as "
            "alpha * z + (1 - alpha) * z', alpha in [0, 1]; alpha = sigmoid(logit) keeps it there while the logit "
            "learns freely.",
            "Write it spatial + (1 - alpha) * (temporal - spatial): the same number in exact arithmetic, and exactly "
            "`spatial` when the temporal layer still returns its input (at initialisation) or alpha = 1.",
            "Image items take alpha = 1. Frames are folded into the batch, item b owning rows b*T .. b*T + T - 1: "
            "keep = image.repeat_interleave(num_frames)[:, None, None, None], then torch.where(keep, spatial, out)."],
}

MISTAKES = [
    Mistake("6.1", "the -1 left out of the KL", "- 1.0 - self.logvar", "- self.logvar"),
    Mistake("6.1", "averaged over the latent dimensions instead of summed", ".sum(dim=1)", ".mean(dim=1)"),
    Mistake("6.2", "the std itself instead of its inverse", "float(1.0 / latents.detach().double().flatten().std())",
            "float(latents.detach().double().flatten().std())"),
    Mistake("6.3", "the logit used as alpha (no sigmoid)", "alpha = torch.sigmoid(logit)", "alpha = logit"),
    Mistake("6.3", "the weights swapped (alpha on the temporal output)", "spatial + (1 - alpha) * (temporal - spatial)",
            "(1 - alpha) * spatial + alpha * temporal"),
    Mistake("6.3", "alpha * s + (1 - alpha) * t: right in exact arithmetic, not exact at initialisation",
            "spatial + (1 - alpha) * (temporal - spatial)", "alpha * spatial + (1 - alpha) * temporal"),
    Mistake("6.3", "image items blended like clips (no alpha = 1 override)", "if image is not None:", "if False:"),
    Mistake("6.3", "the image flags repeated in the wrong order (repeat, not repeat_interleave)",
            "image.bool().repeat_interleave(num_frames)", "image.bool().repeat(num_frames)"),
]

__all__ = ["check_alpha_blend", "CHECKS", "HINTS", "MISTAKES"]
