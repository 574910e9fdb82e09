"""The checkers of exercises 6.1 (the KL term) and 6.2 (the latent scale factor), minivid.exercises.ch06: each passes
on the package's solution and names the usual mistakes when given one. (6.3's checker is tested in test_ch06.py.)"""
import math

import pytest
import torch

from minivid.exercises import ch06 as checks
from minivid.exercises.base import checker_for
from minivid.models.vae import DiagonalGaussian, latent_scale_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def _kl(per_dim):
    """A KL 'method' from a per-dimension formula f(mean, var, logvar, std), summed per item."""
    return lambda q: per_dim(q.mean, q.var, q.logvar, q.std).flatten(1).sum(dim=1)


@pytest.mark.exercise("6.1")
def test_kl_checker_passes_and_agrees_with_torch_distributions():
    assert checks.check_kl() and checker_for("6.1") is checks.check_kl
    q = DiagonalGaussian(torch.randn(2, 4, 3, 5, dtype=torch.float64), torch.randn(2, 4, 3, 5, dtype=torch.float64))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(q.mean, q.std),
                                            torch.distributions.Normal(torch.zeros_like(q.mean), 1.0))
    assert torch.allclose(checks.kl_reference(q.mean, q.logvar), ref.flatten(1).sum(1), rtol=1e-12, atol=1e-12)


@pytest.mark.exercise("6.1")
def test_kl_checker_names_the_usual_mistakes():
    wrong = {
        "the -1 is missing": _kl(lambda m, v, lv, s: 0.5 * (m ** 2 + v - lv)),
        "averaged over the latent dimensions":
            lambda q: (0.5 * (q.mean ** 2 + q.var - 1 - q.logvar)).flatten(1).mean(1),
        "the factor 1/2 is missing": _kl(lambda m, v, lv, s: m ** 2 + v - 1 - lv),
        "sigma where sigma.2 belongs": _kl(lambda m, v, lv, s: 0.5 * (m ** 2 + s - 1 - lv)),
        "log sigma.2, which is self.logvar": _kl(lambda m, v, lv, s: 0.5 * (m ** 2 + v - 1 - torch.log(s))),
        "mu.2 is missing": _kl(lambda m, v, lv, s: 0.5 * (v - 1 - lv)),
        "the wrong way": _kl(lambda m, v, lv, s: 0.5 * ((1 + m ** 2) / v - 1 + lv)),
        "one KL per item": lambda q: (0.5 * (q.mean ** 2 + q.var - 1 - q.logvar)).sum(),
        "the per-dimension terms": lambda q: 0.5 * (q.mean ** 2 + q.var - 1 - q.logvar),
        "some latent axes only": lambda q: (0.5 * (q.mean ** 2 + q.var - 1 - q.logvar)).sum(dim=(1, 2, 3)),
        "no gradient reaches": lambda q: _kl(lambda m, v, lv, s: 0.5 * (m ** 2 + v - 1 - lv))(q).detach(),
        "the gradients are wrong": _kl(lambda m, v, lv, s: 0.5 * (m.detach() ** 2 + v - 1 - lv)),
    }
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_kl(fn)

    def stub(q):
        raise NotImplementedError("Exercise 6.1: the KL term")

    with pytest.raises(NotImplementedError, match="Exercise 6.1 is not implemented yet"):
        checks.check_kl(stub)


@pytest.mark.exercise("6.2")
def test_scale_factor_checker_passes_and_its_reference_is_the_definition():
    assert checks.check_latent_scale_factor() and checker_for("6.2") is checks.check_latent_scale_factor
    z = torch.tensor([1.0, 2.0, 4.0, 7.0])                        # mean 3.5, sum of squares 21, n - 1 = 3
    assert checks.scale_reference(z) == pytest.approx(1 / math.sqrt(7.0), rel=1e-15)
    assert latent_scale_factor(z) == pytest.approx(checks.scale_reference(z), rel=1e-15)


@pytest.mark.exercise("6.2")
def test_scale_factor_checker_names_the_usual_mistakes():
    flat = lambda z: z.detach().double().flatten()                                 # noqa: E731
    per_channel = lambda z: z.detach().double().transpose(0, 1).flatten(1).std(1)  # noqa: E731
    wrong = {
        "the std itself": lambda z, generator=None: float(flat(z).std()),
        "1 / variance": lambda z, generator=None: float(1 / flat(z).var()),
        "population std": lambda z, generator=None: float(1 / flat(z).std(correction=0)),
        "stds were averaged": lambda z, generator=None: float(1 / per_channel(z).mean()),
        "factors were averaged": lambda z, generator=None: float((1 / per_channel(z)).mean()),
        "root mean square": lambda z, generator=None: float(1 / flat(z).pow(2).mean().sqrt()),
        "one per channel": lambda z, generator=None: 1 / per_channel(z),
        "not a Python float": lambda z, generator=None: 1 / flat(z).std(),
        "changed in place": lambda z, generator=None: float(1 / z.detach().sub_(z.detach().mean()).double().std()),
        r"raised RuntimeError.*\.detach\(\)": lambda z, generator=None: float(1 / z.numpy().std(ddof=1)),
    }
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_latent_scale_factor(fn)
