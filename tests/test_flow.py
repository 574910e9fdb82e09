"""Chapter 08: rectified flow / flow matching (arXiv:2209.03003, 2210.02747, SD3 2403.03206) — closed forms."""
import math

import pytest
import torch

from minivid.diffusion.flow import (
    flow_interpolate,
    flow_matching_loss,
    flow_sample,
    flow_timesteps,
    sample_flow_t,
    x0_eps_from_velocity,
)
from minivid.models.dit import DiT, dit_config
from minivid.compare import assert_close

F64 = torch.float64
MU = torch.tensor([0.7, -1.5, 0.0, 2.0], dtype=F64)      # data ~ N(MU, diag(SD^2))
SD = torch.tensor([0.3, 1.0, 0.05, 2.0], dtype=F64)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def gaussian_velocity(x, t):
    """The exact v*(x, t) = E[eps - x0 | x_t = x] for x0 ~ N(MU, SD^2): x_t ~ N((1-t) MU, (1-t)^2 SD^2 + t^2).

    (eps - x0, x_t) are jointly Gaussian: Cov(eps - x0, x_t) = t - (1 - t) SD^2.
    """
    tt = t.to(x.dtype)[:, None]
    var = (1 - tt) ** 2 * SD**2 + tt**2
    return -MU + (tt - (1 - tt) * SD**2) / var * (x - (1 - tt) * MU)


# ----------------------------------------------------------------------------- the path and the target


@pytest.mark.exercise("8.3")
def test_interpolation_and_velocity_closed_form():
    x0, eps = torch.randn(2, 5, 3, 4, 4, dtype=F64)
    t = torch.tensor([0.0, 1.0, 0.3, 0.75, 0.5], dtype=F64)
    x_t, v = flow_interpolate(x0, eps, t)
    tt = t[:, None, None, None]
    assert_close(x_t, (1 - tt) * x0 + tt * eps, atol=1e-12, rtol=1e-12, name="x_t")
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[1], eps[1]), "t = 0 is data, t = 1 is noise"
    # v is the time derivative of the path (finite difference, independent of any formula)
    h = 1e-6
    x_th, _ = flow_interpolate(x0, eps, t.clamp(max=1 - h) + h)
    x_tm, _ = flow_interpolate(x0, eps, t.clamp(max=1 - h))
    assert_close(v, (x_th - x_tm) / h, atol=1e-7, rtol=1e-6, name="v = dx_t/dt")
    assert_close(v, eps - x0, atol=0, rtol=0, name="v = eps - x0")
    x0_hat, eps_hat = x0_eps_from_velocity(x_t, t, v)
    assert_close(x0_hat, x0, atol=1e-12, rtol=1e-12, name="x0 from v")
    assert_close(eps_hat, eps, atol=1e-12, rtol=1e-12, name="eps from v")


@pytest.mark.exercise("8.3")
def test_loss_is_zero_for_the_exact_velocity_of_a_point_mass():
    """Data = one point c: v*(x, t) = (x - c) / t exactly, so its loss is 0; the sign-flipped field is not."""
    c = torch.tensor([[0.5, -2.0, 1.0]], dtype=F64)
    x0 = c.expand(64, 3)
    t = torch.linspace(0.05, 1.0, 64, dtype=F64)
    exact = lambda x, t: (x - c) / t[:, None]                                        # noqa: E731
    loss = flow_matching_loss(exact, x0, _g(), t=t)
    assert loss.item() < 1e-20
    wrong = flow_matching_loss(lambda x, t: -exact(x, t), x0, _g(), t=t)
    assert wrong.item() > 1.0
    noise = torch.randn(64, 3, generator=_g(1), dtype=F64)
    per = flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, t=t, noise=noise, reduction="none")
    assert_close(per, (noise - x0).pow(2).mean(1), atol=1e-12, rtol=1e-12, name="loss of the zero model")


def test_t_samplers():
    u = sample_flow_t(20000, "uniform", _g())
    assert u.shape == (20000,) and u.min() >= 0 and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    ln = sample_flow_t(20000, "logit_normal", _g())
    assert ln.min() > 0 and ln.max() < 1
    # P(t <= sigmoid(z)) = Phi(z) for logit(t) ~ N(0, 1); and t, 1 - t have the same law
    for z in (-1.0, 0.0, 1.5):
        frac = (ln <= torch.sigmoid(torch.tensor(z))).double().mean().item()
        assert abs(frac - 0.5 * (1 + math.erf(z / math.sqrt(2)))) < 0.012, z
    assert ((ln > 0.25) & (ln < 0.75)).double().mean() > 0.6, "logit-normal favours the middle of the path"
    assert sample_flow_t(5000, "logit_normal", _g(), loc=1.0).mean() > 0.65, "loc > 0 leans toward noise"
    with pytest.raises(ValueError, match="t_sampler must be"):
        sample_flow_t(4, "cosine")
    with pytest.raises(ValueError, match="scale must be > 0"):
        sample_flow_t(4, "logit_normal", scale=0.0)
    with pytest.raises(ValueError, match=r"t must be float flow-matching time in \[0, 1\]"):
        flow_matching_loss(lambda x, t: x, torch.zeros(2, 3), t=torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="model output must have the shape"):
        flow_matching_loss(lambda x, t: x[:, :2], torch.zeros(2, 3), _g())


