"""A 3-D causal video VAE in the style of CogVideoX (Yang et al. 2024, arXiv:2408.06072).

Where Video LDM (chapter 06) encodes a clip frame by frame with an image VAE, CogVideoX (after
MAGVIT-v2, Yu et al. 2023, arXiv:2310.05737) compresses time too, with convolutions that never
look into the future (`minivid.ops.CausalConv3d`: time padded on the front only):

* 4x in time and 4x in space: a clip of 1 + 4k frames -> 1 + k latent frames, H/4 x W/4
  (17 frames of 32x32 -> 5 latent frames of 8x8). The first frame is encoded on its own, as an
  image: it only ever sees copies of itself. Temporal down/upsampling keeps it apart
  (`CausalTemporalDownsample` / `CausalTemporalUpsample`: 1 + 2k <-> 1 + k).
* Because everything is causal, a long clip can be encoded (and decoded) chunk by chunk: each
  causal conv hands the last frames it saw (its *conv cache*) to the same conv in the next
  chunk, and only the first chunk keeps a lone first frame in the temporal resamplers. Chunked ==
  whole, with memory bounded by the chunk, not the clip. Frames map to chunks as 1 + 4a, then 4b
  each (`chunk_spans`).
* Normalisation is GroupNorm *per frame* (frames folded into the batch). A GroupNorm over
  (C/g, T, H, W) would mix later frames into the statistics of earlier ones: not causal, and a
  chunk's output would depend on how the clip was cut.
* KL-regularised, with the same `DiagonalGaussian` posterior as the image VAE (minivid.models.vae).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from minivid.models.vae import DiagonalGaussian, check_autoencoder_config
from minivid.ops import CausalConv3d, CausalTemporalDownsample, CausalTemporalUpsample


# ----------------------------------------------------------------------------- frame bookkeeping
def frame_count_error(T: int, factor: int, name: str = "x") -> ValueError:
    """The ValueError for a clip of T frames that is not 1 + factor*k, naming the two nearest counts that are."""
    lo = T - (T - 1) % factor                       # T >= 1, so lo >= 1
    return ValueError(f"{name}: got {T} frames; a causal video needs 1 + {factor}k frames: use {lo} or {lo + factor}")


def latent_frames(T: int, factor: int = 4) -> int:
    """Latent frames of a T-frame clip under causal temporal compression by `factor`: 1 + factor*k -> 1 + k.

    Any other T raises a ValueError naming the two nearest valid counts ("got 16 frames; ... use 13 or 17").
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    ### BEGIN SOLUTION  # exercise 7.1: the 1 + 4k frame bookkeeping
    k, r = divmod(T - 1, factor)        # the first frame alone, then k groups of `factor`
    if r:
        raise ValueError(f"got {T} frames; a causal video needs 1 + {factor}k frames: "
                         f"use {1 + factor * k} or {1 + factor * (k + 1)}")
    return 1 + k
    ### END SOLUTION


def video_frames(n: int, factor: int = 4) -> int:
    """Frames decoded from n latent frames: 1 + factor*(n - 1)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (latent frames) must be a positive int, got {n!r}")
    return 1 + factor * (n - 1)


def chunk_spans(T: int, chunk_frames: int, factor: int = 4) -> list[tuple[int, int]]:
    """How a T-frame clip is cut into chunks: [(start, stop), ...] covering 0..T in order.

    The first chunk holds 1 + (T-1) % chunk_frames frames (the lone first frame and the remainder,
    a 1 + factor*a count), every later chunk exactly chunk_frames (a multiple of `factor`), so each
    chunk maps to whole latent frames. factor=1 cuts n latent frames for decoding the same way.
    """
    if not isinstance(chunk_frames, int) or chunk_frames < 1 or chunk_frames % factor:
        raise ValueError(f"chunk_frames must be a positive multiple of {factor}, got {chunk_frames!r}")
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if (T - 1) % factor:
        raise frame_count_error(T, factor, "T")
    ### BEGIN SOLUTION  # exercise 7.3: which frames go in which chunk (1 + 4a first, then 4b each)
    first = 1 + (T - 1) % chunk_frames
    return [(0, first)] + [(a, a + chunk_frames) for a in range(first, T, chunk_frames)]
    ### END SOLUTION


@dataclass
class ChunkState:
    """What one chunk hands to the next: every causal conv's cache (by module key) and whether this is the first."""
    caches: dict = field(default_factory=dict)
    first_chunk: bool = True


# ----------------------------------------------------------------------------- config
@dataclass
class VideoVAEConfig:
    in_channels: int = 3
    channels: int = 16                          # width at full resolution
    channel_mult: tuple[int, ...] = (1, 2, 2)   # one entry per level; every level but the last halves H, W
    temporal_down: tuple[bool, ...] = (True, True)  # per downsampling stage: does it halve time too?
    num_res_blocks: int = 1                     # per level in the encoder (the decoder has one more)
    latent_channels: int = 4
    groups: int = 8
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_autoencoder_config(self)
        if len(self.temporal_down) != len(self.channel_mult) - 1:
            raise ValueError(f"temporal_down needs one bool per downsampling stage ({len(self.channel_mult) - 1}), "
                             f"got {self.temporal_down!r}")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def time_factor(self) -> int:
        return 2 ** sum(bool(d) for d in self.temporal_down)


