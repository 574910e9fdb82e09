"""Chapter 06 exercises (Video LDM, arXiv:2304.08818; latent diffusion, arXiv:2112.10752): checkers shared by the
notebook and the tests, hints, and known mistakes.

6.1 the KL term (`DiagonalGaussian.kl`) and 6.2 the latent scale factor (`latent_scale_factor`) live in
`minivid/models/vae.py`; 6.3, the alpha blend of the spatial and temporal outputs with the image-item override
(`alpha_blend`), in `minivid/models/alignment.py`. Each checker runs the learner's function in float64 against a
reference written out here another way - the KL as a sum of scalar terms per item (math.fsum), the standard deviation
from its definition, the blend from its formula - with random inputs of odd sizes; on failure it compares the output
with the usual wrong answers and says what to fix: for 6.1 the -1 left out, the mean over the dimensions instead of
the sum, the 1/2 forgotten, sigma in place of sigma^2, a sum over the wrong axes or the batch; for 6.2 the std itself
instead of its inverse, one number per channel, the variance, the population std, a std around 0; for 6.3 no sigmoid,
the two weights swapped, image items not overridden, the image flags repeated in the wrong order, the form that is
right in exact arithmetic but not bit-exact at initialisation. A pass prints one line and returns True; a failure
raises AssertionError (NotImplementedError while the exercise is a stub). The meta-test substitutes every mistake
below and requires a test marked for that exercise to fail on it.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minivid.exercises.base import Mistake, failed, guarded, passed

_TOL = 1e-10                   # float64 throughout
_TITLES = {"6.1": "KL term", "6.2": "latent scale factor", "6.3": "alpha blend"}
_WHERE = {"6.1": "minivid/models/vae.py (DiagonalGaussian.kl)", "6.2": "minivid/models/vae.py (latent_scale_factor)",
          "6.3": "minivid/models/alignment.py (alpha_blend)"}
_CRASH_HINTS = {
    "6.1": "self.mean and self.logvar are (B, ...) tensors (any number of latent dims: images (B, c, h, w), clips "
           "(B, c, T, h, w)); self.var = exp(logvar); per_dim.flatten(1).sum(dim=1) gives one KL per item, (B,)",
    "6.2": "the latents may carry gradients (an encoder's sample): latents.detach().double().flatten().std() is one "
           "number for all of them; return float(1 / std)",
    "6.3": "alpha = torch.sigmoid(logit) is a 0-d tensor: it broadcasts against (B*T, C, H, W); the image flags (B,) "
           "need one entry per folded frame, image.repeat_interleave(num_frames), viewed as (B*T, 1, 1, 1)",
}


def _rand(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(a, b) -> bool:
    return torch.is_tensor(a) and a.shape == b.shape and float((a.double() - b).abs().max()) <= _TOL


def _near(a, b, rtol: float = _TOL) -> bool:
    """a and b (tensors or numbers) of one shape, equal to relative tolerance rtol (absolute near 0)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(((a - b).abs() <= rtol * (1 + b.abs())).all())


def _run(ex: str, fn, *args, **kwargs):
    """fn(...) for exercise ex: see `minivid.exercises.base.guarded`."""
    return guarded(ex, _WHERE[ex], _TITLES[ex], fn, *args, hint=_CRASH_HINTS[ex], **kwargs)


# ----------------------------------------------------------------------------- 6.1 the KL term

def _per_item(mean: torch.Tensor, logvar: torch.Tensor, term: Callable[[float, float], float]) -> torch.Tensor:
    """float64 (B,): term(mu, logvar) of every latent dimension of an item, added up with math.fsum."""
    return torch.tensor([math.fsum(term(u, v) for u, v in zip(m, lv)) for m, lv in
                         zip(mean.double().flatten(1).tolist(), logvar.double().flatten(1).tolist())],
                        dtype=torch.float64)


