"""Chapter 01: schedules, forward process, objectives and samplers — invariants and exercises."""
import math

import pytest
import torch

from minivid.compare import assert_close
from minivid.diffusion import (
    cfg_combine,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    diffusion_loss,
    gather,
    guided_predict,
    make_schedule,
    model_output_to_x0_eps,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    q_step,
    sample_timesteps,
    shifted_timesteps,
    training_target,
    v_from_x0_eps,
    x0_eps_from_v,
)
from minivid.exercises import ch01 as checks

F64 = torch.float64


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- schedules

# Reference values computed from the closed forms at 50 significant digits with mpmath:
# linear: Ho et al. 2020 §4 (beta from 1e-4 to 0.02 over T = 1000); cosine: Nichol & Dhariwal 2021
# eq. 17 (s = 0.008, beta capped at 0.999); zero-SNR: Lin et al. 2023 Algorithm 1 applied to linear.
# alpha_bar_999 ~ 4.04e-5 for the linear schedule is the non-zero terminal SNR Lin et al. point out.
PUBLISHED = [
    ("linear", False, "betas", 1, 1.1991991991991991992e-4),
    ("linear", False, "alpha_bars", 1, 0.99978009207207207207),
    ("linear", False, "alpha_bars", 499, 0.078587242881778237343),
    ("linear", False, "alpha_bars", 999, 4.0358297653756833148e-5),
    ("cosine", False, "betas", 0, 4.1284224821777803263e-5),
    ("cosine", False, "betas", 998, 0.74999939290116202778),
    ("cosine", False, "betas", 999, 0.999),
    ("cosine", False, "alpha_bars", 499, 0.49384359044063771332),
    ("cosine", False, "alpha_bars", 999, 2.4287669070344726703e-9),
    ("linear", True, "alpha_bars", 0, 0.9999),
    ("linear", True, "alpha_bars", 499, 0.076028750547114724838),
    ("linear", True, "alpha_bars", 998, 4.2132624650880560716e-9),
]


@pytest.mark.parametrize("kind,zero,field,i,value", PUBLISHED)
def test_schedule_values_match_closed_form(kind, zero, field, i, value):
    s = make_schedule(kind, 1000, zero_snr=zero)
    got = getattr(s, field)
    assert got.dtype == F64
    assert math.isclose(float(got[i]), value, rel_tol=1e-11, abs_tol=0), (kind, zero, field, i, float(got[i]))


def test_linear_schedule_rescales_with_T():
    s = make_schedule("linear", 100)
    assert math.isclose(float(s.betas[0]), 1e-3, rel_tol=1e-12)
    assert math.isclose(float(s.betas[-1]), 0.2, rel_tol=1e-12)
    assert math.isclose(float(s.alpha_bars[-1]), 2.0390089755640776543e-5, rel_tol=1e-10)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_zero_snr_rescale(kind):
    base, z = make_schedule(kind, 1000), make_schedule(kind, 1000, zero_snr=True)
    assert float(z.alpha_bars[-1]) == 0.0 and float(z.snr[-1]) == 0.0
    assert math.isclose(float(z.alpha_bars[0]), float(base.alpha_bars[0]), rel_tol=1e-14)
    assert bool((z.betas > 0).all()) and bool((z.betas <= 1).all())
    assert bool((z.alpha_bars[1:] < z.alpha_bars[:-1]).all())          # still monotone


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("shift", [0.5, 2.0, 3.0])
def test_shifted_schedule_divides_every_snr_by_shift_squared(kind, shift):
    base, s = make_schedule(kind, 1000), make_schedule(kind, 1000, shift=shift)
    # closed form (Hoogeboom et al. 2023, §3.1): alpha_bar' = ab / (ab + shift^2 (1 - ab)), i.e. SNR' = SNR / shift^2
    ab = base.alpha_bars
    assert_close(s.alpha_bars, ab / (ab + shift**2 * (1 - ab)), atol=0, rtol=1e-12)
    assert_close(s.snr, base.snr / shift**2, atol=0, rtol=1e-10)
    assert bool((s.alpha_bars[1:] < s.alpha_bars[:-1]).all()) and s.shift == shift
    assert make_schedule(kind, 1000, shift=1.0).betas.equal(base.betas)
    z = make_schedule(kind, 1000, shift=shift, zero_snr=True)        # composes with the zero-SNR rescale
    assert float(z.alpha_bars[-1]) == 0.0
    with pytest.raises(ValueError, match="shift must be > 0"):
        make_schedule(kind, 1000, shift=0.0)


