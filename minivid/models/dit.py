"""The diffusion transformer on spacetime patches: DiT (Peebles & Xie 2022, arXiv:2212.09748) for video.

A clip (B, C, T, H, W) is cut into pt x ph x pw spacetime patches (OpenAI's Sora report, 2024;
ViViT's tubelets, arXiv:2103.15691), one token each; transformer blocks process the
L = (T/pt)(H/ph)(W/pw) tokens; a final layer turns each token back into its patch.

* conditioning: c = MLP(timestep_embedding(t)) (+ a projection of a pooled text vector). Every
  block's LayerNorms are *modulated* by c (adaLN): a shift, a scale and a gate per branch, all
  predicted by a linear layer initialised to zero (adaLN-Zero, DiT section 3.2), so every block
  starts as the identity and the model starts by predicting exactly 0.
* text: cross-attention from every token to the text encoder's tokens, as in PixArt-alpha
  (arXiv:2310.00426); its output projection is zero-initialised and has no bias, so a caption
  whose mask is all False (no text: classifier-free guidance) gives exactly the output of no caption.
* positions: 3-D RoPE (RoFormer arXiv:2104.09864, over (t, h, w) as in CogVideoX arXiv:2408.06072)
  on q and k, computed from the actual token grid: any T, H, W divisible by the patch works, and
  only offsets between tokens matter. rope=False adds fixed 3-D sin-cos positions instead (DiT's
  2-D sin-cos extended to time). There is no learned position table.
* attention="full": every token attends to every other (Sora-style): L^2 scores per head.
  attention="factorized" (Latte, arXiv:2401.03048): attention within each frame (space), then
  across frames at each position (time). Latte gives the two passes their own weights; here they
  share one q, k, v, so the parameter count and the projection cost equal "full" exactly and only
  the attention *pattern* differs: out = A_time (A_space V), A_space mixing the tokens of a
  frame and A_time those of one position; L (nh*nw + nt) scores instead of L^2. A one-frame clip
  has A_time = I, so there factorized == full.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from minivid.ops import (
    AdaLNZero,
    Rope3D,
    attention,
    default_split_3d,
    gate,
    modulate,
    patchify,
    sincos_pos_embed_1d,
    timestep_embedding,
    unpatchify,
)

ATTENTION_KINDS = ("full", "factorized")


@dataclass
class DiTConfig:
    in_channels: int = 3                    # video channels: 3 for pixels, the latent channels for VAE latents
    out_channels: int | None = None         # None: same as in_channels
    patch: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw) spacetime patch
    dim: int = 128                          # token width D
    depth: int = 4                          # transformer blocks
    heads: int = 4
    mlp_ratio: float = 4.0
    context_dim: int | None = None          # text token width -> cross-attention
    pooled_dim: int | None = None           # pooled text vector -> added to the timestep conditioning
    attention: str = "full"                 # "full" | "factorized" (space then time, same parameters)
    rope: bool = True                       # 3-D RoPE on q, k (False: fixed 3-D sin-cos positions)
    rope_theta: float = 10000.0
    freq_dim: int = 256                     # width of the sinusoidal timestep features
    t_scale: float = 1000.0                 # float t in [0, 1] is embedded as t * t_scale (DiT's step range)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        p = (self.patch,) * 3 if isinstance(self.patch, int) else tuple(self.patch)
        if len(p) != 3 or not all(isinstance(i, int) and i >= 1 for i in p):
            raise ValueError(f"patch must be a positive int or (pt, ph, pw), got {self.patch!r}")
        self.patch = p
        optional = ("out_channels", "context_dim", "pooled_dim")
        for name in ("in_channels", "dim", "depth", "heads", "freq_dim") + optional:
            v = getattr(self, name)
            if (v is not None or name not in optional) and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int{' or None' * (name in optional)}, got {v!r}")
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        hd = self.dim // self.heads
        if self.rope and (hd % 2 or hd < 6):
            raise ValueError(f"rope needs an even head dim dim/heads >= 6 to split over (t, h, w), got {hd}")
        if not self.rope and (self.dim % 2 or self.dim < 6):
            raise ValueError(f"sin-cos positions (rope=False) need an even dim >= 6, got {self.dim}")

    @property
    def channels_out(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels


DIT_PRESETS = {
    "dit-tiny": DiTConfig(dim=64, depth=4, heads=4),
    "dit-small": DiTConfig(dim=128, depth=6, heads=4),
    "dit-base": DiTConfig(dim=192, depth=8, heads=6),
}


def dit_config(name: str, **overrides) -> DiTConfig:
    """A named preset with field overrides: dit_config("dit-tiny", in_channels=4, attention="factorized")."""
    if name not in DIT_PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; choose one of {sorted(DIT_PRESETS)}")
    return replace(DIT_PRESETS[name], extra={"preset": name}, **overrides)


def grid_positions(grid, offset=(0, 0, 0), device=None) -> torch.Tensor:
    """(L, 3) float64 (t, h, w) coordinates, in patches, of a row-major (nt, nh, nw) token grid, plus offset."""
    mesh = torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=device) for n in grid], indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], -1) + torch.tensor(offset, dtype=torch.float64, device=device)


def factorized_masks(grid, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(same_frame, same_position): (L, L) bool each; which key a query sees in the space and in the time pass."""
    pos = grid_positions(grid, device=device)                                              # (L, 3)
    return pos[:, None, 0] == pos[None, :, 0], (pos[:, None, 1:] == pos[None, :, 1:]).all(-1)


