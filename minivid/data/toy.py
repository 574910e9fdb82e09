"""2-D toy distributions for chapter 01's first diffusion model: two moons, eight Gaussians, a spiral.

Small enough to watch a whole sampler trajectory in a scatter plot (DDPM, Ho et al. 2020, arXiv:2006.11239).
"""
from __future__ import annotations

import math

import torch

TOY_KINDS = ("moons", "eight_gaussians", "spiral")


def toy_data(n: int, kind: str = "moons", generator: torch.Generator | None = None) -> torch.Tensor:
    """n points of a 2-D toy distribution, roughly zero-mean and unit-scale: (n, 2) float32."""
    u = torch.rand(n, generator=generator)
    z = torch.randn(n, 2, generator=generator)
    if kind == "moons":
        upper = torch.rand(n, generator=generator) < 0.5
        a = math.pi * u
        x = torch.where(upper, torch.cos(a), 1 - torch.cos(a))
        y = torch.where(upper, torch.sin(a), 0.5 - torch.sin(a))
        pts = torch.stack([x - 0.5, y - 0.25], 1) + 0.06 * z
        return (pts / 0.7).float()
    if kind == "eight_gaussians":
        k = (u * 8).long().clamp(max=7).float()
        centers = torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1) * 1.5
        return (centers + 0.1 * z).float()
    if kind == "spiral":
        r = 0.3 + 2.7 * u.sqrt()
        return (torch.stack([r * torch.cos(3 * r), r * torch.sin(3 * r)], 1) / 1.8 + 0.04 * z).float()
    raise ValueError(f"kind must be one of {TOY_KINDS}, got {kind!r}")


__all__ = ["TOY_KINDS", "toy_data"]
