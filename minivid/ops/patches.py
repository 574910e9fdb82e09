"""Spacetime patches and adaLN modulation: the plumbing of a diffusion transformer on video.

* patchify / unpatchify: cut a video (B, C, T, H, W) into non-overlapping pt x ph x pw boxes
  and flatten each into one token, as in ViViT's tubelets (arXiv:2103.15691) and Sora's
  "spacetime patches"; a linear layer on these tokens equals a Conv3d with kernel = stride =
  patch (the feature order (C, pt, ph, pw) matches that conv's flattened weight).
* modulate / gate / AdaLNZero: adaptive LayerNorm from DiT (Peebles & Xie 2022,
  arXiv:2212.09748): the conditioning vector predicts a shift, a scale and a gate per block;
  adaLN-Zero initialises that prediction to zero so every block starts as the identity.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _patch3(patch) -> tuple[int, int, int]:
    p = (patch, patch, patch) if isinstance(patch, int) else tuple(patch)
    if len(p) != 3 or not all(isinstance(i, int) and i >= 1 for i in p):
        raise ValueError(f"patch must be a positive int or (pt, ph, pw), got {patch!r}")
    return p


def patchify(x: torch.Tensor, patch=(1, 2, 2)) -> torch.Tensor:
    """x: (B, C, T, H, W) -> tokens (B, L, C*pt*ph*pw), L = (T/pt)(H/ph)(W/pw) in (t, h, w) row-major order.

    Each token's features are ordered (C, pt, ph, pw). T, H, W must be divisible by the patch.
    """
    pt, ph, pw = _patch3(patch)
    if x.dim() != 5:
        raise ValueError(f"x must be a video (B, C, T, H, W), got shape {tuple(x.shape)}")
    B, C, T, H, W = x.shape
    if T % pt or H % ph or W % pw:
        raise ValueError(f"video size (T, H, W)={(T, H, W)} must be divisible by patch {(pt, ph, pw)}")
    nt, nh, nw = T // pt, H // ph, W // pw
    ### BEGIN SOLUTION  # exercise 8.1: spacetime patchify
    x = x.reshape(B, C, nt, pt, nh, ph, nw, pw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, nt, nh, nw, C, pt, ph, pw)
    return x.reshape(B, nt * nh * nw, C * pt * ph * pw)
    ### END SOLUTION


def unpatchify(tokens: torch.Tensor, patch, grid_or_shape, channels: int | None = None) -> torch.Tensor:
    """tokens (B, L, C*pt*ph*pw) -> video (B, C, T, H, W); the inverse of `patchify`.

    grid_or_shape: the video's size (T, H, W), or its full shape (B, C, T, H, W) (e.g. `x.shape`;
    then `channels` may be omitted). Not the patch grid: that is (T/pt, H/ph, W/pw).
    """
    pt, ph, pw = _patch3(patch)
    size = tuple(int(s) for s in grid_or_shape)
    if len(size) == 5:
        channels = size[1] if channels is None else channels
        size = size[2:]
    if len(size) != 3:
        raise ValueError(f"grid_or_shape must be the video size (T, H, W) or shape (B, C, T, H, W), got {grid_or_shape}")
    if tokens.dim() != 3:
        raise ValueError(f"tokens must be (B, L, C*pt*ph*pw), got shape {tuple(tokens.shape)}")
    if channels is None:
        channels = tokens.shape[-1] // (pt * ph * pw)
    T, H, W = size
    if T % pt or H % ph or W % pw:
        raise ValueError(f"video size (T, H, W)={size} must be divisible by patch {(pt, ph, pw)}")
    nt, nh, nw = T // pt, H // ph, W // pw
    B, L, F = tokens.shape
    if L != nt * nh * nw or F != channels * pt * ph * pw:
        raise ValueError(
            f"tokens {tuple(tokens.shape)} do not match video size {size}, patch {(pt, ph, pw)}, channels {channels}: "
            f"expected (B, {nt * nh * nw}, {channels * pt * ph * pw}) (pass the video size, not the patch grid)")
    x = tokens.reshape(B, nt, nh, nw, channels, pt, ph, pw)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, nt, pt, nh, ph, nw, pw)
    return x.reshape(B, channels, T, H, W)


def _per_token(c: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """(B, D) -> (B, 1, ..., 1, D) to broadcast over the token dims of x (B, ..., D); x-shaped c passes."""
    if c.dim() == x.dim():
        return c
    if c.dim() != 2 or c.shape[0] not in (1, x.shape[0]) or c.shape[-1] != x.shape[-1]:
        raise ValueError(f"{name} must be (B, D)=({x.shape[0]}, {x.shape[-1]}) or shaped like x {tuple(x.shape)}, "
                         f"got {tuple(c.shape)}")
    return c.reshape(c.shape[0], *([1] * (x.dim() - 2)), c.shape[-1])


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) (or (B, ..., D)); shift, scale (B, D) -> x * (1 + scale) + shift, broadcast over tokens."""
    return x * (1 + _per_token(scale, x, "scale")) + _per_token(shift, x, "shift")


def gate(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """x (B, L, D); g (B, D) -> g * x broadcast over tokens (the residual branch's gate)."""
    return x * _per_token(g, x, "g")


class AdaLNZero(nn.Module):
    """c (B, cond_dim) -> `chunks` tensors (B, dim) from Linear(SiLU(c)), zero-initialised (adaLN-Zero).

    With chunks=6 they are (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) as in DiT;
    at initialisation all are 0, so modulate() is the identity and every gate closes its branch.
    """

    def __init__(self, dim: int, cond_dim: int, chunks: int = 6):
        super().__init__()
        self.dim, self.chunks = dim, chunks
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, chunks * dim))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """c: (B, cond_dim) -> tuple of `chunks` tensors, each (B, dim)."""
        if c.dim() != 2:
            raise ValueError(f"c must be (B, cond_dim), got shape {tuple(c.shape)}")
        return self.proj(c).chunk(self.chunks, dim=-1)
