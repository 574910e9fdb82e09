"""The forward process q, its posterior, the three prediction targets and the training loss.

Follows Ho et al. 2020 (arXiv:2006.11239): q(x_t | x_0) (eq. 4), the posterior q(x_{t-1} | x_t, x_0)
(eqs. 6-7) and the simple epsilon loss (eq. 14); Salimans & Ho 2022, "Progressive Distillation"
(arXiv:2202.00512, §4 and appendix D): the v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 target.

Every function works for any rank: x is (B, ...) — (B, 2) toy points, (B, C, H, W) images or
(B, C, T, H, W) video — and t is a (B,) long tensor of 0-based timesteps.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minivid.diffusion.schedules import Schedule, gather

OBJECTIVES = ("eps", "x0", "v")


# ----------------------------------------------------------------------------- forward process

def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

    x0, noise: (B, ...) same shape; t: (B,) long. Returns x_t: (B, ...).
    """
    _same_shape(x0, noise, "noise")
    ### BEGIN SOLUTION  # exercise 1.1: sample x_t from q(x_t | x_0)
    ab = gather(schedule.alpha_bars, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    ### END SOLUTION


def q_step(x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """One forward step x_t ~ q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I).

    x_prev, noise: (B, ...); t: (B,) long (x_prev is x_{t-1}, x_{-1} = x_0). Returns x_t: (B, ...).
    """
    _same_shape(x_prev, noise, "noise")
    return gather(schedule.alphas, t, x_prev).sqrt() * x_prev + gather(schedule.betas, t, x_prev).sqrt() * noise


def q_posterior(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6-7).

    x0, x_t: (B, ...); t: (B,) long. Returns (mean (B, ...), variance (B, 1, ..., 1)).
    mean = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
    variance = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)        (0 at t = 0)
    """
    _same_shape(x0, x_t, "x_t")
    ### BEGIN SOLUTION  # exercise 1.2: posterior mean and variance of q(x_{t-1} | x_t, x_0)
    ab = gather(schedule.alpha_bars, t, x0)
    ab_prev = gather(schedule.alpha_bars_prev, t, x0)
    beta = gather(schedule.betas, t, x0)
    mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab)
    var = beta * (1 - ab_prev) / (1 - ab)
    return mean, var
    ### END SOLUTION


def snr(t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """SNR(t) = alpha_bar_t / (1 - alpha_bar_t) for a (B,) long t: (B,) float64."""
    t = torch.as_tensor(t).long()
    return schedule.snr[t.cpu()]


# ----------------------------------------------------------------------------- objectives

def predict_x0_from_eps(x_t, t, eps, schedule: Schedule) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar). (B, ...) -> (B, ...); undefined where alpha_bar = 0."""
    ab = gather(schedule.alpha_bars, t, x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def predict_eps_from_x0(x_t, t, x0, schedule: Schedule) -> torch.Tensor:
    """eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar). (B, ...) -> (B, ...)."""
    ab = gather(schedule.alpha_bars, t, x_t)
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def v_from_x0_eps(x0, eps, t, schedule: Schedule) -> torch.Tensor:
    """The v target: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0. (B, ...) -> (B, ...)."""
    ab = gather(schedule.alpha_bars, t, x0)
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def x0_eps_from_v(x_t, t, v, schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert v: x_0 = sqrt(ab) x_t - sqrt(1 - ab) v and eps = sqrt(1 - ab) x_t + sqrt(ab) v.

    x_t, v: (B, ...); t: (B,) long. Returns (x0, eps), both (B, ...). Exact for every alpha_bar,
    including alpha_bar = 0 (zero terminal SNR), because (x_t, v) is a rotation of (x_0, eps).
    """
    _same_shape(x_t, v, "v")
    ### BEGIN SOLUTION  # exercise 1.5: recover x_0 and eps from a v prediction
    ab = gather(schedule.alpha_bars, t, x_t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    return a * x_t - s * v, s * x_t + a * v
    ### END SOLUTION


def model_output_to_x0_eps(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: Schedule,
                           objective: str, clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a network output for `objective` into (x0_hat, eps_hat), both (B, ...).

    clip: if set, clamp x0_hat to [-clip, clip] and recompute eps_hat from it, so both stay consistent
    (what Ho et al. do for images, which live in [-1, 1]).
    """
    _check_objective(objective)
    _same_shape(x_t, out, "model output")
    if objective == "eps":
        if bool((gather(schedule.alpha_bars, t, x_t) == 0).any()):
            raise ValueError("objective='eps' cannot recover x_0 where alpha_bar_t = 0 (zero terminal SNR); "
                             "train with objective='v' or 'x0' on a zero_snr schedule (Lin et al. 2023).")
        eps, x0 = out, predict_x0_from_eps(x_t, t, out, schedule)
    elif objective == "x0":
        x0, eps = out, predict_eps_from_x0(x_t, t, out, schedule)
    else:
        x0, eps = x0_eps_from_v(x_t, t, out, schedule)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = predict_eps_from_x0(x_t, t, x0, schedule)
    return x0, eps


def training_target(objective: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                    schedule: Schedule) -> torch.Tensor:
    """What the network regresses onto: noise ("eps"), x0 ("x0") or v ("v"). (B, ...) -> (B, ...)."""
    _check_objective(objective)
    if objective == "eps":
        return noise
    if objective == "x0":
        return x0
    return v_from_x0_eps(x0, noise, t, schedule)


# ----------------------------------------------------------------------------- loss

def sample_timesteps(n: int, schedule: Schedule, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform t ~ U{0, ..., T-1}: (n,) long."""
    dev = generator.device if generator is not None else device
    return torch.randint(0, schedule.T, (n,), generator=generator, device=dev).to(device)


def shifted_timesteps(n: int, schedule: Schedule, shift: float = 1.0, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """t drawn uniformly, then moved to the timestep whose SNR is SNR(t) / shift^2: (n,) long.

    Training a model of a fixed schedule as if its schedule were SNR-shifted (SD3, arXiv:2403.03206, Sec. 5.3.2,
    on resolution-dependent shifting): shift > 1 spends more of training at high noise, where a clip's layout and
    motion are decided, without changing the schedule a frozen model was trained with. shift=1 is
    `sample_timesteps`, draw for draw.
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    t = sample_timesteps(n, schedule, generator, device=device)
    if shift == 1:
        return t
    log_snr = schedule.snr.clamp_min(1e-30).log()                       # (T,) decreasing in t
    target = log_snr[t.cpu()] - 2 * math.log(shift)
    moved = torch.searchsorted(-log_snr, -target).clamp_max(schedule.T - 1)   # first t with log SNR <= target
    return moved.to(device)


def mixed_noise(shape: tuple[int, ...], alpha: float = 0.0, generator: torch.Generator | None = None,
                frame_dim: int = 2, device=None) -> torch.Tensor:
    """Noise shared across frames in part: PYoCo's *mixed noise* (Ge et al. 2023, arXiv:2305.10474, Sec. 3.2).

    Every frame's noise is sqrt(a^2 / (1 + a^2)) * one draw shared by the whole clip + sqrt(1 / (1 + a^2)) * its
    own draw, so each frame is still N(0, I) (an image model sees what it was trained on) while any two frames
    correlate by a^2 / (1 + a^2) (0.5 at alpha=1, 0.8 at alpha=2). shape: (B, C, T, H, W) with frames at
    `frame_dim`. alpha=0 is ordinary independent noise, drawn exactly as `torch.randn(shape, generator)`.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    gdev = generator.device if generator is not None else device
    eps = torch.randn(shape, generator=generator, device=gdev)
    if alpha == 0:
        return eps.to(device) if device is not None else eps
    shared_shape = list(shape)
    shared_shape[frame_dim] = 1
    shared = torch.randn(shared_shape, generator=generator, device=gdev)             # one draw per clip
    out = (alpha * shared + eps) / (1 + alpha**2) ** 0.5
    return out.to(device) if device is not None else out


def diffusion_loss(model: Callable, x0: torch.Tensor, schedule: Schedule, objective: str = "eps",
                   generator: torch.Generator | None = None, cond: dict | None = None,
                   t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   reduction: str = "mean", temporal_weight: float = 0.0) -> torch.Tensor:
    """The simple diffusion loss || model(x_t, t, **cond) - target ||^2 (Ho et al. eq. 14).

    x0: (B, ...) clean data; t: (B,) long (default uniform); noise: (B, ...) (default N(0, I) drawn
    from `generator`); cond: extra keyword arguments for the model (e.g. context=..., context_mask=...).
    reduction: "mean" -> scalar, "none" -> (B,) per-example mean squared error.
    temporal_weight (video (B, C, T, H, W) only): adds that weight times the mean squared *frame-to-frame
    difference* of the error, which is zero for errors that are the same in every frame. Any squared
    error of a linear map of the prediction is minimised by the same posterior mean, so this changes
    which mistakes cost most (motion ones), not what the model should predict (cf. VideoJAM,
    arXiv:2502.02492, on pixel losses favouring appearance over motion).
    """
    _check_objective(objective)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    B = x0.shape[0]
    if t is None:
        t = sample_timesteps(B, schedule, generator, device=x0.device)
    if noise is None:
        gdev = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(x0.device)
    x_t = q_sample(x0, t, noise, schedule)
    out = model(x_t, t, **(cond or {}))
    _same_shape(x0, out, "model output")
    diff = out - training_target(objective, x0, noise, t, schedule)
    err = diff.pow(2).reshape(B, -1).mean(1)
    if temporal_weight:
        if x0.dim() != 5 or x0.shape[2] < 2:
            raise ValueError(f"temporal_weight needs video (B, C, T >= 2, H, W), got {tuple(x0.shape)}")
        err = err + temporal_weight * (diff[:, :, 1:] - diff[:, :, :-1]).pow(2).reshape(B, -1).mean(1)
    return err.mean() if reduction == "mean" else err


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def _same_shape(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(a.shape)}, got {tuple(b.shape)}")


__all__ = ["OBJECTIVES", "q_sample", "q_step", "q_posterior", "snr", "shifted_timesteps", "predict_x0_from_eps",
           "predict_eps_from_x0", "v_from_x0_eps", "x0_eps_from_v", "model_output_to_x0_eps",
           "training_target", "sample_timesteps", "diffusion_loss"]
