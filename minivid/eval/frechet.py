"""Fréchet distance between Gaussian fits of two feature sets (FID, Heusel et al. 2017,
arXiv:1706.08500; FVD, Unterthiner et al. 2018, arXiv:1812.01717).

    d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

The trace term uses the symmetric form S_a^1/2 S_b S_a^1/2 (positive semi-definite, same
eigenvalues as S_a S_b), so two symmetric eigendecompositions (`torch.linalg.eigh`) replace
a general matrix square root: no scipy, float64 throughout.
"""
from __future__ import annotations

import torch


def _check_feats(name: str, f) -> torch.Tensor:
    f = torch.as_tensor(f)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must be (N, D) with N >= 2 samples, got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or inf")
    return f.detach().to("cpu", torch.float64)


def psd_sqrt(mat: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (D, D) via eigh (negative
    eigenvalues from round-off are clamped to 0)."""
    evals, evecs = torch.linalg.eigh((mat + mat.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def _frechet_d2(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """The judge's squared Fréchet distance (what `frechet_distance` uses): the formula of exercise 0.2,
    kept apart so that the judge never runs a learner's unfinished answer."""
    mu_a, mu_b, cov_a, cov_b = (t.to(torch.float64) for t in (mu_a, mu_b, cov_a, cov_b))
    root_a = psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    evals = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    d2 = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * evals.sqrt().sum()
    return float(d2.clamp_min(0))


def gaussian_frechet(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """Squared Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b); mu (D,), cov (D, D).

    Exercise 0.2 (the judge's `frechet_distance` computes the same number on its own)."""
    mu_a, mu_b, cov_a, cov_b = (t.to(torch.float64) for t in (mu_a, mu_b, cov_a, cov_b))
    ### BEGIN SOLUTION  # exercise 0.2: the Fréchet distance between two Gaussians
    root_a = psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    evals = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    d2 = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * evals.sqrt().sum()
    ### END SOLUTION
    return float(d2.clamp_min(0))


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussian fits of feats_a (N, D) and feats_b (M, D).

    Like FID and FVD this is the *squared* distance d^2 of the module docstring.
    """
    a, b = _check_feats("feats_a", feats_a), _check_feats("feats_b", feats_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: feats_a has D={a.shape[1]}, feats_b has D={b.shape[1]}")
    return _frechet_d2(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1),
                       b.mean(0), torch.cov(b.T).reshape(b.shape[1], -1))