def factorized_attention(q, k, v, grid, impl: str = "auto") -> torch.Tensor:
    """Spatial attention within each frame, then temporal attention at each position: A_time (A_space v).

    q, k, v: (B, heads, L, d) with L = nt*nh*nw tokens in (t, h, w) order; grid (nt, nh, nw).
    Returns (B, heads, L, d). Both passes use the same q and k (see the module docstring).
    """
    B, Hh, L, d = q.shape
    nt, S = grid[0], grid[1] * grid[2]
    if nt * S != L:
        raise ValueError(f"grid {tuple(grid)} has {nt * S} tokens but q has L={L}")
    frames = lambda z: z.reshape(B, Hh * nt, S, z.shape[-1])  # noqa: E731  (B, heads*nt, S, d): one frame a row
    o = attention(frames(q), frames(k), frames(v), impl=impl).reshape(B, Hh, nt, S, d)
    if nt == 1:                                                  # one frame: A_time = I
        return o.reshape(B, Hh, L, d)
    tubes = lambda z: z.reshape(B, Hh, nt, S, d).transpose(2, 3).reshape(B, Hh * S, nt, d)  # noqa: E731
    o = attention(tubes(q), tubes(k), tubes(o), impl=impl)      # (B, heads*S, nt, d): one position a row
    return o.reshape(B, Hh, S, nt, d).transpose(2, 3).reshape(B, Hh, L, d)


def attention_probs(q, k, grid, kind: str = "full") -> torch.Tensor:
    """Dense (B, heads, L, L) who-attends-whom matrix: softmax(q k^T / sqrt(d)), or A_time @ A_space (factorized)."""
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5           # (B, heads, L, L)
    if kind == "full":
        return s.softmax(-1)
    same_frame, same_position = factorized_masks(grid, q.device)
    a_space = s.masked_fill(~same_frame, float("-inf")).softmax(-1)
    a_time = s.masked_fill(~same_position, float("-inf")).softmax(-1)
    return a_time @ a_space


