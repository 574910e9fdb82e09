"""Position and time embeddings: sinusoidal timesteps, 1/2/3-D sin-cos positions, 3-D RoPE,
and a learned T5-style bucketed relative position bias.

* timestep embedding: Transformer sinusoids (Vaswani et al. 2017, arXiv:1706.03762) of the
  diffusion step, as in DDPM (arXiv:2006.11239) and DiT (arXiv:2212.09748), cos half first.
* sin-cos positions for 2-D patches as in MAE (arXiv:2111.06377), extended to (t, h, w).
* rotary embedding (RoFormer, Su et al. 2021, arXiv:2104.09864) split over time / height /
  width as in 3-D RoPE video transformers (e.g. CogVideoX, arXiv:2408.06072): each axis rotates
  its own slice of the head dimension by its own position, so q.k depends only on offsets.
* bucketed relative position bias from T5 (Raffel et al. 2019, arXiv:1910.10683), used for
  temporal attention in Video Diffusion Models (arXiv:2204.03458).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """t: (B,) float or long diffusion steps -> (B, dim) = [cos(t w_i), sin(t w_i)], w_i = max_period^(-i/half).

    Odd `dim` gets one trailing zero column. Computed in float32 (float64 if t is float64).
    """
    if not isinstance(t, torch.Tensor) or t.dim() != 1:
        raise ValueError(f"t must be a 1-D tensor (B,), got {tuple(t.shape) if isinstance(t, torch.Tensor) else t!r}")
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    dt = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dt, device=t.device) / half)
    args = t.to(dt)[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def sincos_pos_embed_1d(dim: int, positions, max_period: float = 10000.0) -> torch.Tensor:
    """positions: int L (meaning 0..L-1) or a 1-D tensor (L,) -> (L, dim) = [sin(p w_i), cos(p w_i)]."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be even and >= 2, got {dim}")
    pos = torch.arange(positions, dtype=torch.float64) if isinstance(positions, int) else positions.to(torch.float64)
    if pos.dim() != 1:
        raise ValueError(f"positions must be an int or a 1-D tensor, got shape {tuple(pos.shape)}")
    half = dim // 2
    freqs = max_period ** (-torch.arange(half, dtype=torch.float64, device=pos.device) / half)
    args = pos[:, None] * freqs[None]  # (L, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1).float()


