"""Rectified flow / flow matching: straight paths from data to noise, a velocity to regress, an ODE to integrate.

Follows Liu et al. 2022, "Flow Straight and Fast" (rectified flow, arXiv:2209.03003), Lipman et al.
2022, "Flow Matching for Generative Modeling" (arXiv:2210.02747), in the convention of Esser et
al. 2024, "Scaling Rectified Flow Transformers" (SD3, arXiv:2403.03206, sections 2 and 3.1):

    x_t = (1 - t) x0 + t eps,   t in [0, 1],   t = 0 data, t = 1 noise eps ~ N(0, I),
    v = d x_t / dt = eps - x0                      (the regression target),
    loss = E_{t, x0, eps} || v_theta(x_t, t) - (eps - x0) ||^2.

The minimiser is v*(x, t) = E[eps - x0 | x_t = x], and the ODE dx/dt = v*(x, t), run from t = 1
(pure noise) down to t = 0, carries N(0, I) onto the data distribution. Because x_t is linear in
t, one velocity gives both endpoints: x0_hat = x_t - t v, eps_hat = x_t + (1 - t) v.

Timesteps for training: uniform, or SD3's logit-normal t = sigmoid(n), n ~ N(loc, scale^2)
(section 3.1), which spends more training on the middle of the path. Sampling: Euler or Heun
(second order) on a grid from 1 to 0, optionally with SD3's resolution-dependent shift
t -> s t / (1 + (s - 1) t), with classifier-free guidance on the velocity (arXiv:2207.12598).

The model is called as `model(x_t, t, **cond)` with t a (B,) float tensor in [0, 1].
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from minivid.diffusion.samplers import _device_of, _init, guided_predict

T_SAMPLERS = ("uniform", "logit_normal")
FLOW_METHODS = ("euler", "heun")


def _expand(t: torch.Tensor, like: torch.Tensor, name: str = "t") -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) in like's dtype, to broadcast over a (B, ...) tensor."""
    t = torch.as_tensor(t, device=like.device)
    if t.dim() != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"{name} must be (B,) = ({like.shape[0]},), got {tuple(t.shape)}")
    return t.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def flow_interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The point on the straight path and its velocity: x_t = (1 - t) x0 + t eps, v = eps - x0.

    x0, noise: (B, ...); t: (B,) float in [0, 1]. Returns (x_t, v), both (B, ...).
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    tt = _expand(t, x0)
    ### BEGIN SOLUTION  # exercise 8.3: the flow-matching target
    x_t = (1 - tt) * x0 + tt * noise
    v = noise - x0
    ### END SOLUTION
    return x_t, v