def kl_reference(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, s^2) || N(0, 1)) = log(1 / s) + (s^2 + mu^2) / 2 - 1/2 for every dimension (log s = logvar / 2),
    summed per item in float64: (B,)."""
    return _per_item(mean, logvar, lambda u, v: -0.5 * v + 0.5 * (math.exp(v) + u * u) - 0.5)


def _kl_slips(mean, logvar, want, D: int) -> dict[str, torch.Tensor]:
    """{what went wrong: the KL it gives}."""
    term = lambda f: _per_item(mean, logvar, f)                                     # noqa: E731
    return {
        "the -1 is missing: KL = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2) per dimension - without it N(0, I) itself "
        "would cost 1/2 a dimension": want + 0.5 * D,
        "averaged over the latent dimensions: the KL of independent dimensions adds up, so sum them - "
        "per_dim.flatten(1).sum(dim=1) (LDM sums; the loss divides by the element count itself)": want / D,
        "the factor 1/2 is missing: KL = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)": 2 * want,
        "the sign is flipped: a KL is never negative": -want,
        "sigma where sigma^2 belongs: the variance is self.var = exp(logvar) (self.std is its square root)":
            term(lambda u, v: 0.5 * (u * u + math.exp(0.5 * v) - 1 - v)),
        "the log term is log sigma^2, which is self.logvar itself (not log sigma = logvar / 2)":
            term(lambda u, v: 0.5 * (u * u + math.exp(v) - 1 - 0.5 * v)),
        "mu^2 is missing: a posterior whose mean is far from 0 must cost more":
            term(lambda u, v: 0.5 * (math.exp(v) - 1 - v)),
        "the KL runs the wrong way (that is KL(N(0, I) || q)): the term is KL(q || N(0, I)), q the posterior":
            term(lambda u, v: 0.5 * ((1 + u * u) / math.exp(v) - 1 + v)),
    }


def check_kl(kl: Callable | None = None) -> bool:
    """Exercise 6.1: `DiagonalGaussian.kl(self)` -> (B,): KL(q || N(0, I)) in nats of the posterior
    q = N(mean, diag(exp(logvar))), 1/2 (mu^2 + sigma^2 - 1 - log sigma^2) summed over every latent dimension of an
    item, differentiable in mean and logvar.

    kl: a function (posterior) -> (B,), e.g. your own version of the method; default: minivid's.
    """
    from minivid.models.vae import DiagonalGaussian
    fn = kl or DiagonalGaussian.kl
    ex, title = "6.1", _TITLES["6.1"]
    for name, shape, seed in (("an image posterior", (3, 4, 5, 6), 11), ("a clip's posterior", (2, 4, 3, 5, 7), 12)):
        mean, logvar = _rand(*shape, seed=seed), 1.5 * _rand(*shape, seed=seed + 100)
        q = DiagonalGaussian(mean, logvar)
        want, D = kl_reference(q.mean, q.logvar), math.prod(shape[1:])
        got = _run(ex, fn, q)
        label = f"{name} {tuple(shape)}"
        if not torch.is_tensor(got) or tuple(got.shape) != (shape[0],):
            got_shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
            hint = _CRASH_HINTS[ex]
            if torch.is_tensor(got) and got.dim() == 0:
                hint = ("one KL per item, (B,): sum over every dimension but the batch, per_dim.flatten(1).sum(dim=1) "
                        "(the loss averages over the batch itself)")
            elif torch.is_tensor(got) and tuple(got.shape) == tuple(shape):
                hint = "these are the per-dimension terms: add them up per item, per_dim.flatten(1).sum(dim=1)"
            elif torch.is_tensor(got) and got.dim() > 1 and got.shape[0] == shape[0]:
                hint = ("summed over some latent axes only: a posterior may have any number of them (a clip's is "
                        "(B, c, T, h, w)), so flatten(1) first, then sum(dim=1)")
            raise failed(ex, title, f"{label}: output {got_shape}, expected ({shape[0]},), one KL per item", hint)
        if not _near(got, want):
            hints = [h for h, alt in _kl_slips(q.mean, q.logvar, want, D).items() if _near(got, alt, 1e-8)]
            raise failed(ex, title, f"{label}: differs from 1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2) by "
                         f"{float((got.double() - want).abs().max()):.3g} (the KL of item 0 is {float(want[0]):.6g}, "
                         f"yours {float(got[0]):.6g})", *hints)
    mean = _rand(2, 3, 4, 5, seed=13).requires_grad_(True)
    logvar = _rand(2, 3, 4, 5, seed=14).requires_grad_(True)
    out = _run(ex, fn, DiagonalGaussian(mean, logvar))
    if not torch.is_tensor(out) or not out.requires_grad:
        raise failed(ex, title, "no gradient reaches mean and logvar",
                     "the KL is part of the autoencoder's training loss: compute it from the tensors, without .item(), "
                     ".detach(), .numpy() or Python floats")
    out.sum().backward()
    if mean.grad is None or logvar.grad is None or not _near(mean.grad, mean.detach()) or not _near(
            logvar.grad, 0.5 * (logvar.detach().exp() - 1)):
        raise failed(ex, title, "the gradients are wrong: d KL / d mu must be mu and d KL / d logvar "
                     "(exp(logvar) - 1) / 2", "part of the formula is detached or computed from a Python number")
    return passed(ex, title)


# ----------------------------------------------------------------------------- 6.2 the latent scale factor

def scale_reference(latents: torch.Tensor) -> float:
    """1 / std of all elements, from the definition in float64: 1 / sqrt(sum (z - mean)^2 / (n - 1))."""
    v = latents.detach().double().flatten().tolist()
    mu = math.fsum(v) / len(v)
    return 1 / math.sqrt(math.fsum((x - mu) ** 2 for x in v) / (len(v) - 1))


def _scale_slips(z: torch.Tensor, want: float) -> dict[str, float]:
    """{what went wrong: the number it gives}."""
    n, per_channel = z.numel(), z.detach().double().transpose(0, 1).flatten(1).std(dim=1)
    rms = math.sqrt(math.fsum(x * x for x in z.detach().double().flatten().tolist()) / n)
    return {
        "that is the std itself: the factor is its inverse, 1 / std, so that scale * z has unit std": 1 / want,
        "that is 1 / variance: take the square root, the factor is 1 / std": want ** 2,
        "that is 1 / the population std (dividing by n): use torch's default .std(), which divides by n - 1, as LDM's "
        "z.flatten().std() does": want * math.sqrt(n / (n - 1)),
        "the channels' stds were averaged: take the std of all elements together (flatten()), which also counts how "
        "far apart the channels' means are": 1 / float(per_channel.mean()),
        "the channels' factors were averaged: one std of all elements together (flatten())":
            float((1 / per_channel).mean()),
        "that is 1 / the root mean square (a 'std' around 0): the std subtracts the mean, which .std() does": 1 / rms,
    }


def check_latent_scale_factor(fn: Callable | None = None) -> bool:
    """Exercise 6.2: `latent_scale_factor(latents, generator=None)` -> float: 1 / std of ALL latent elements together
    (torch's default, unbiased std), one number for every channel. (A DiagonalGaussian is sampled before the exercise's
    lines; the checker gives latent tensors.)

    fn: a function with that signature, e.g. your own version; default: minivid's.
    """
    if fn is None:
        from minivid.models.vae import latent_scale_factor as fn
    ex, title = "6.2", _TITLES["6.2"]
    # latents like an encoder's: 4 channels, each with its own offset and spread; (B, c, T, h, w), all sizes different
    shape = (3, 4, 5, 6, 7)
    offset = torch.tensor([0.8, -1.5, 0.3, 2.0], dtype=torch.float64).view(1, 4, 1, 1, 1)
    spread = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64).view(1, 4, 1, 1, 1)
    z = _rand(*shape, seed=21) * spread + offset
    want = scale_reference(z)
    got = _run(ex, fn, z)
    if torch.is_tensor(got) and got.numel() == shape[1]:
        raise failed(ex, title, f"returned {got.numel()} numbers, one per channel: LDM scales every channel by one "
                     "number, 1 / the std of all the latent elements together (latents.flatten().std())")
    if not isinstance(got, float):
        kind = f"a tensor of shape {tuple(got.shape)}" if torch.is_tensor(got) else type(got).__name__
        raise failed(ex, title, f"returned {kind}, not a Python float",
                     "the factor is one plain number stored with the model: return float(1 / std)")
    if not _near(got, want):
        hints = [h for h, alt in _scale_slips(z, want).items() if _near(got, alt, 1e-8)]
        raise failed(ex, title, f"latents {shape} (channel offsets {offset.flatten().tolist()}, spreads "
                     f"{spread.flatten().tolist()}): {got:.8g}, expected 1 / std = {want:.8g}", *hints)
    z32 = (0.25 * z).float().requires_grad_(True)               # as the encoder gives them: float32, maybe with grad
    before = z32.detach().clone()
    got = _run(ex, fn, z32)
    if not torch.equal(z32.detach(), before):
        raise failed(ex, title, "the latents were changed in place", "leave the caller's latents as they are: no "
                     "sub_, div_ or other in-place ops on them (work on latents.detach().double(), a copy)")
    if not isinstance(got, float) or not _near(got, scale_reference(z32), 1e-6):
        raise failed(ex, title, f"float32 latents with requires_grad: {got!r}, expected {scale_reference(z32):.8g} "
                     "(four times the factor above: the scale must follow the latents' spread)")
    return passed(ex, title)


# ----------------------------------------------------------------------------- 6.3 the alpha blend

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
    got = _run("6.3", fn, s, t, logit)
    if not torch.is_tensor(got) or got.shape != s.shape:
        shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
        raise failed("6.3", _TITLES["6.3"], f"output {shape}, expected {tuple(s.shape)} (the shape of spatial)")
    if not _close(got, want):
        hints = []
        if _close(got, 0.4 * s + 0.6 * t):
            hints.append("the logit was used as alpha itself: alpha = torch.sigmoid(logit), which keeps it in [0, 1]")
        elif _close(got, (1 - a) * s + a * t):
            hints.append("the weights are swapped: alpha weighs the spatial output (alpha = 1 is the image model)")
        elif _close(got, t) or _close(got, s):
            hints.append("the output is one of the two inputs: blend them, alpha * spatial + (1 - alpha) * temporal")
        raise failed("6.3", _TITLES["6.3"], f"logit 0.4, no image items: differs from sigmoid(0.4) * spatial + (1 - "
                     f"sigmoid(0.4)) * temporal by {float((got.double() - want).abs().max()):.3g}", *hints)
    for what, args in (("temporal == spatial (an identity-initialised temporal layer)", (s, s.clone(), logit)),
                       ("alpha = 1 (logit = +inf)", (s, t, torch.tensor(math.inf, dtype=torch.float64)))):
        if not torch.equal(_run("6.3", fn, *args), s):
            raise failed("6.3", _TITLES["6.3"], f"with {what} the output is not exactly `spatial`",
                         "a * s + (1 - a) * s rounds away from s in the last bit: write the same blend as spatial + "
                         "(1 - alpha) * (temporal - spatial), which is exact there - so a video model whose temporal "
                         "layers start as the identity is the image model exactly, whatever alpha is")
    image = torch.tensor([True, False, True])
    rows = image.repeat_interleave(T)
    got = _run("6.3", fn, s, t, logit, image, T)
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
        raise failed("6.3", _TITLES["6.3"], "image = [True, False, True], T = 4: the image items' frames must be "
                     "exactly `spatial` and the clip's frames the blend", *hints)
    lg = logit.clone().requires_grad_(True)
    out = _run("6.3", fn, s, t, lg)
    if out.requires_grad:
        out.sum().backward()
    if lg.grad is None or float(lg.grad.abs()) == 0:
        raise failed("6.3", _TITLES["6.3"], "no gradient reaches the logit",
                     "compute alpha from the tensor (torch.sigmoid(logit)), not from a Python float: alpha is learned")
    return passed("6.3", _TITLES["6.3"])


CHECKS = {"6.1": check_kl, "6.2": check_latent_scale_factor, "6.3": check_alpha_blend}

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
    Mistake("6.1", "the factor 1/2 forgotten", "0.5 * (self.mean.pow(2)", "(self.mean.pow(2)"),
    Mistake("6.1", "sigma in place of sigma^2", "+ self.var - 1.0", "+ self.std - 1.0"),
    Mistake("6.2", "the std itself instead of its inverse", "float(1.0 / latents.detach().double().flatten().std())",
            "float(latents.detach().double().flatten().std())"),
    Mistake("6.2", "the population std (divides by n)", ".flatten().std())", ".flatten().std(correction=0))"),
    Mistake("6.2", "1 / the variance instead of 1 / the std", ".flatten().std())", ".flatten().var())"),
    Mistake("6.3", "the logit used as alpha (no sigmoid)", "alpha = torch.sigmoid(logit)", "alpha = logit"),
    Mistake("6.3", "the weights swapped (alpha on the temporal output)", "spatial + (1 - alpha) * (temporal - spatial)",
            "(1 - alpha) * spatial + alpha * temporal"),
    Mistake("6.3", "alpha * s + (1 - alpha) * t: right in exact arithmetic, not exact at initialisation",
            "spatial + (1 - alpha) * (temporal - spatial)", "alpha * spatial + (1 - alpha) * temporal"),
    Mistake("6.3", "image items blended like clips (no alpha = 1 override)", "if image is not None:", "if False:"),
    Mistake("6.3", "the image flags repeated in the wrong order (repeat, not repeat_interleave)",
            "image.bool().repeat_interleave(num_frames)", "image.bool().repeat(num_frames)"),
]

__all__ = ["kl_reference", "check_kl", "scale_reference", "check_latent_scale_factor", "check_alpha_blend", "CHECKS",
           "HINTS", "MISTAKES"]
