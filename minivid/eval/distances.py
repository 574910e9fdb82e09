"""Distances between samples: kernel MMD (Gretton et al. 2012) and sliced Wasserstein-1 between two sets
(chapter 01's 2-D toy data, where the true distribution is known), and PSNR between paired images or clips
(reconstructions, interpolated frames).
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


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per item, in dB: 10 log10(range^2 / MSE). x, y: (B, ...) -> (B,).

    data_range = 2 for images in [-1, 1]. Clamp reconstructions to the range first (as a saved image
    would be); identical items give +inf.
    """
    if x.shape != y.shape or x.dim() < 2:
        raise ValueError(f"x and y must have one shape (B, ...), got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(data_range ** 2 / mse)).to(x.dtype)


__all__ = ["mmd_rbf", "sliced_wasserstein", "psnr"]