def test_schedule_posterior_tables_and_bad_input():
    s = make_schedule("linear", 1000)
    assert float(s.posterior_variance[0]) == 0.0
    assert bool((s.posterior_variance[1:] <= s.betas[1:]).all())      # beta~ <= beta
    with pytest.raises(ValueError, match="kind"):
        make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="T >= 21"):
        make_schedule("linear", 10)
    with pytest.raises(ValueError, match="t must lie"):
        gather(s.alpha_bars, torch.tensor([1000]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        gather(s.alpha_bars, torch.tensor([1, 2]), torch.zeros(3, 2))


def test_gather_any_rank():
    s = make_schedule("cosine", 20)
    t = torch.tensor([0, 5, 19])
    for shape in [(3, 2), (3, 3, 4, 4), (3, 3, 2, 4, 4)]:
        x = torch.zeros(shape, dtype=torch.float32)
        g = gather(s.alpha_bars, t, x)
        assert g.shape == (3,) + (1,) * (len(shape) - 1) and g.dtype == torch.float32
        assert_close(g.flatten(), s.alpha_bars[t].float(), atol=0, rtol=0)


def test_per_frame_noise_levels_for_video():
    """t of shape (B, T) noises each frame of a clip at its own level: the same as noising frame by frame."""
    s = make_schedule("cosine", 50)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 5, 5, generator=g), torch.randn(2, 3, 4, 5, 5, generator=g)
    t = torch.tensor([[0, 10, 30, 49], [7, 7, 7, 7]])
    assert gather(s.alpha_bars, t, x0).shape == (2, 1, 4, 1, 1)
    xt, v = q_sample(x0, t, noise, s), training_target("v", x0, noise, t, s)
    for b in range(2):
        for f in range(4):
            one = (x0[b:b + 1, :, f], t[b, f:f + 1], noise[b:b + 1, :, f])
            assert_close(xt[b:b + 1, :, f], q_sample(one[0], one[1], one[2], s), atol=1e-6, rtol=0)
            assert_close(v[b:b + 1, :, f], training_target("v", one[0], one[2], one[1], s), atol=1e-6, rtol=0)
    assert_close(xt[1:], q_sample(x0, torch.tensor([7, 7]), noise, s)[1:], atol=0, rtol=0)   # equal levels = (B,)
    with pytest.raises(ValueError, match=r"\(B, T\) for video"):
        gather(s.alpha_bars, t, torch.zeros(2, 3, 5, 5, 5))                       # T = 5 frames, t has 4
    with pytest.raises(ValueError, match=r"\(B, T\) for video"):
        gather(s.alpha_bars, t, torch.zeros(2, 3, 5, 5))                          # images: (B,) only


def test_temporal_weight_adds_the_frame_difference_error_only():
    s = make_schedule("cosine", 50)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 5, 5, generator=g), torch.randn(2, 3, 4, 5, 5, generator=g)
    t = torch.tensor([3, 40])
    target = training_target("v", x0, noise, t, s)
    static = torch.randn(2, 3, 1, 5, 5, generator=g)
    for off, moving in ((static.expand(2, 3, 4, 5, 5), False), (torch.randn(2, 3, 4, 5, 5, generator=g), True)):
        model = lambda x, t_: target + off                                           # noqa: E731
        base = diffusion_loss(model, x0, s, "v", t=t, noise=noise, reduction="none")
        both = diffusion_loss(model, x0, s, "v", t=t, noise=noise, reduction="none", temporal_weight=2.0)
        ref = 2.0 * (off[:, :, 1:] - off[:, :, :-1]).double().pow(2).reshape(2, -1).mean(1)
        assert_close(both - base, ref.float(), atol=1e-5, rtol=1e-5)
        assert (both > base).all() == moving                                         # same-in-every-frame: free
    with pytest.raises(ValueError, match="temporal_weight needs video"):
        diffusion_loss(lambda x, t_: x, x0[:, :, 0], s, "v", temporal_weight=1.0)


