"""Distances between two sets of samples: kernel MMD (Gretton et al. 2012) and sliced Wasserstein-1.

Used on chapter 01's 2-D toy data, where the true distribution is known and these are exact enough.
"""
from __future__ import annotations

import torch

from minivid.utils import make_generator


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.05, 0.1, 0.2, 0.5, 1.0)) -> float:
    """Unbiased squared MMD (Gretton et al. 2012) with a sum of Gaussian kernels exp(-|a-b|^2 / (2 h^2)).

    x: (N, D), y: (M, D) -> float (about 0 for samples of the same distribution; may dip below 0).
    """
    x, y = x.double(), y.double()
    n, m = len(x), len(y)

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance: mean over random directions of W1 between the 1-D projections.

    x, y: (N, D) with the same N -> float.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    g = make_generator(seed)
    d = torch.randn(x.shape[1], n_proj, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=0, keepdim=True)
    px, _ = (x.double() @ d).sort(0)
    py, _ = (y.double() @ d).sort(0)
    return float((px - py).abs().mean())


__all__ = ["mmd_rbf", "sliced_wasserstein"]
