"""Reverse-process samplers: DDPM ancestral sampling, DDIM, and classifier-free guidance.

Follows Ho et al. 2020 (arXiv:2006.11239, Algorithm 2, with the posterior variance beta~_t);
Song et al. 2021, "Denoising Diffusion Implicit Models" (arXiv:2010.02502, eq. 12 and eq. 16 for
sigma(eta)); Lin et al. 2023 (arXiv:2305.08891, Table 2: "leading", "trailing" and "linspace"
timestep spacing); Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (arXiv:2207.12598).

The model is called as `model(x_t, t, **cond)` and returns a (B, ...) prediction of the chosen
objective ("eps", "x0" or "v"). Samplers work for any rank of x ((B, 2), images, video).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from minivid.diffusion.process import model_output_to_x0_eps, q_posterior
from minivid.diffusion.schedules import Schedule, gather

SPACINGS = ("leading", "trailing", "linspace")


# ----------------------------------------------------------------------------- timesteps

def ddim_timesteps(T: int, steps: int, spacing: str = "trailing") -> torch.Tensor:
    """The `steps` timesteps (descending, 0-based) a DDIM run visits out of T; (steps,) long.

    leading:  0, T/S, 2T/S, ...           (never visits T-1: starts from a not-quite-pure-noise level)
    trailing: T-1, T-1-T/S, ..., T/S-1    (always starts at T-1, as Lin et al. recommend)
    linspace: round(linspace(0, T-1, S))  (iDDPM; includes both 0 and T-1)
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, T={T}], got {steps}")
    if spacing == "leading":
        ts = torch.arange(steps, dtype=torch.float64) * (T // steps)
    elif spacing == "trailing":
        ts = torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64))[:steps] - 1
        ts = ts.flip(0)
    elif spacing == "linspace":
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round()
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    ts = ts.long().flip(0)
    if ts.unique().numel() != steps:
        raise ValueError(f"spacing {spacing!r} gives repeated timesteps for T={T}, steps={steps}")
    return ts


# ----------------------------------------------------------------------------- single steps

def ddpm_step(x_t: torch.Tensor, t: torch.Tensor, x0_hat: torch.Tensor, noise: torch.Tensor,
              schedule: Schedule) -> torch.Tensor:
    """One ancestral step: x_{t-1} ~ q(x_{t-1} | x_t, x_0 = x0_hat).

    x_t, x0_hat, noise: (B, ...); t: (B,) long. Returns x_{t-1}: (B, ...). No noise is added at t = 0.
    """
    ### BEGIN SOLUTION  # exercise 1.3: one DDPM ancestral step
    mean, var = q_posterior(x0_hat, x_t, t, schedule)
    nonzero = (t > 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
    return mean + nonzero * var.sqrt() * noise
    ### END SOLUTION


def alpha_bar_at(schedule: Schedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t with the convention alpha_bar_{-1} = 1 (clean data): (B,) long -> (B, 1, ..., 1)."""
    padded = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bars])
    return gather(padded, torch.as_tensor(t).long() + 1, like)


def ddim_step(x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, x0_hat: torch.Tensor,
              eps_hat: torch.Tensor, schedule: Schedule, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step from t to t_prev < t (Song et al. eq. 12); t_prev = -1 means "to clean data".

    x_t, x0_hat, eps_hat, noise: (B, ...); t, t_prev: (B,) long. Returns x_{t_prev}: (B, ...).
    sigma = eta * sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)); eta = 0 is deterministic,
    eta = 1 on the full grid (t_prev = t - 1) is the DDPM posterior.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if eta > 0 and noise is None:
        raise ValueError("ddim_step with eta > 0 needs `noise` (B, ...) for the stochastic part")
    ### BEGIN SOLUTION  # exercise 1.4: one DDIM step
    ab = alpha_bar_at(schedule, t, x_t)
    ab_prev = alpha_bar_at(schedule, t_prev, x_t)
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps_hat
    if eta > 0:
        x_prev = x_prev + sigma * noise
    return x_prev
    ### END SOLUTION


# ----------------------------------------------------------------------------- guidance

def cfg_combine(cond_out: torch.Tensor, uncond_out: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond). Scale 1 returns cond_out exactly."""
    if cond_out.shape != uncond_out.shape:
        raise ValueError(f"uncond_out must have the shape of cond_out {tuple(cond_out.shape)}, "
                         f"got {tuple(uncond_out.shape)}")
    if scale == 1.0:
        return cond_out
    return uncond_out + scale * (cond_out - uncond_out)


def _cat_cond(a: dict, b: dict) -> dict:
    if set(a) != set(b):
        raise ValueError(f"cond and uncond must have the same keys, got {sorted(a)} and {sorted(b)}")
    out = {}
    for k in a:
        if a[k] is None or b[k] is None:
            if a[k] is not b[k]:
                raise ValueError(f"cond[{k!r}] and uncond[{k!r}] must both be tensors or both None")
            out[k] = None
        else:
            out[k] = torch.cat([a[k], b[k]], 0)
    return out


def guided_predict(model: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: dict | None = None,
                   uncond: dict | None = None, guidance_scale: float = 1.0, cfg_mode: str = "batch") -> torch.Tensor:
    """The sampler's hook into the model, with classifier-free guidance when asked.

    x_t: (B, ...); t: (B,) long; cond/uncond: keyword arguments for the model whose tensors are (B, ...).
    guidance_scale == 1 or uncond None: one call, model(x_t, t, **cond).
    cfg_mode "batch": one call on the doubled batch (2B, ...), split after; "twice": two calls.
    """
    cond = cond or {}
    if uncond is None or guidance_scale == 1.0:
        return model(x_t, t, **cond)
    if cfg_mode == "batch":
        out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), **_cat_cond(cond, uncond))
        c, u = out.chunk(2)
    elif cfg_mode == "twice":
        c, u = model(x_t, t, **cond), model(x_t, t, **uncond)
    else:
        raise ValueError(f"cfg_mode must be 'batch' or 'twice', got {cfg_mode!r}")
    return cfg_combine(c, u, guidance_scale)