def x0_eps_from_velocity(x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both endpoints of the straight line through x_t with velocity v: x0 = x_t - t v, eps = x_t + (1 - t) v."""
    tt = _expand(t, x_t)
    return x_t - tt * v, x_t + (1 - tt) * v


def sample_flow_t(n: int, t_sampler: str = "uniform", generator: torch.Generator | None = None,
                  device="cpu", loc: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """n training times in [0, 1]: (n,) float32. "uniform": U[0, 1); "logit_normal": sigmoid(N(loc, scale^2))."""
    gdev = generator.device if generator is not None else device
    if t_sampler == "uniform":
        t = torch.rand(n, generator=generator, device=gdev)
    elif t_sampler == "logit_normal":
        if not scale > 0:
            raise ValueError(f"scale must be > 0 for the logit-normal sampler, got {scale}")
        t = torch.sigmoid(loc + scale * torch.randn(n, generator=generator, device=gdev))
    else:
        raise ValueError(f"t_sampler must be one of {T_SAMPLERS}, got {t_sampler!r}")
    return t.to(device)


def flow_matching_loss(model: Callable, x0: torch.Tensor, generator: torch.Generator | None = None,
                       cond: dict | None = None, t_sampler: str = "uniform", *, t: torch.Tensor | None = None,
                       noise: torch.Tensor | None = None, reduction: str = "mean", loc: float = 0.0,
                       scale: float = 1.0) -> torch.Tensor:
    """The conditional flow-matching loss || model(x_t, t, **cond) - (eps - x0) ||^2 (Lipman et al., rectified-flow path).

    x0: (B, ...) clean data; t: (B,) float in [0, 1] (default drawn by `t_sampler`, see sample_flow_t);
    noise: (B, ...) (default N(0, I) from `generator`); cond: extra keyword arguments for the model.
    reduction: "mean" -> scalar, "none" -> (B,) per-example mean squared error.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    B = x0.shape[0]
    if t is None:
        t = sample_flow_t(B, t_sampler, generator, x0.device, loc, scale)
    if noise is None:
        gdev = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(x0.device)
    t = torch.as_tensor(t, device=x0.device)
    if not t.is_floating_point() or bool(((t < 0) | (t > 1)).any()):
        raise ValueError("t must be float flow-matching time in [0, 1]")
    x_t, target = flow_interpolate(x0, noise, t)
    out = model(x_t, t.to(x0.dtype), **(cond or {}))
    if out.shape != x0.shape:
        raise ValueError(f"model output must have the shape of x0 {tuple(x0.shape)}, got {tuple(out.shape)}")
    err = (out - target).pow(2).reshape(B, -1).mean(1)
    return err.mean() if reduction == "mean" else err


def flow_timesteps(steps: int, shift: float = 1.0) -> torch.Tensor:
    """The (steps + 1,) float64 grid from 1 down to 0 a sampler walks: linspace, then t -> s t / (1 + (s - 1) t).

    shift s > 1 spends more steps near t = 1 (noise), as SD3 does at high resolution.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


@torch.no_grad()
def flow_sample(model: Callable, shape, steps: int = 50, method: str = "euler", *, cond: dict | None = None,
                uncond: dict | None = None, guidance_scale: float = 1.0, cfg_mode: str = "batch",
                shift: float = 1.0, timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device=None, dtype=torch.float32, progress: bool = False,
                return_trajectory: bool = False, desc: str | None = None):
    """Integrate dx/dt = v(x, t) from t = 1 (noise) to t = 0 (data): Euler or Heun, with classifier-free guidance.

    shape: (B, ...) of the samples; steps: ODE steps (Heun calls the model twice per step);
    cond/uncond/guidance_scale/cfg_mode: as `ddim_sample` (the guided velocity is
    v_u + scale (v_c - v_u); scale 1 calls the conditional model alone); timesteps: an explicit
    decreasing (S + 1,) grid in [0, 1] (overrides steps/shift); noise: the initial x at t = timesteps[0] (1).
    Returns x at t = 0 (shape), or (x, trajectory) with trajectory = {"t": (S + 1,), "x": (S + 1, *shape),
    "x0": (S, *shape) the clean estimate x - t v at each step} on CPU when return_trajectory.
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"method must be one of {FLOW_METHODS}, got {method!r}")
    ts = flow_timesteps(steps, shift) if timesteps is None else torch.as_tensor(timesteps, dtype=torch.float64)
    if ts.dim() != 1 or ts.numel() < 2 or not bool((ts[:-1] > ts[1:]).all()) or ts[0] > 1 or ts[-1] < 0:
        raise ValueError(f"timesteps must be a strictly decreasing 1-D grid in [0, 1], got {ts.tolist()}")
    device = _device_of(model, device)
    x = _init(shape, noise, generator, device, dtype)
    B = x.shape[0]
    traj_x, traj_x0 = [x.cpu()] if return_trajectory else None, []

    def velocity(z, t_val):
        t = torch.full((B,), t_val, dtype=dtype, device=device)
        return guided_predict(model, z, t, cond, uncond, guidance_scale, cfg_mode)

    pairs = list(zip(ts[:-1].tolist(), ts[1:].tolist()))
    for t_cur, t_next in tqdm(pairs, desc=desc or f"{method}-{len(pairs)}", disable=not progress, leave=False):
        v = velocity(x, t_cur)
        dt = t_next - t_cur                                        # < 0: we walk from noise to data
        x_next = x + dt * v
        if method == "heun":                                       # trapezoid: average the two end slopes
            x_next = x + dt * 0.5 * (v + velocity(x_next, t_next))
        if return_trajectory:
            traj_x0.append((x - t_cur * v).cpu())
            traj_x.append(x_next.cpu())
        x = x_next
    if return_trajectory:
        return x, {"t": ts.clone(), "x": torch.stack(traj_x), "x0": torch.stack(traj_x0)}
    return x


__all__ = ["T_SAMPLERS", "FLOW_METHODS", "flow_interpolate", "x0_eps_from_velocity", "sample_flow_t",
           "flow_matching_loss", "flow_timesteps", "flow_sample"]
