"""A timestep-conditioned residual MLP: the denoiser for 2-D toy distributions (chapter 01).

The network that DDPM (Ho et al. 2020, arXiv:2006.11239) uses for images is a U-Net; for points
in the plane a few residual MLP blocks are enough. The timestep enters through the sinusoidal
embedding of the Transformer (Vaswani et al. 2017, arXiv:1706.03762) and is added inside every
block.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minivid.ops import timestep_embedding


@dataclass
class MLPConfig:
    dim: int = 2            # data dimension D
    hidden: int = 128       # width of the residual stream
    depth: int = 3          # residual blocks
    time_dim: int = 64      # sinusoidal embedding size


MLP_PRESETS = {
    "mlp-toy": MLPConfig(),
    "mlp-tiny": MLPConfig(hidden=32, depth=2, time_dim=16),
}


class _Block(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.t_proj = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """h, temb: (B, hidden) -> (B, hidden)."""
        z = torch.nn.functional.silu(self.fc1(self.norm(h)) + self.t_proj(temb))
        return h + self.fc2(z)


class DiffusionMLP(nn.Module):
    """model(x_t, t) -> prediction (eps, x0 or v), for x_t: (B, D), t: (B,) long."""

    def __init__(self, cfg: MLPConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MLPConfig()
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden))
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(_Block(cfg.hidden) for _ in range(cfg.depth))
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (B, D) float, t: (B,) long timesteps -> (B, D)."""
        if x.dim() != 2 or x.shape[1] != self.cfg.dim:
            raise ValueError(f"x must be (B, {self.cfg.dim}), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        temb = self.time_mlp(timestep_embedding(t, self.cfg.time_dim).to(x.dtype))   # (B, hidden)
        h = self.inp(x)                                                            # (B, hidden)
        for blk in self.blocks:
            h = blk(h, temb)
        return self.out(h)                                                         # (B, D)