# ----------------------------------------------------------------------------- forward process

@pytest.mark.exercise("1.1")
def test_exercise_q_sample():
    assert checks.check_q_sample()


@pytest.mark.exercise("1.1")
def test_composed_forward_steps_match_closed_form():
    """x_t from t+1 single steps is linear in (x0, eps_0..eps_t): mean coef sqrt(ab_t), noise variance 1 - ab_t."""
    s = make_schedule("linear", 200)
    for t_end in (0, 3, 57, 199):
        n = t_end + 1
        # batch item k gets unit noise at step k only; item n gets x0 = 1 and no noise.
        x = torch.zeros(n + 1, 1, dtype=F64)
        x[n] = 1.0
        for step in range(n):
            noise = torch.zeros(n + 1, 1, dtype=F64)
            noise[step] = 1.0
            x = q_step(x, torch.full((n + 1,), step), noise, s)
        t = torch.tensor([t_end])
        mean_coef = q_sample(torch.ones(1, 1, dtype=F64), t, torch.zeros(1, 1, dtype=F64), s)
        noise_std = q_sample(torch.zeros(1, 1, dtype=F64), t, torch.ones(1, 1, dtype=F64), s)
        assert_close(x[n], mean_coef[0], atol=1e-13, rtol=1e-12, name="mean coefficient")
        assert_close(x[:n].pow(2).sum(), noise_std.pow(2).sum(), atol=1e-13, rtol=1e-12, name="noise variance")


def test_q_sample_statistics():
    s = make_schedule("cosine", 100)
    x0 = torch.full((20000, 1), 0.7, dtype=F64)
    t = torch.full((20000,), 40)
    xt = q_sample(x0, t, torch.randn(20000, 1, generator=_g(), dtype=F64), s)
    ab = float(s.alpha_bars[40])
    assert abs(float(xt.mean()) - math.sqrt(ab) * 0.7) < 4 * math.sqrt((1 - ab) / 20000)
    assert abs(float(xt.var()) - (1 - ab)) < 0.03


@pytest.mark.exercise("1.2")
def test_exercise_q_posterior():
    assert checks.check_q_posterior()


@pytest.mark.exercise("1.2")
def test_posterior_is_bayes_rule():
    """q(x_{t-1}|x_t,x0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x0): compare with the Gaussian product in closed form."""
    s = make_schedule("linear", 100)
    t = torch.tensor([1, 10, 50, 99])
    x0, xt = torch.randn(4, 3, generator=_g(1), dtype=F64), torch.randn(4, 3, generator=_g(2), dtype=F64)
    mean, var = q_posterior(x0, xt, t, s)
    a, b = s.alphas[t].reshape(-1, 1), s.betas[t].reshape(-1, 1)
    abp = s.alpha_bars[t - 1].reshape(-1, 1)
    prec = a / b + 1 / (1 - abp)                       # precision of the product of the two Gaussians
    want_mean = (a.sqrt() * xt / b + abp.sqrt() * x0 / (1 - abp)) / prec
    assert_close(var.reshape(-1, 1), 1 / prec, atol=1e-14, rtol=1e-10, name="posterior variance")
    assert_close(mean, want_mean, atol=1e-12, rtol=1e-10, name="posterior mean")


# ----------------------------------------------------------------------------- objectives

@pytest.mark.exercise("1.5")
def test_exercise_v_conversion():
    assert checks.check_v_conversion()