class SpacetimeAttention(nn.Module):
    """Multi-head self-attention over a token grid, "full" or "factorized", with RoPE on q and k."""

    def __init__(self, dim: int, heads: int, kind: str = "full"):
        super().__init__()
        self.heads, self.kind, self.impl = heads, kind, "auto"
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.record: list | None = None                           # a list while attention maps are recorded

    def forward(self, x, grid, rope=None):
        """x: (B, L, D), L = nt*nh*nw tokens in (t, h, w) order; rope: callable on (B, heads, L, d) or None."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, L, d)
        if rope is not None:
            q, k = rope(q), rope(k)
        if self.record is not None:
            self.record.append(attention_probs(q, k, grid, self.kind))
        if self.kind == "full":
            o = attention(q, k, v, impl=self.impl)
        else:
            o = factorized_attention(q, k, v, grid, self.impl)
        return self.proj(o.transpose(1, 2).reshape(B, L, D))     # (B, L, D)


class CrossAttention(nn.Module):
    """Video tokens attend to text tokens; output projection bias-free (rows with no real token give 0)."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads, self.impl = heads, "auto"
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.record: list | None = None

    def forward(self, x, context, mask=None):
        """x: (B, L, D); context: (B, Lc, Dc); mask: (B, Lc) bool, True = real token -> (B, L, D)."""
        B, L, D = x.shape
        Lc, d = context.shape[1], D // self.heads
        q = self.q(x).reshape(B, L, self.heads, d).transpose(1, 2)                        # (B, h, L, d)
        k, v = self.kv(context).reshape(B, Lc, 2, self.heads, d).permute(2, 0, 3, 1, 4)   # (B, h, Lc, d)
        m = None if mask is None else mask[:, None, None, :]                               # (B, 1, 1, Lc)
        if self.record is not None:
            s = (q @ k.transpose(-2, -1)) * d ** -0.5
            p = s.softmax(-1) if m is None else s.masked_fill(~m, float("-inf")).softmax(-1).nan_to_num(0.0)
            self.record.append(p)                                 # a row with no real token: all zero
        o = attention(q, k, v, mask=m, impl=self.impl)
        return self.proj(o.transpose(1, 2).reshape(B, L, D))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: self-attention, (text cross-attention), MLP.

    x <- x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa))
    x <- x + cross(norm_cross(x), context)                  (only with text; not modulated, as PixArt-alpha)
    x <- x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp))
    with modulate(h, shift, scale) = h * (1 + scale) + shift, the six vectors predicted from c.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D, hidden = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = SpacetimeAttention(D, cfg.heads, cfg.attention)
        self.norm_cross = nn.LayerNorm(D) if cfg.context_dim else None
        self.cross = CrossAttention(D, cfg.context_dim, cfg.heads) if cfg.context_dim else None
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, D))
        self.adaLN = AdaLNZero(D, D, chunks=6)

    def forward(self, x, c, grid, rope=None, context=None, context_mask=None):
        """x: (B, L, D); c: (B, D); grid: (nt, nh, nw); context: (B, Lc, Dc); context_mask: (B, Lc) -> (B, L, D)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN(c)  # each (B, D)
        ### BEGIN SOLUTION  # exercise 8.2: adaLN-Zero modulation and gate
        x = x + gate(self.attn(modulate(self.norm1(x), shift_msa, scale_msa), grid, rope), gate_msa)
        if context is not None:
            x = x + self.cross(self.norm_cross(x), context, context_mask)
        x = x + gate(self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)), gate_mlp)
        ### END SOLUTION
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale) on a plain LayerNorm, then a zero-initialised linear to the patch values."""

    def __init__(self, dim: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN, self.linear = AdaLNZero(dim, dim, chunks=2), nn.Linear(dim, patch_dim)

    def forward(self, x, c):
        """x: (B, L, D); c: (B, D) -> (B, L, C_out*pt*ph*pw)."""
        shift, scale = self.adaLN(c)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """model(x_t, t, context=None, context_mask=None, pooled=None) -> (B, C_out, T, H, W)."""

    def __init__(self, cfg: DiTConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DiTConfig()
        D, vol = cfg.dim, cfg.patch[0] * cfg.patch[1] * cfg.patch[2]
        self.patch_embed = nn.Linear(cfg.in_channels * vol, D)   # = Conv3d(kernel = stride = patch)
        self.t_embed = nn.Sequential(nn.Linear(cfg.freq_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.pooled_proj = nn.Linear(cfg.pooled_dim, D) if cfg.pooled_dim else None
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final = FinalLayer(D, cfg.channels_out * vol)
        self.rope = Rope3D(D // cfg.heads, theta=cfg.rope_theta) if cfg.rope else None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init: xavier-uniform linears, zero biases, N(0, 0.02) timestep MLP; then adaLN-Zero's zeros."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embed[0].weight, std=0.02)
        nn.init.normal_(self.t_embed[2].weight, std=0.02)
        zeros = [self.final.adaLN.proj[-1], self.final.linear]    # the model predicts exactly 0 at first
        for blk in self.blocks:
            zeros.append(blk.adaLN.proj[-1])                      # shift = scale = gate = 0: the block is the identity
            if blk.cross is not None:
                zeros.append(blk.cross.proj)                      # the ungated text branch starts shut too
        for lin in zeros:
            nn.init.zeros_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def _conditioning(self, x, t, context, context_mask, pooled):
        cfg, B = self.cfg, x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(B) if t.dim() == 0 else t
        if t.shape != (B,):
            raise ValueError(f"t must be (B,) = ({B},), got {tuple(t.shape)}")
        if t.is_floating_point():
            if bool(((t < 0) | (t > 1)).any()):
                raise ValueError(f"float t must be flow-matching time in [0, 1] (pass DDPM steps as long), got "
                                 f"values in [{t.min().item():.4g}, {t.max().item():.4g}]")
            t = t * cfg.t_scale
        c = self.t_embed(timestep_embedding(t, cfg.freq_dim).to(x.dtype))                 # (B, D)
        if pooled is not None and self.pooled_proj is None:
            raise ValueError("pooled given but the config has pooled_dim=None")
        if pooled is not None and pooled.shape != (B, cfg.pooled_dim):
            raise ValueError(f"pooled must be (B, pooled_dim) = ({B}, {cfg.pooled_dim}), got {tuple(pooled.shape)}")
        c = c if pooled is None else c + self.pooled_proj(pooled)
        if context is None and context_mask is not None:
            raise ValueError("context_mask given without context")
        if context is not None and cfg.context_dim is None:
            raise ValueError("context given but the config has context_dim=None (no cross-attention)")
        if context is not None and (context.dim() != 3 or context.shape[0] != B or context.shape[2] != cfg.context_dim):
            raise ValueError(f"context must be (B, Lc, context_dim) = ({B}, Lc, {cfg.context_dim}), "
                             f"got {tuple(context.shape)}")
        if context_mask is not None and context_mask.shape != context.shape[:2]:
            raise ValueError(f"context_mask must be (B, Lc) = {tuple(context.shape[:2])}, got {tuple(context_mask.shape)}")
        return c, context, None if context_mask is None else context_mask.to(device=x.device, dtype=torch.bool)

    def _positions(self, grid, offset, h):
        """RoPE as a callable on (B, heads, L, d), or None after adding sin-cos positions to h (B, L, D)."""
        pos = grid_positions(grid, offset, h.device)                                        # (L, 3)
        if self.rope is None:
            split = default_split_3d(self.cfg.dim)
            pe = torch.cat([sincos_pos_embed_1d(s, pos[:, a]) for a, s in enumerate(split)], -1)  # (L, D)
            return h + pe.to(device=h.device, dtype=h.dtype), None
        cos, sin = self.rope.cos_sin_at(pos, dtype=h.dtype)
        return h, (lambda z: self.rope.apply(z, cos=cos, sin=sin))

    def forward(self, x, t, context=None, context_mask=None, pooled=None, *, pos_offset=(0, 0, 0)):
        """x: (B, C, T, H, W), T, H, W divisible by the patch; t: (B,) float in [0, 1] (flow-matching time,
        embedded as t * t_scale) or long (a DDPM step, used as is); context: (B, Lc, context_dim);
        context_mask: (B, Lc) bool, True = real token (all False = no text); pooled: (B, pooled_dim);
        pos_offset: added to every token's (t, h, w) position (with RoPE it changes nothing: only
        offsets count). Returns (B, C_out, T, H, W).
        """
        cfg = self.cfg
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be video (B, {cfg.in_channels}, T, H, W), got {tuple(x.shape)}")
        T, H, W = x.shape[2:]
        pt, ph, pw = cfg.patch
        if T % pt or H % ph or W % pw:
            raise ValueError(f"x's (T, H, W) = {(T, H, W)} must be divisible by the patch {cfg.patch}")
        grid = (T // pt, H // ph, W // pw)
        c, context, context_mask = self._conditioning(x, t, context, context_mask, pooled)
        h, rope = self._positions(grid, pos_offset, self.patch_embed(patchify(x, cfg.patch)))  # (B, L, D)
        for blk in self.blocks:
            h = blk(h, c, grid, rope, context, context_mask)
        return unpatchify(self.final(h, c), cfg.patch, x.shape, cfg.channels_out)         # (B, C_out, T, H, W)

    @torch.no_grad()
    def attention_maps(self, x, t, context=None, context_mask=None, pooled=None) -> dict:
        """Run the model once and return who attends to whom in every block.

        {"grid": (nt, nh, nw), "self": [(B, heads, L, L)] * depth, "cross": [(B, heads, L, Lc)] * depth
        (empty without context)}. Rows sum to 1; a factorized block gives A_time @ A_space. Tokens are
        in (t, h, w) order: reshape L to the grid to show a map over frames and pixels.
        """
        mods = [b.attn for b in self.blocks] + [b.cross for b in self.blocks if b.cross is not None]
        for m in mods:
            m.record = []
        try:
            self(x, t, context, context_mask, pooled)
            p = self.cfg.patch
            return {"grid": (x.shape[2] // p[0], x.shape[3] // p[1], x.shape[4] // p[2]),
                    "self": [b.attn.record[0] for b in self.blocks],
                    "cross": [b.cross.record[0] for b in self.blocks if b.cross is not None and b.cross.record]}
        finally:
            for m in mods:
                m.record = None


def model_flops(model: DiT, B: int = 1, T: int = 8, size: int = 16, context_len: int = 8) -> int:
    """FLOPs of one forward pass on a (B, C, T, size, size) clip, counted by torch's FlopCounterMode.

    Attention runs the naive (matmul) path here, since the counter does not see the CPU SDPA kernel.
    """
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    dev = next(model.parameters()).device
    x = torch.zeros(B, cfg.in_channels, T, size, size, device=dev)
    kw = {"context": torch.zeros(B, context_len, cfg.context_dim, device=dev)} if cfg.context_dim else {}
    mods = [m for m in model.modules() if isinstance(m, (SpacetimeAttention, CrossAttention))]
    for m in mods:
        m.impl = "naive"
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x, torch.zeros(B, device=dev), **kw)
    finally:
        for m in mods:
            m.impl = "auto"
    return int(fc.get_total_flops())


__all__ = ["ATTENTION_KINDS", "DiTConfig", "DIT_PRESETS", "dit_config", "DiT", "DiTBlock", "FinalLayer",
           "SpacetimeAttention", "CrossAttention", "factorized_attention", "factorized_masks", "attention_probs",
           "grid_positions", "model_flops"]