VIDEO_VAE_PRESETS = {
    "video-vae-tiny": VideoVAEConfig(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1),
    "video-vae-small": VideoVAEConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1),
}


def video_vae_config(name: str, **overrides) -> VideoVAEConfig:
    """A named preset with field overrides: video_vae_config("video-vae-tiny", temporal_down=(True, False))."""
    if name not in VIDEO_VAE_PRESETS:
        raise ValueError(f"unknown video VAE preset {name!r}; choose one of {sorted(VIDEO_VAE_PRESETS)}")
    return replace(VIDEO_VAE_PRESETS[name], extra={"preset": name}, **overrides)


# ----------------------------------------------------------------------------- layers
def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D op to every frame: (B, C, T, H, W) -> (B, C', T, H', W')."""
    B, C, T, H, W = x.shape
    y = fn(x.transpose(1, 2).reshape(B * T, C, H, W))                 # (B*T, C', H', W')
    return y.reshape(B, T, *y.shape[1:]).transpose(1, 2)              # (B, C', T, H', W')


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame (never across time): (B, C, T, H, W) -> same."""

    def forward(self, x):
        return _per_frame(super().forward, x)


class CachedCausalConv(nn.Module):
    """A 3x3x3 `CausalConv3d` that, in chunked use, reads and writes its cache in a `ChunkState`."""

    def __init__(self, cin: int, cout: int, kernel_size=3):
        super().__init__()
        self.conv = CausalConv3d(cin, cout, kernel_size)
        self.key = f"conv{id(self):x}"   # the model renames it to its module path

    def forward(self, x: torch.Tensor, state: ChunkState | None = None) -> torch.Tensor:
        """x: (B, cin, T, H, W) -> (B, cout, T, H, W). state None: a whole clip (front replicate padding)."""
        if state is None:
            return self.conv(x)[0]
        ### BEGIN SOLUTION  # exercise 7.2: hand the conv cache from chunk to chunk
        cache = None if state.first_chunk else state.caches[self.key]   # the previous chunk's last frames
        y, state.caches[self.key] = self.conv(x, cache)                   # keep this chunk's for the next
        ### END SOLUTION
        return y


class CausalResBlock(nn.Module):
    """Per-frame GN-SiLU-causal conv, twice, plus a (pointwise if needed) skip: (B, Cin, T, H, W) -> (B, Cout, ...)."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = FrameGroupNorm(groups, cin), CachedCausalConv(cin, cout)
        self.norm2, self.conv2 = FrameGroupNorm(groups, cout), CachedCausalConv(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, state: ChunkState | None = None):
        h = self.conv1(F.silu(self.norm1(x)), state)
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)), state)


class Down(nn.Module):
    """Halve time (causally: 1 + 2k -> 1 + k; later chunks 2k -> k) if `time`, then H, W with a strided conv."""

    def __init__(self, ch: int, time: bool):
        super().__init__()
        self.time = CausalTemporalDownsample() if time else None
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, state: ChunkState | None = None):
        if self.time is not None:
            x = self.time(x, first_chunk=state is None or state.first_chunk)
        return _per_frame(self.conv, x)


class Up(nn.Module):
    """Double time (1 + k -> 1 + 2k; later chunks k -> 2k) if `time`, then H, W (nearest + conv)."""

    def __init__(self, ch: int, time: bool):
        super().__init__()
        self.time = CausalTemporalUpsample() if time else None
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, state: ChunkState | None = None):
        if self.time is not None:
            x = self.time(x, first_chunk=state is None or state.first_chunk)
        return _per_frame(lambda h: self.conv(F.interpolate(h, scale_factor=2, mode="nearest")), x)


