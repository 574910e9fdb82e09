"""Noise schedules for Gaussian diffusion, as pure float64 tables.

Follows: Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (arXiv:2006.11239, §4: the linear
schedule beta_1 = 1e-4 ... beta_T = 0.02 over T = 1000 steps); Nichol & Dhariwal 2021, "Improved
DDPM" (arXiv:2102.09672, eq. 17: the cosine schedule, s = 0.008, beta capped at 0.999); Lin et al.
2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed" (arXiv:2305.08891, Algorithm 1:
rescale to zero terminal SNR); Hoogeboom et al. 2023, "simple diffusion" (arXiv:2301.11093, §3.1: the
shifted schedule, logSNR(t) + 2 log(1 / shift), so a bigger signal is noised as hard as a small one).

Indexing: timesteps are 0-based, t = 0 .. T-1. `alpha_bars[t]` is the signal fraction after t+1
noising steps, so x_t = sqrt(alpha_bars[t]) x_0 + sqrt(1 - alpha_bars[t]) eps and t = 0 is already
(slightly) noisy, exactly as in the reference DDPM code.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

SCHEDULE_KINDS = ("linear", "cosine")


def linear_betas(T: int) -> torch.Tensor:
    """Ho et al.'s linear betas, rescaled so any T spans the same total noise: (T,) float64.

    scale = 1000 / T; betas = linspace(scale * 1e-4, scale * 0.02, T).
    """
    _check_T(T)
    if T < 21:
        raise ValueError(f"the linear schedule needs T >= 21 (its last beta is 20 / T), got T={T}; use 'cosine'")
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(u) = cos^2((u + s) / (1 + s) * pi / 2), (T,) float64.

    beta_t = 1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), capped at max_beta (the last step would
    otherwise be exactly 1).
    """
    _check_T(T)
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def shift_snr(betas: torch.Tensor, shift: float) -> torch.Tensor:
    """Hoogeboom et al. 2023, §3.1: divide every SNR by shift**2 (logSNR - 2 log shift). (T,) -> (T,) float64.

    A clip of 8 frames, or a bigger image, is more redundant than the image a schedule was tuned on: at
    the same SNR its coarse content (where the object is, which way it moves) is still readable. Shifting
    the SNR down spends more of training and sampling where that content is decided. shift = 1: unchanged.
    """
    if not shift > 0:
        raise ValueError(f"shift must be > 0 (1 = unchanged, 2 = SNR / 4), got {shift}")
    betas = betas.to(torch.float64)
    if shift == 1:
        return betas
    ab = torch.cumprod(1 - betas, 0)
    ab = torch.sigmoid(torch.logit(ab) - 2 * math.log(shift))   # SNR / shift^2; ab = 0 (zero SNR) stays 0
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return 1 - ab / ab_prev


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1: shift/scale sqrt(alpha_bar) so the last is 0 and the first unchanged.

    betas: (T,) -> (T,) float64. The last beta becomes exactly 1 (x_T is pure noise, SNR(T) = 0).
    """
    if betas.dim() != 1 or betas.numel() < 2:
        raise ValueError(f"betas must be a 1-D tensor with at least 2 entries, got shape {tuple(betas.shape)}")
    betas = betas.to(torch.float64)
    s = torch.cumprod(1 - betas, 0).sqrt()
    s0, sT = s[0].clone(), s[-1].clone()
    s = (s - sT) * s0 / (s0 - sT)                 # s[-1] -> 0, s[0] -> s0
    ab = s**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class Schedule:
    """Every per-timestep quantity a sampler needs, as (T,) float64 CPU tensors."""

    kind: str
    zero_snr: bool
    betas: torch.Tensor                 # beta_t
    alphas: torch.Tensor                # alpha_t = 1 - beta_t
    alpha_bars: torch.Tensor            # prod_{s<=t} alpha_s
    alpha_bars_prev: torch.Tensor       # alpha_bar_{t-1}, with alpha_bar_{-1} = 1
    posterior_variance: torch.Tensor    # beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
    posterior_log_variance: torch.Tensor  # log beta~_t, with t = 0 clipped to beta~_1 (beta~_0 = 0)
    posterior_mean_coef_x0: torch.Tensor  # sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
    posterior_mean_coef_xt: torch.Tensor  # sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
    shift: float = 1.0                  # the SNR shift applied to the named schedule (`shift_snr`)

    @property
    def T(self) -> int:
        return int(self.betas.numel())

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar): (T,) float64 (0 at T-1 after zero_snr)."""
        return self.alpha_bars / (1 - self.alpha_bars)

    def __repr__(self) -> str:
        shift = f", shift={self.shift:g}" if self.shift != 1 else ""
        return (f"Schedule(kind={self.kind!r}, T={self.T}, zero_snr={self.zero_snr}{shift}, "
                f"alpha_bar[0]={self.alpha_bars[0].item():.6g}, alpha_bar[T-1]={self.alpha_bars[-1].item():.3g})")