# ----------------------------------------------------------------------------- sampling the exact field


def test_euler_maps_noise_to_the_gaussian_data():
    """The exact flow of a Gaussian is affine: noise z lands on MU + SD * z; check samples and moments."""
    z = torch.randn(4000, 4, generator=_g(), dtype=F64)
    x = flow_sample(gaussian_velocity, z.shape, steps=1000, noise=z, dtype=F64)
    assert (x - (MU + SD * z)).abs().max() < 0.015
    n = z.shape[0]                                  # moments within 4 standard errors of the sample estimates
    assert ((x.mean(0) - MU).abs() < 4 * SD / math.sqrt(n)).all(), x.mean(0)
    assert ((x.std(0) - SD).abs() < 4 * SD / math.sqrt(2 * n) + 0.005).all(), x.std(0)


def test_heun_is_second_order_and_beats_euler():
    z = torch.randn(256, 4, generator=_g(2), dtype=F64)
    target = MU + SD * z

    def err(method, steps):
        return (flow_sample(gaussian_velocity, z.shape, steps, method, noise=z, dtype=F64) - target).abs().max().item()

    e10, e20, h10, h20 = err("euler", 10), err("euler", 20), err("heun", 10), err("heun", 20)
    assert h10 < e10 / 5, (h10, e10)
    assert 1.6 < e10 / e20 < 2.5, f"Euler should be first order, error ratio {e10 / e20:.2f}"
    assert 3.0 < h10 / h20 < 5.0, f"Heun should be second order, error ratio {h10 / h20:.2f}"


def test_guidance_trajectory_and_grid():
    def model(x, t, c=None):  # a linear field; the condition shifts it
        return 0.5 * x + (0.0 if c is None else c)

    z = torch.randn(3, 2, generator=_g(3), dtype=F64)
    c, u = {"c": torch.full((3, 2), 2.0, dtype=F64)}, {"c": torch.zeros(3, 2, dtype=F64)}
    alone = flow_sample(model, z.shape, 4, "heun", cond=c, noise=z, dtype=F64)
    assert torch.equal(flow_sample(model, z.shape, 4, "heun", cond=c, uncond=u, guidance_scale=1.0, noise=z,
                                   dtype=F64), alone), "guidance scale 1 is the conditional model alone"
    # one Euler step from t = 1 to 0: x0 = z - (v_u + w (v_c - v_u)) = z - (0.5 z + 2 w)
    for mode in ("batch", "twice"):
        x = flow_sample(model, z.shape, 1, cond=c, uncond=u, guidance_scale=3.0, cfg_mode=mode, noise=z, dtype=F64)
        assert_close(x, 0.5 * z - 6.0, atol=1e-12, rtol=1e-12, name=f"guided Euler step ({mode})")
    x, traj = flow_sample(gaussian_velocity, (5, 4), 6, generator=_g(), dtype=F64, return_trajectory=True)
    assert traj["t"].shape == (7,) and traj["x"].shape == (7, 5, 4) and traj["x0"].shape == (6, 5, 4)
    assert torch.equal(traj["x"][-1], x)
    assert_close(traj["x0"][0], MU.expand(5, 4), atol=1e-12, rtol=0, name="x0 estimate at t = 1 is the data mean")
    ts = flow_timesteps(8, shift=3.0)
    assert ts[0] == 1 and ts[-1] == 0 and bool((ts[:-1] > ts[1:]).all())
    assert bool((ts[1:-1] > flow_timesteps(8)[1:-1]).all()), "shift > 1 spends more steps near the noise"
    with pytest.raises(ValueError, match="method must be"):
        flow_sample(model, (2, 2), 2, "rk4")
    with pytest.raises(ValueError, match="strictly decreasing"):
        flow_sample(model, (2, 2), timesteps=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="noise must have shape"):
        flow_sample(model, (2, 2), 2, noise=torch.zeros(3, 2))


def test_dit_trains_and_samples_with_flow_matching():
    torch.manual_seed(0)
    m = DiT(dit_config("dit-tiny", dim=24, heads=2, depth=2, freq_dim=32, in_channels=4, context_dim=8))
    x0, ctx = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 3, 8)
    cond = {"context": ctx, "context_mask": torch.ones(2, 3, dtype=torch.bool)}
    loss = flow_matching_loss(m, x0, _g(), cond=cond, t_sampler="logit_normal")
    loss.backward()
    assert torch.isfinite(loss) and m.final.linear.weight.grad.abs().sum() > 0
    uncond = {"context": ctx, "context_mask": torch.zeros(2, 3, dtype=torch.bool)}
    x = flow_sample(m, x0.shape, 2, "heun", cond=cond, uncond=uncond, guidance_scale=4.0, generator=_g())
    assert x.shape == x0.shape and torch.isfinite(x).all()