@pytest.mark.exercise("1.5")
@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_objective_round_trips_are_exact(objective):
    s = make_schedule("cosine", 1000)
    t = torch.tensor([0, 1, 500, 998, 999, 250])
    x0 = torch.randn(6, 3, 4, 4, generator=_g(3), dtype=F64)
    eps = torch.randn(6, 3, 4, 4, generator=_g(4), dtype=F64)
    xt = q_sample(x0, t, eps, s)
    target = training_target(objective, x0, eps, t, s)
    x0_hat, eps_hat = model_output_to_x0_eps(target, xt, t, s, objective)
    # eps -> x0 divides by sqrt(alpha_bar) ~ 5e-5 at t=999 on cosine: relative tolerance accordingly
    assert_close(x0_hat, x0, atol=1e-9, rtol=1e-9, name=f"x0 from {objective}")
    assert_close(eps_hat, eps, atol=1e-9, rtol=1e-9, name=f"eps from {objective}")
    assert_close(predict_eps_from_x0(xt, t, x0, s), eps, atol=1e-10, rtol=1e-9)
    assert_close(predict_x0_from_eps(xt, t, eps, s), x0, atol=1e-9, rtol=1e-9)
    assert_close(x0_eps_from_v(xt, t, v_from_x0_eps(x0, eps, t, s), s)[0], x0, atol=1e-13, rtol=1e-12)


def test_eps_objective_refuses_zero_snr_terminal_step():
    s = make_schedule("cosine", 10, zero_snr=True)
    x = torch.randn(2, 2)
    with pytest.raises(ValueError, match="objective='v'"):
        model_output_to_x0_eps(x, x, torch.tensor([9, 9]), s, "eps")
    x0, eps = model_output_to_x0_eps(x, x, torch.tensor([9, 9]), s, "v")      # fine with v
    assert torch.isfinite(x0).all() and torch.isfinite(eps).all()


def test_diffusion_loss_is_zero_for_the_oracle_and_any_rank():
    s = make_schedule("linear", 50)
    x0 = torch.randn(4, 3, 2, 4, 4, generator=_g(5), dtype=F64)               # video rank
    t = torch.tensor([0, 10, 20, 49])
    noise = torch.randn_like(x0)
    for obj in ("eps", "x0", "v"):
        target = training_target(obj, x0, noise, t, s)
        oracle = lambda xt, tt, extra=None: target * (1 if extra is None else extra)  # noqa: E731
        assert float(diffusion_loss(oracle, x0, s, obj, t=t, noise=noise, cond={"extra": 1})) == 0.0
        per = diffusion_loss(lambda xt, tt: torch.zeros_like(xt), x0, s, obj, t=t, noise=noise, reduction="none")
        assert_close(per, target.pow(2).reshape(4, -1).mean(1), atol=1e-14, rtol=1e-12)
    # the default noise comes from the generator: same generator, same loss
    m = lambda xt, tt: xt * 0.5  # noqa: E731
    assert float(diffusion_loss(m, x0, s, generator=_g(9))) == float(diffusion_loss(m, x0, s, generator=_g(9)))


# ----------------------------------------------------------------------------- samplers

@pytest.mark.exercise("1.3")
def test_exercise_ddpm_step():
    assert checks.check_ddpm_step()


@pytest.mark.exercise("1.4")
def test_exercise_ddim_step():
    assert checks.check_ddim_step()


@pytest.mark.exercise("1.3")
@pytest.mark.exercise("1.4")
def test_ddim_eta1_full_grid_equals_ddpm_posterior():
    s = make_schedule("cosine", 100)
    t = torch.tensor([1, 2, 30, 60, 99])
    x0, eps, z = (torch.randn(5, 2, 3, generator=_g(i), dtype=F64) for i in (6, 7, 8))
    xt = q_sample(x0, t, eps, s)
    x0_hat = x0 + 0.1 * torch.randn(5, 2, 3, generator=_g(10), dtype=F64)   # an imperfect prediction
    eps_hat = predict_eps_from_x0(xt, t, x0_hat, s)
    a = ddim_step(xt, t, t - 1, x0_hat, eps_hat, s, eta=1.0, noise=z)
    b = ddpm_step(xt, t, x0_hat, z, s)
    assert_close(a, b, atol=1e-12, rtol=1e-10, name="DDIM(eta=1) vs DDPM")


