"""A small transformer text encoder: token ids -> token features and a pooled vector.

The text tower of CLIP (Radford et al. 2021, arXiv:2103.00020) at toy scale: token and learned
position embeddings, pre-LayerNorm transformer blocks (Vaswani et al. 2017, arXiv:1706.03762),
a final LayerNorm. Two outputs, both used by the diffusion models of chapters 02-06:

* token features (B, L, D): what the denoiser's cross-attention reads (as in Stable Diffusion,
  Rombach et al. 2022, arXiv:2112.10752);
* a pooled vector (B, D): the feature at the `<eos>` position (CLIP's choice), which the
  contrastive loss aligns with the image embedding and which can be added to the timestep
  embedding (as Imagen does, arXiv:2205.11487).

Unlike CLIP the attention is bidirectional (no causal mask): the prompts are short and every word
may look at every other; padding is hidden from every query by the key mask.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from minivid.ops import attention


@dataclass
class TextEncoderConfig:
    vocab_size: int = 64          # Tokenizer().vocab_size
    max_len: int = 16             # positions (Tokenizer.max_len)
    dim: int = 64                 # D: token feature width
    depth: int = 2                # transformer blocks
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.vocab_size < 4 or self.max_len < 2:
            raise ValueError(f"need vocab_size >= 4 and max_len >= 2, got {self.vocab_size}, {self.max_len}")


TEXT_ENCODER_PRESETS = {
    "text-tiny": TextEncoderConfig(dim=32, depth=1, heads=2),
    "text-small": TextEncoderConfig(dim=64, depth=2, heads=4),
}


def text_encoder_config(name: str, **overrides) -> TextEncoderConfig:
    """A named preset with overrides: text_encoder_config("text-small", vocab_size=tok.vocab_size)."""
    if name not in TEXT_ENCODER_PRESETS:
        raise ValueError(f"unknown text encoder preset {name!r}; choose one of {sorted(TEXT_ENCODER_PRESETS)}")
    return replace(TEXT_ENCODER_PRESETS[name], **overrides)


class Block(nn.Module):
    """Pre-LN transformer block: x + MHA(LN(x)), then x + MLP(LN(x)); padding keys are masked."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True = real token -> (B, L, D)."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = attention(q, k, v, mask=mask[:, None, None, :])           # (B, heads, L, D/heads)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.mlp(self.ln2(x)))


class TextEncoder(nn.Module):
    """encoder(ids, mask) -> (tokens (B, L, D), pooled (B, D)); pooled is the <eos> feature."""

    def __init__(self, cfg: TextEncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TextEncoderConfig()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.max_len, cfg.dim))
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.01)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.ln = nn.LayerNorm(cfg.dim)

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ids: (B, L) long; mask: (B, L) bool, True on real tokens, a prefix of each row (default ids != 0).

        Returns tokens (B, L, D) (padding positions are zeroed) and pooled (B, D): the feature of the
        last real token, which `Tokenizer` makes `<eos>`.
        """
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"ids must be (B, L) long, got {tuple(ids.shape)} {ids.dtype}")
        B, L = ids.shape
        if L > self.cfg.max_len:
            raise ValueError(f"ids has L={L} positions but the encoder has max_len={self.cfg.max_len}")
        if int(ids.max()) >= self.cfg.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"ids must be in [0, {self.cfg.vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]")
        mask = (ids != 0) if mask is None else mask.bool()
        if mask.shape != ids.shape:
            raise ValueError(f"mask must have the shape of ids {tuple(ids.shape)}, got {tuple(mask.shape)}")
        n = mask.sum(1)                                                   # (B,) real tokens per row
        if bool((n == 0).any()):
            raise ValueError("every row needs at least one real token (the empty prompt encodes to <eos>)")
        x = self.tok(ids) + self.pos[:L]                                   # (B, L, D)
        for blk in self.blocks:
            x = blk(x, mask)
        x = self.ln(x) * mask[..., None]                                   # (B, L, D), zero on padding
        pooled = x[torch.arange(B, device=ids.device), n - 1]              # (B, D)
        return x, pooled


__all__ = ["TextEncoderConfig", "TEXT_ENCODER_PRESETS", "text_encoder_config", "TextEncoder", "Block"]