# ----------------------------------------------------------------------------- sampling loops

def _init(shape, noise, generator, device, dtype):
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")
        return noise.to(device=device, dtype=dtype)
    gdev = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=dtype).to(device)


def _device_of(model, device):
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.no_grad()
def ddim_sample(model: Callable, shape, schedule: Schedule, objective: str = "eps", *, steps: int = 50,
                eta: float = 0.0, spacing: str = "trailing", timesteps: torch.Tensor | None = None,
                cond: dict | None = None, uncond: dict | None = None, guidance_scale: float = 1.0,
                cfg_mode: str = "batch", clip: float | None = None, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                progress: bool = True, return_trajectory: bool = False, desc: str | None = None):
    """Sample (B, ...) = `shape` with DDIM (Song et al. 2021) on `steps` timesteps.

    timesteps: explicit descending (S,) grid (overrides steps/spacing). noise: the initial x_T (shape);
    later noise (eta > 0) comes from `generator`. clip: clamp x0_hat to [-clip, clip] (images: 1.0).
    Returns x_0 (shape), or (x_0, trajectory) with trajectory = {"t": (S,) long, "x": (S+1, *shape),
    "x0": (S, *shape)} on CPU when return_trajectory.
    """
    device = _device_of(model, device)
    ts = ddim_timesteps(schedule.T, steps, spacing) if timesteps is None else torch.as_tensor(timesteps).long()
    if ts.dim() != 1 or (ts.numel() > 1 and not bool((ts[:-1] > ts[1:]).all())):
        raise ValueError(f"timesteps must be a strictly decreasing 1-D grid, got {ts.tolist()}")
    x = _init(shape, noise, generator, device, dtype)
    B = x.shape[0]
    traj_x, traj_x0 = [x.cpu()] if return_trajectory else None, []
    prevs = torch.cat([ts[1:], torch.tensor([-1])])
    for t_i, tp_i in tqdm(list(zip(ts.tolist(), prevs.tolist())), desc=desc or f"DDIM-{len(ts)}",
                          disable=not progress, leave=False):
        t = torch.full((B,), t_i, dtype=torch.long, device=device)
        out = guided_predict(model, x, t, cond, uncond, guidance_scale, cfg_mode)
        x0, eps = model_output_to_x0_eps(out, x, t, schedule, objective, clip)
        z = _init(shape, None, generator, device, dtype) if eta > 0 else None
        x = ddim_step(x, t, torch.full_like(t, tp_i), x0, eps, schedule, eta, z)
        if return_trajectory:
            traj_x.append(x.cpu())
            traj_x0.append(x0.cpu())
    if return_trajectory:
        return x, {"t": ts.clone(), "x": torch.stack(traj_x), "x0": torch.stack(traj_x0)}
    return x


@torch.no_grad()
def ddpm_sample(model: Callable, shape, schedule: Schedule, objective: str = "eps", *,
                cond: dict | None = None, uncond: dict | None = None, guidance_scale: float = 1.0,
                cfg_mode: str = "batch", clip: float | None = None, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                progress: bool = True, return_trajectory: bool = False, desc: str | None = None):
    """Ancestral sampling (Ho et al. Algorithm 2) over all T steps; same arguments/returns as ddim_sample."""
    device = _device_of(model, device)
    x = _init(shape, noise, generator, device, dtype)
    B = x.shape[0]
    traj_x, traj_x0 = [x.cpu()] if return_trajectory else None, []
    for t_i in tqdm(range(schedule.T - 1, -1, -1), desc=desc or f"DDPM-{schedule.T}", disable=not progress,
                    leave=False):
        t = torch.full((B,), t_i, dtype=torch.long, device=device)
        out = guided_predict(model, x, t, cond, uncond, guidance_scale, cfg_mode)
        x0, _ = model_output_to_x0_eps(out, x, t, schedule, objective, clip)
        z = _init(shape, None, generator, device, dtype) if t_i > 0 else torch.zeros_like(x)
        x = ddpm_step(x, t, x0, z, schedule)
        if return_trajectory:
            traj_x.append(x.cpu())
            traj_x0.append(x0.cpu())
    if return_trajectory:
        return x, {"t": torch.arange(schedule.T - 1, -1, -1), "x": torch.stack(traj_x), "x0": torch.stack(traj_x0)}
    return x


def sample(model: Callable, shape, schedule: Schedule, objective: str = "eps", *, sampler: str = "ddim",
           **kwargs):
    """Dispatch: sampler "ddpm" -> ddpm_sample, "ddim" -> ddim_sample (kwargs passed through)."""
    if sampler == "ddpm":
        return ddpm_sample(model, shape, schedule, objective, **kwargs)
    if sampler == "ddim":
        return ddim_sample(model, shape, schedule, objective, **kwargs)
    raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")


__all__ = ["SPACINGS", "ddim_timesteps", "ddpm_step", "ddim_step", "alpha_bar_at", "cfg_combine",
           "guided_predict", "ddim_sample", "ddpm_sample", "sample"]