@pytest.mark.exercise("1.4")
def test_ddim_eta0_with_true_noise_jumps_along_the_forward_process():
    s = make_schedule("linear", 1000)
    x0, eps = torch.randn(4, 3, 4, 4, generator=_g(11), dtype=F64), torch.randn(4, 3, 4, 4, generator=_g(12), dtype=F64)
    t, tp = torch.tensor([999, 500, 100, 7]), torch.tensor([700, 0, -1, 3])
    out = ddim_step(q_sample(x0, t, eps, s), t, tp, x0, eps, s, eta=0.0)
    want = torch.where(tp.reshape(-1, 1, 1, 1) >= 0, q_sample(x0, tp.clamp(min=0), eps, s), x0)
    assert_close(out, want, atol=1e-12, rtol=1e-10, name="DDIM eta=0 jump")


def test_ddpm_step_adds_no_noise_at_t0():
    s = make_schedule("linear", 50)
    x, x0 = torch.randn(2, 3), torch.randn(2, 3)
    t = torch.tensor([0, 0])
    assert_close(ddpm_step(x, t, x0, torch.randn(2, 3), s), ddpm_step(x, t, x0, torch.zeros(2, 3), s), atol=0, rtol=0)


def test_ddim_timestep_spacings_match_lin_et_al_table2():
    assert ddim_timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert ddim_timesteps(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert ddim_timesteps(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    for sp in ("leading", "trailing", "linspace"):
        assert ddim_timesteps(50, 50, sp).tolist() == list(range(49, -1, -1))
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(10, 11)


class _Oracle(torch.nn.Module):
    """Knows the data is the single point mu: predicts eps exactly from x_t."""

    def __init__(self, mu, s):
        super().__init__()
        self.mu, self.s = mu, s
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, scale=None):
        out = predict_eps_from_x0(x, t, self.mu.expand_as(x).to(x.dtype), self.s)
        return out if scale is None else out * scale


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_recover_a_point_mass_and_are_reproducible(sampler):
    s = make_schedule("linear", 100)
    mu = torch.tensor([0.5, -0.25])
    model = _Oracle(mu, s)
    kw = dict(progress=False, dtype=F64)
    if sampler == "ddpm":
        x, traj = ddpm_sample(model, (8, 2), s, "eps", generator=_g(13), return_trajectory=True, **kw)
        x2 = ddpm_sample(model, (8, 2), s, "eps", generator=_g(13), **kw)
        S = 100
    else:
        x, traj = ddim_sample(model, (8, 2), s, "eps", steps=10, eta=0.5, generator=_g(13), return_trajectory=True, **kw)
        x2 = ddim_sample(model, (8, 2), s, "eps", steps=10, eta=0.5, generator=_g(13), **kw)
        S = 10
    assert_close(x, mu.expand(8, 2).double(), atol=1e-8, rtol=0, name="sample of a point mass")
    assert torch.equal(x, x2)
    assert traj["x"].shape == (S + 1, 8, 2) and traj["x0"].shape == (S, 8, 2) and traj["t"].shape == (S,)
    assert torch.equal(traj["x"][-1], x)


def test_ddim_eta0_is_deterministic_given_initial_noise():
    s = make_schedule("cosine", 50)
    model = _Oracle(torch.tensor([0.1, 0.2]), s)
    noise = torch.randn(3, 2, generator=_g(14))
    a = ddim_sample(model, (3, 2), s, steps=7, noise=noise, generator=_g(1), progress=False)
    b = ddim_sample(model, (3, 2), s, steps=7, noise=noise, generator=_g(2), progress=False)
    assert torch.equal(a, b)


def test_cfg_combine_and_hook():
    c, u = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.equal(cfg_combine(c, u, 1.0), c)
    assert_close(cfg_combine(c, u, 3.0), u + 3 * (c - u), atol=1e-6, rtol=0)
    s = make_schedule("linear", 50)
    model = _Oracle(torch.zeros(2), s)
    x, t = torch.randn(4, 2), torch.full((4,), 5)
    cond, uncond = {"scale": torch.full((4, 1), 2.0)}, {"scale": torch.full((4, 1), 0.5)}
    want = cfg_combine(model(x, t, **cond), model(x, t, **uncond), 4.0)
    for mode in ("batch", "twice"):
        assert_close(guided_predict(model, x, t, cond, uncond, 4.0, mode), want, atol=1e-6, rtol=1e-6)
    assert torch.equal(guided_predict(model, x, t, cond, uncond, 1.0), model(x, t, **cond))


def test_mixed_noise_keeps_each_frame_standard_normal_and_correlates_frames_as_pyoco():
    """PYoCo's mixed noise: per-frame N(0, 1), any two frames correlated by a^2 / (1 + a^2) (closed form)."""
    from minivid.diffusion import mixed_noise
    for alpha in (0.5, 1.0, 2.0):
        n = mixed_noise((20_000, 1, 6, 1, 1), alpha, torch.Generator().manual_seed(1)).reshape(20_000, 6).double()
        assert abs(n.var(0).mean().item() - 1.0) < 0.03
        corr = torch.corrcoef(n.T)
        off = corr[~torch.eye(6, dtype=torch.bool)]
        want = alpha**2 / (1 + alpha**2)
        assert (off - want).abs().max().item() < 0.03, (alpha, off.min().item(), off.max().item(), want)
    # alpha = 0 is ordinary noise, drawn exactly as torch.randn would (other chapters stay bit-exact)
    a = mixed_noise((2, 3, 4, 5, 5), 0.0, torch.Generator().manual_seed(7))
    assert torch.equal(a, torch.randn((2, 3, 4, 5, 5), generator=torch.Generator().manual_seed(7)))
    # the shared part is per clip and per pixel, not across clips or pixels
    n = mixed_noise((2000, 1, 2, 2, 1), 3.0, torch.Generator().manual_seed(2)).double()
    assert abs(torch.corrcoef(torch.stack([n[:, 0, 0, 0, 0], n[:, 0, 0, 1, 0]]))[0, 1].item()) < 0.06
    with pytest.raises(ValueError, match="alpha"):
        mixed_noise((1, 1, 2, 1, 1), -1.0)


# ----------------------------------------------------------------------------- SNR-shifted timestep sampling
def test_shifted_timesteps_divide_the_snr_by_shift_squared():
    """shift=1 is the uniform draw, draw for draw; shift=s moves every t to where the SNR is SNR(t)/s^2 (to the
    grid's resolution: between the two neighbouring timesteps), so later, noisier t."""
    s = make_schedule("cosine", 1000)
    u = sample_timesteps(4096, s, torch.Generator().manual_seed(0))
    assert torch.equal(shifted_timesteps(4096, s, 1.0, torch.Generator().manual_seed(0)), u)
    for shift in (1.5, 3.0):
        t = shifted_timesteps(4096, s, shift, torch.Generator().manual_seed(0))
        assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= s.T - 1
        assert bool((t >= u).all()) and float((t > u).float().mean()) > 0.95          # noisier, not less noisy
        inner = (t > 0) & (t < s.T - 1)
        target = s.snr[u[inner]] / shift ** 2
        assert bool((s.snr[t[inner]] <= target * (1 + 1e-9)).all())                   # at or past the target...
        assert bool((s.snr[t[inner] - 1] > target).all())                             # ...by less than one step
    with pytest.raises(ValueError, match="shift"):
        shifted_timesteps(4, s, 0.0)