def _grid(sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """Coordinates of a row-major grid: one (prod(sizes),) tensor per axis."""
    mesh = torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij")
    return [m.reshape(-1) for m in mesh]


def default_split_3d(dim: int) -> tuple[int, int, int]:
    """Split a width over (t, h, w): about 1/4 for time, 3/8 each for height and width, all even."""
    if dim < 6 or dim % 2:
        raise ValueError(f"dim must be even and >= 6 to split over (t, h, w), got {dim}")
    hw = max(2, 2 * ((3 * dim) // 16))
    return dim - 2 * hw, hw, hw


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """grid (H, W) -> (H*W, dim), row-major tokens; first dim/2 channels encode the row, the rest the column."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for a 2-D sin-cos embedding, got {dim}")
    h, w = _grid(tuple(grid))
    return torch.cat([sincos_pos_embed_1d(dim // 2, h), sincos_pos_embed_1d(dim // 2, w)], dim=-1)


def sincos_pos_embed_3d(dim: int, grid: tuple[int, int, int], split: tuple[int, int, int] | None = None) -> torch.Tensor:
    """grid (T, H, W) -> (T*H*W, dim), tokens ordered t, then h, then w; channels split (t, h, w) (even parts)."""
    split = default_split_3d(dim) if split is None else tuple(split)
    if sum(split) != dim or any(s % 2 or s < 2 for s in split):
        raise ValueError(f"split must be three even parts summing to dim={dim}, got {split}")
    coords = _grid(tuple(grid))
    return torch.cat([sincos_pos_embed_1d(s, c) for s, c in zip(split, coords)], dim=-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., 2n) -> (..., 2n): [x1, x2] -> [-x2, x1] (rotation by 90 degrees of each pair (x1_i, x2_i))."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Rope3D:
    """Rotary position embedding over (t, h, w): head_dim = split[0] + split[1] + split[2].

    Channel slice a (a in t, h, w) of size 2n rotates its pairs (x_i, x_{i+n}) by angle
    pos_a * theta^(-i/n). A rotation keeps norms, and R(p)^T R(p') = R(p' - p), so
    <rope(q, p), rope(k, p')> depends on p' - p only.
    """

    def __init__(self, head_dim: int, split: tuple[int, int, int] | None = None, theta: float = 10000.0):
        self.split = default_split_3d(head_dim) if split is None else tuple(split)
        if sum(self.split) != head_dim or any(s % 2 or s < 0 for s in self.split):
            raise ValueError(f"split must be three even non-negative parts summing to head_dim={head_dim}, got {split}")
        self.head_dim, self.theta = head_dim, theta

    def angles(self, positions: torch.Tensor) -> torch.Tensor:
        """positions: (L, 3) float (t, h, w) -> (L, head_dim // 2) rotation angles."""
        parts = []
        for a, s in enumerate(self.split):
            n = s // 2
            if n:
                freqs = self.theta ** (-torch.arange(n, dtype=torch.float64, device=positions.device) / n)
                parts.append(positions[:, a : a + 1].to(torch.float64) * freqs)  # (L, n)
        return torch.cat(parts, dim=-1)

    def cos_sin(self, grid_shape: tuple[int, int, int], device=None, dtype=torch.float32):
        """cos, sin tables (T*H*W, head_dim) for a row-major (T, H, W) token grid."""
        pos = torch.stack(_grid(tuple(grid_shape)), dim=-1).to(device)
        return self.cos_sin_at(pos, dtype=dtype)

    def cos_sin_at(self, positions: torch.Tensor, dtype=torch.float32):
        """cos, sin tables (L, head_dim) for explicit positions (L, 3) (may be fractional or offset)."""
        ang = self.angles(positions)  # (L, head_dim // 2): [t angles, h angles, w angles]
        chunks, start = [], 0
        for s in self.split:  # an axis slice of width 2n rotates pairs (i, i + n): [angles, angles]
            n = s // 2
            chunks += [ang[:, start : start + n]] * 2
            start += n
        ang = torch.cat(chunks, dim=-1)  # (L, head_dim)
        return ang.cos().to(dtype), ang.sin().to(dtype)

    def apply(self, x: torch.Tensor, grid_shape: tuple[int, int, int] | None = None, *, cos=None, sin=None):
        """x: (..., L, head_dim) with L = T*H*W tokens in (t, h, w) row-major order -> same shape."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"x must end in head_dim={self.head_dim}, got shape {tuple(x.shape)}")
        if cos is None:
            if grid_shape is None or math.prod(grid_shape) != x.shape[-2]:
                raise ValueError(f"grid_shape (T, H, W) must multiply to L={x.shape[-2]} tokens, got {grid_shape}")
            cos, sin = self.cos_sin(grid_shape, device=x.device, dtype=x.dtype)
        out, start = [], 0
        for s in self.split:
            xs, c, si = x[..., start : start + s], cos[..., start : start + s], sin[..., start : start + s]
            out.append(xs * c + rotate_half(xs) * si if s else xs)
            start += s
        return torch.cat(out, dim=-1)


def relative_position_bucket(rel: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5 buckets of rel = key_pos - query_pos (long): exact for small |rel|, log-spaced up to max_distance."""
    ret = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        ret = ret + (rel > 0).long() * num_buckets
        n = rel.abs()
    else:
        n = (-rel).clamp_min(0)  # only the past is distinguished; the future shares bucket 0
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (
        torch.log(n.float().clamp_min(1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp_max(num_buckets - 1)
    return ret + torch.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """Learned per-head bias from bucketed relative positions (T5); starts at zero (plain attention).

    forward(Lq, Lk) -> (heads, Lq, Lk), to pass as `bias=` to `minivid.ops.attention`.
    """

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.num_heads, self.num_buckets, self.max_distance = num_heads, num_buckets, max_distance
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(num_buckets, num_heads)
        nn.init.zeros_(self.embedding.weight)

    def forward(self, Lq: int, Lk: int | None = None) -> torch.Tensor:
        """Bias (heads, Lq, Lk); query i and key j are at positions i and j (offset 0)."""
        Lk = Lq if Lk is None else Lk
        dev = self.embedding.weight.device
        rel = torch.arange(Lk, device=dev)[None, :] - torch.arange(Lq, device=dev)[:, None]  # (Lq, Lk)
        buckets = relative_position_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1)  # (heads, Lq, Lk)