class _Stack(nn.Module):
    """A list of layers, each called as layer(x, state) (norms and activations as layer(x))."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, state: ChunkState | None = None):
        for layer in self.layers:
            x = layer(x, state) if isinstance(layer, (CachedCausalConv, CausalResBlock, Down, Up)) else layer(x)
        return x


def _encoder(cfg: VideoVAEConfig) -> _Stack:
    ch, g = cfg.channels, cfg.groups
    layers, cin = [CachedCausalConv(cfg.in_channels, ch)], ch
    for lv, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            layers.append(CausalResBlock(cin, ch * mult, g))
            cin = ch * mult
        if lv < len(cfg.channel_mult) - 1:
            layers.append(Down(cin, cfg.temporal_down[lv]))
    layers += [CausalResBlock(cin, cin, g), FrameGroupNorm(g, cin), nn.SiLU(),
               CachedCausalConv(cin, 2 * cfg.latent_channels)]
    return _Stack(layers)


def _decoder(cfg: VideoVAEConfig) -> _Stack:
    ch, g = cfg.channels, cfg.groups
    cin = ch * cfg.channel_mult[-1]
    layers = [CachedCausalConv(cfg.latent_channels, cin), CausalResBlock(cin, cin, g)]
    for lv in reversed(range(len(cfg.channel_mult))):
        for _ in range(cfg.num_res_blocks + 1):
            layers.append(CausalResBlock(cin, ch * cfg.channel_mult[lv], g))
            cin = ch * cfg.channel_mult[lv]
        if lv > 0:
            layers.append(Up(cin, cfg.temporal_down[lv - 1]))
    layers += [FrameGroupNorm(g, cin), nn.SiLU(), CachedCausalConv(cin, cfg.in_channels)]
    return _Stack(layers)


# ----------------------------------------------------------------------------- the model
class CausalVideoVAE(nn.Module):
    """encode(x) -> DiagonalGaussian over (B, c, 1+k, H/4, W/4); decode(z) -> (B, 3, 1+4k, H, W).

    encode_chunked / decode_chunked give the same result chunk by chunk with bounded memory.
    Shapes are written for the presets' 4x4x4 compression (cfg.time_factor, cfg.spatial_factor).
    """

    def __init__(self, cfg: VideoVAEConfig | None = None):
        super().__init__()
        self.cfg = cfg or VideoVAEConfig()
        self.encoder, self.decoder = _encoder(self.cfg), _decoder(self.cfg)
        for name, m in self.named_modules():
            if isinstance(m, CachedCausalConv):
                m.key = name

    def _check(self, x: torch.Tensor, channels: int, name: str, pixels: bool):
        if x.dim() != 5 or x.shape[1] != channels:
            raise ValueError(f"{name} must be (B, {channels}, T, H, W), got {tuple(x.shape)}")
        if x.shape[2] < 1:
            raise ValueError(f"{name} must have at least one frame")
        f = self.cfg.spatial_factor
        if pixels and (x.shape[2] - 1) % self.cfg.time_factor:
            raise frame_count_error(x.shape[2], self.cfg.time_factor, name)
        if pixels and (x.shape[3] % f or x.shape[4] % f):
            raise ValueError(f"{name}'s H and W must be multiples of {f}, got {tuple(x.shape[3:])}")

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x: (B, in_ch, 1 + 4k, H, W) in [-1, 1] -> q(z|x) over (B, latent_ch, 1 + k, H/4, W/4)."""
        self._check(x, self.cfg.in_channels, "x", pixels=True)
        return DiagonalGaussian.from_params(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_ch, n, h, w) -> (B, in_ch, 1 + 4(n - 1), 4h, 4w)."""
        self._check(z, self.cfg.latent_channels, "z", pixels=False)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True):
        """x: (B, in_ch, 1 + 4k, H, W) -> (recon of x's shape, posterior); sample=False decodes the mean."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    def _chunked(self, stack: _Stack, x: torch.Tensor, spans) -> torch.Tensor:
        state, outs = ChunkState(), []
        for i, (a, b) in enumerate(spans):
            state.first_chunk = i == 0
            outs.append(stack(x[:, :, a:b], state))
        return torch.cat(outs, dim=2)

    @torch.no_grad()
    def encode_chunked(self, x: torch.Tensor, chunk_frames: int) -> DiagonalGaussian:
        """encode(x), chunk by chunk (first 1 + (T-1) % chunk_frames frames, then chunk_frames each).

        x: (B, in_ch, 1 + 4k, H, W); chunk_frames: a multiple of 4. No autograd (inference).
        """
        self._check(x, self.cfg.in_channels, "x", pixels=True)
        spans = chunk_spans(x.shape[2], chunk_frames, self.cfg.time_factor)
        return DiagonalGaussian.from_params(self._chunked(self.encoder, x, spans))

    @torch.no_grad()
    def decode_chunked(self, z: torch.Tensor, chunk_latents: int) -> torch.Tensor:
        """decode(z), chunk by chunk (the first 1 + (n-1) % chunk_latents latent frames, then chunk_latents each).

        z: (B, latent_ch, n, h, w) -> (B, in_ch, 1 + 4(n - 1), 4h, 4w). No autograd (inference);
        only the output clip is assembled whole.
        """
        self._check(z, self.cfg.latent_channels, "z", pixels=False)
        return self._chunked(self.decoder, z, chunk_spans(z.shape[2], chunk_latents, 1))


def largest_activation(model: nn.Module, fn, *args, **kwargs):
    """Run fn(*args, **kwargs); return (its result, the numel of the largest tensor any submodule of
    `model` output meanwhile). A simple, device-independent proxy for peak activation memory."""
    largest = [0]

    def hook(_module, _inputs, output):
        for t in (output if isinstance(output, (tuple, list)) else (output,)):
            if isinstance(t, torch.Tensor):
                largest[0] = max(largest[0], t.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        result = fn(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return result, largest[0]