def schedule_from_betas(betas: torch.Tensor, kind: str = "custom", zero_snr: bool = False) -> Schedule:
    """Build a Schedule from any (T,) betas in (0, 1]."""
    betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
    if betas.dim() != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    if not bool(((betas > 0) & (betas <= 1)).all()):
        raise ValueError(f"betas must lie in (0, 1], got min {betas.min().item():.3g}, max {betas.max().item():.3g}")
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    post_var = betas * (1 - ab_prev) / (1 - ab)
    # beta~_0 = 0: take the log of beta~_1 there, as Ho et al.'s code does (only used for the NLL).
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if betas.numel() > 1 else torch.log(betas)
    return Schedule(
        kind=kind, zero_snr=zero_snr, betas=betas, alphas=alphas, alpha_bars=ab, alpha_bars_prev=ab_prev,
        posterior_variance=post_var, posterior_log_variance=post_logvar,
        posterior_mean_coef_x0=ab_prev.sqrt() * betas / (1 - ab),
        posterior_mean_coef_xt=alphas.sqrt() * (1 - ab_prev) / (1 - ab),
    )


def make_schedule(kind: str = "linear", T: int = 1000, zero_snr: bool = False, shift: float = 1.0) -> Schedule:
    """The named schedule ("linear" | "cosine") with T steps, its SNR shifted (`shift_snr`), optionally
    rescaled to zero terminal SNR."""
    if kind == "linear":
        betas = linear_betas(T)
    elif kind == "cosine":
        betas = cosine_betas(T)
    else:
        raise ValueError(f"kind must be one of {SCHEDULE_KINDS}, got {kind!r}")
    betas = shift_snr(betas, shift)
    if zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    return dataclasses.replace(schedule_from_betas(betas, kind=kind, zero_snr=zero_snr), shift=float(shift))


def gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped to broadcast against `like`: (B,) -> (B, 1, 1, ...) in like's dtype/device.

    values: (T,) table; t: (B,) long with B == like.shape[0]; like: (B, ...) of any rank
    (2-D points, (B, C, H, W) images, (B, C, T, H, W) video). For video t may also be (B, T),
    one level per frame (-> (B, 1, T, 1, 1)).
    """
    t = _check_t(t, like, values.numel())
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    if t.dim() == 2:                                              # one noise level per frame of a clip
        return out.reshape(t.shape[0], 1, t.shape[1], 1, 1)
    return out.reshape(t.shape[0], *([1] * (like.dim() - 1)))


def _check_t(t, like: torch.Tensor, T: int) -> torch.Tensor:
    if not torch.is_tensor(t):
        t = torch.as_tensor(t)
    if t.dim() == 0:
        t = t.expand(like.shape[0])
    per_frame = t.dim() == 2 and like.dim() == 5 and tuple(t.shape) == (like.shape[0], like.shape[2])
    if not per_frame and (t.dim() != 1 or t.shape[0] != like.shape[0]):
        raise ValueError(f"t must be a (B,) tensor with B = {like.shape[0]} (the batch of x), or (B, T) for video "
                         f"(B, C, T, H, W), got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point:
        raise ValueError(f"t must hold integer timesteps (torch.long), got dtype {t.dtype}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"t must lie in [0, {T - 1}], got min {int(t.min())}, max {int(t.max())}")
    return t.long()


def _check_T(T: int) -> None:
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T (number of diffusion steps) must be an int >= 2, got {T!r}")


__all__ = ["Schedule", "make_schedule", "schedule_from_betas", "linear_betas", "cosine_betas",
           "rescale_zero_terminal_snr", "shift_snr", "gather", "SCHEDULE_KINDS"]
