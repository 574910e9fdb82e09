"""Video LDM's temporal alignment: a frozen latent image model and a frozen image decoder turned into video models.

Blattmann et al. 2023, "Align your Latents" (Video LDM), arXiv:2304.08818:

* Sec. 3.1: temporal layers l_phi (temporal attention, and residual blocks of convolutions across frames) are
  interleaved with the frozen spatial layers l_theta of a latent image diffusion model. After each one, the output
  of the spatial layer z and of the temporal layer z' are merged

      z <- alpha * z + (1 - alpha) * z',          alpha in [0, 1] learned, one per temporal layer,

  and only phi (the temporal layers and the alphas) is trained on video, the spatial weights theta stay frozen
  (the diffusion objective of Sec. 3.1, minimised over phi alone). `alpha_blend` is that merge (exercise 6.3).
* alpha = sigmoid(logit) of a learned logit: the paper asks for a learnable alpha in [0, 1]; the authors' released
  code (the `AlphaBlender` of Stability AI's generative-models, merge strategy "learned") keeps it there with a
  sigmoid, and so do we. Image items (`image`, (B,) bool: T independent frames) force alpha = 1, as its strategy
  "learned_with_images" does with `image_only_indicator`: they are exactly the image model, frame by frame.
* Sec. 3.1.1: the *decoder* of the image autoencoder gains temporal layers too (`TemporalDecoder`), fine-tuned on
  video with the encoder frozen, so decoded clips stop flickering and the latent models above still fit.

* The temporal layers may also read the prompt's tokens themselves (`AlignmentConfig.text_cross_attn`): each temporal
  attention is then followed by a cross-attention from every pixel of every frame to the text
  (`minivid.models.blocks.TextCrossAttention`), as the temporal transformer block of the authors' released code
  (`VideoTransformerBlock`: temporal self-attention, then cross-attention to the context). The frozen image model's
  own cross-attention and block embedding were trained on image captions, which never name a direction.

Every temporal layer here starts as the identity (its last conv or projection is zero): at initialisation the
video model *is* the image model applied frame by frame, exactly, whatever alpha is - that is why the merge is
written spatial + (1 - alpha) * (temporal - spatial), which is exact when temporal == spatial.

    unet = copy.deepcopy(latent_image_unet)          # frozen chapter-06 latent text-to-image U-Net
    video = align(unet, AlignmentConfig())           # in place; only alignment_parameters(video) require grad
    z0 = video(z_t, t, **text)                       # z_t: (B, c, T, h, w) latent clips
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minivid.models.blocks import (
    AttentionBlock,
    ResBlock,
    TextCrossAttention,
    fold_frames,
    unfold_frames,
    zero_module,
)
from minivid.models.pseudo3d import block_level
from minivid.models.temporal import TemporalAttention
from minivid.models.unet2d import ExtraChannels, UNet2D
from minivid.models.vae import AutoencoderKL, VAEResBlock


@dataclass
class AlignmentConfig:
    temporal_conv: bool = True          # a temporal residual block after every spatial ResBlock
    temporal_attn: bool = True          # a temporal attention after every spatial attention block
    attn_levels: tuple[int, ...] = ()   # also a temporal attention after the ResBlocks of these levels (0 = full size)
    kernel: int = 3                     # taps of the temporal convs
    spatial_kernel: int = 1             # their taps across space: 1 reads each pixel's frames alone; 3 makes them the
                                        # paper's "residual blocks based on 3D convolutions" (3x3x3), which see the
                                        # neighbours a moving object comes from
    head_dim: int = 32
    rel_pos_buckets: int = 16
    rel_pos_max_distance: int = 32
    text_in_time: bool = True           # temporal attention also reads the block embedding (time + pooled text)
    text_tokens_in_time: bool = False   # ... and the text tokens' mean through a projection of its own (zero init)
    text_cross_attn: bool = False       # every temporal attention followed by a cross-attention to the text tokens
                                        # (zero-init output), as the released code's VideoTransformerBlock
    alpha_init: float = 0.5             # every alpha at initialisation (logit = log(a / (1 - a)))
    motion_channels: int = 0            # also denoise this many flow channels (`UNet2D.add_extra_channels`; 2: x, y)

    def __post_init__(self):
        check_kernel_and_alpha(self.kernel, self.alpha_init)
        if not isinstance(self.spatial_kernel, int) or self.spatial_kernel < 1 or self.spatial_kernel % 2 == 0:
            raise ValueError(f"spatial_kernel must be an odd int >= 1, got {self.spatial_kernel!r}")
        if not isinstance(self.motion_channels, int) or self.motion_channels < 0:
            raise ValueError(f"motion_channels must be an int >= 0, got {self.motion_channels!r}")
        if any(not isinstance(lv, int) or lv < 0 for lv in self.attn_levels):
            raise ValueError(f"attn_levels must be resolution levels >= 0, got {self.attn_levels}")
        if not (self.temporal_conv or self.temporal_attn or self.attn_levels):
            raise ValueError("AlignmentConfig needs temporal_conv, temporal_attn or attn_levels (or nothing trains)")
        if self.head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {self.head_dim}")


def check_kernel_and_alpha(kernel: int | None, alpha_init: float) -> None:
    """Clear ValueErrors for a temporal conv's taps (odd, >= 1; None: no conv) and an initial alpha in (0, 1)."""
    if kernel is not None and (not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0):
        raise ValueError(f"kernel must be an odd int >= 1, got {kernel!r}")
    if not 0 < alpha_init < 1:
        raise ValueError(f"alpha_init must lie strictly between 0 and 1 (alpha = sigmoid(logit)), got {alpha_init}")


def alpha_blend(spatial: torch.Tensor, temporal: torch.Tensor, logit: torch.Tensor, image: torch.Tensor | None = None,
                num_frames: int = 1) -> torch.Tensor:
    """Video LDM's merge (Sec. 3.1): alpha * spatial + (1 - alpha) * temporal with alpha = sigmoid(logit); image
    items take alpha = 1, i.e. exactly `spatial`.

    spatial, temporal: (B*T, C, H, W), frames folded into the batch (item b owns rows b*T .. b*T + T - 1); logit: ()
    a learned scalar; image: (B,) bool or None; num_frames: T. Returns (B*T, C, H, W). Written as
    spatial + (1 - alpha) * (temporal - spatial), equal in exact arithmetic and exactly `spatial` wherever the
    temporal branch returns its input (an identity-initialised layer) or alpha = 1.
    """
    if spatial.shape != temporal.shape or spatial.dim() != 4:
        raise ValueError(f"spatial and temporal must be one shape (B*T, C, H, W), got {tuple(spatial.shape)} and "
                         f"{tuple(temporal.shape)}")
    if num_frames < 1 or spatial.shape[0] % num_frames:
        raise ValueError(f"num_frames={num_frames} does not divide the {spatial.shape[0]} folded frames")
    if image is not None and tuple(image.shape) != (spatial.shape[0] // num_frames,):
        raise ValueError(f"image must be (B,) = ({spatial.shape[0] // num_frames},) bool, got {tuple(image.shape)}")
    ### BEGIN SOLUTION  # exercise 6.3: the alpha blend with the image-item override
    alpha = torch.sigmoid(logit)
    out = spatial + (1 - alpha) * (temporal - spatial)
    if image is not None:
        keep = image.bool().repeat_interleave(num_frames)[:, None, None, None]    # (B*T, 1, 1, 1): item b's frames
        out = torch.where(keep, spatial, out)
    return out
    ### END SOLUTION


PADDINGS = ("zeros", "replicate")      # a temporal conv's padding beyond the clip's ends


class TemporalResBlock(nn.Module):
    """A residual block across frames: GN-SiLU-conv(k,s,s), GN (scale-shift by the embedding, if any)-SiLU,
    zero-initialised conv(k,s,s); plus the input. Starts as the identity. x: (B*T, C, H, W) -> the same.

    The convs are (k, s, s) Conv3d on (B, C, T, H, W): with spatial_kernel s = 1 every pixel's sequence of frames,
    nothing across space; with s = 3 a 3-D convolution, each output reading its neighbours in the frames around it.
    GroupNorm runs per frame. emb_dim: read the block embedding (N, E) like the U-Net's ResBlocks (None: the
    decoder, which has none). padding: what the convs see beyond the first and last frame, "zeros" or "replicate"
    (the end frames repeated: a clip's first frame then has a neighbour like itself, not a blank one).
    """

    def __init__(self, name: str, channels: int, groups: int, emb_dim: int | None = None, kernel: int = 3,
                 padding: str = "zeros", spatial_kernel: int = 1):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.name, self.channels = name, channels
        s = spatial_kernel
        conv = dict(kernel_size=(kernel, s, s), padding=(kernel // 2, s // 2, s // 2), padding_mode=padding)
        self.norm1, self.conv1 = nn.GroupNorm(groups, channels), nn.Conv3d(channels, channels, **conv)
        self.emb = nn.Linear(emb_dim, 2 * channels) if emb_dim else None
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = zero_module(nn.Conv3d(channels, channels, **conv))

    def forward(self, x: torch.Tensor, num_frames: int = 1, emb: torch.Tensor | None = None, **_) -> torch.Tensor:
        """x: (B*T, C, H, W); emb: (B*T, E) (read when built with emb_dim) -> (B*T, C, H, W)."""
        T = num_frames
        h = fold_frames(self.conv1(unfold_frames(F.silu(self.norm1(x)), T)))     # (B*T, C, H, W)
        h = self.norm2(h)
        if self.emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return x + fold_frames(self.conv2(unfold_frames(F.silu(h), T)))


class AlignmentLayer(nn.Module):
    """The temporal layers run after one frozen spatial block, merged with its output by a learned alpha.

    layer(h, num_frames, image=None, **kw): h (B*T, C, H, W) the spatial block's output -> (B*T, C, H, W), i.e.
    alpha_blend(h, temporal(h), logit, image). kw (emb, text) goes to the temporal layers. Image items skip them:
    the blend discards their temporal output (so the layers need no mask), and a batch of images only is returned
    as it is.
    """

    def __init__(self, name: str, layers: list[nn.Module], alpha_init: float = 0.5):
        super().__init__()
        check_kernel_and_alpha(None, alpha_init)
        self.name = name
        self.layers = nn.ModuleList(layers)
        self.logit = nn.Parameter(torch.tensor(math.log(alpha_init / (1 - alpha_init))))

    @property
    def alpha(self) -> float:
        return float(torch.sigmoid(self.logit.detach()))

    def forward(self, h: torch.Tensor, num_frames: int = 1, image: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """h: (B*T, C, H, W); image: (B,) bool or None; kw: emb (B*T, E), text -> (B*T, C, H, W)."""
        if image is not None and bool(image.all()):
            return h
        z = h
        for layer in self.layers:
            z = layer(z, num_frames=num_frames, **kw)
        return alpha_blend(h, z, self.logit, image, num_frames)


def align(unet: UNet2D, cfg: AlignmentConfig | None = None) -> UNet2D:
    """Interleave alpha-merged temporal layers with the spatial blocks of a 2-D U-Net, in place; return it.

    After every ResBlock: a `TemporalResBlock` (temporal_conv), then a `TemporalAttention` if its level is in
    attn_levels; after every AttentionBlock: a `TemporalAttention` (temporal_attn). Each group of temporal layers
    after one block is one `AlignmentLayer` with its own alpha. Every existing parameter is frozen; only
    `alignment_parameters` train. The model then takes latent clips (B, c, T, h, w) (and `image`, (B,) bool).
    With motion_channels m it reads and writes m more channels after the latents, (B, c + m, T, h, w): the clip's
    optical flow at the latents' resolution, through new trainable layers that start at zero; its input is
    alpha-merged after the stem, so at alpha = 1 (and for image items) the latents' output is still exactly the
    image model's, frame by frame, whatever the flow.
    """
    cfg = cfg or AlignmentConfig()
    if not isinstance(unet, UNet2D):
        raise TypeError(f"align grows a UNet2D (the latent image model), got {type(unet).__name__}")
    E, g = 4 * unet.cfg.channels, unet.cfg.groups
    for opt in ("text_tokens_in_time", "text_cross_attn"):
        if getattr(cfg, opt) and unet.cfg.context_dim is None:
            raise ValueError(f"{opt} needs an image model with text tokens (context_dim), got None")

    def attn(name, ch):
        return TemporalAttention(f"{name}_tattn", ch, cfg.head_dim, cfg.rel_pos_buckets, cfg.rel_pos_max_distance,
                                 emb_dim=E if cfg.text_in_time else None,
                                 context_dim=unet.cfg.context_dim if cfg.text_tokens_in_time else None)

    def layer(kind, name, ch):
        if kind == "conv":
            return [TemporalResBlock(f"{name}_tconv", ch, g, E, cfg.kernel, spatial_kernel=cfg.spatial_kernel)]
        cross = [TextCrossAttention(f"{name}_xattn", ch, cfg.head_dim, unet.cfg.context_dim)] \
            if cfg.text_cross_attn else []
        return [attn(name, ch), *cross]

    plan = {}
    for b in unet.blocks():
        if isinstance(b, ResBlock):
            layers = ["conv"] if cfg.temporal_conv else []
            plan[b.name] = layers + (["attn"] if block_level(b.name, unet) in cfg.attn_levels else [])
        elif isinstance(b, AttentionBlock) and cfg.temporal_attn:
            plan[b.name] = ["attn"]
    plan = {n: kinds for n, kinds in plan.items() if kinds}
    unet.add_temporal_layers(lambda n, ch: AlignmentLayer(
        f"{n}_align", [m for k in plan[n] for m in layer(k, n, ch)], cfg.alpha_init), list(plan))
    if cfg.motion_channels:                       # the flow's input, alpha-merged like every temporal layer
        io = unet.add_extra_channels(cfg.motion_channels)
        io.inp = AlignmentLayer("stem_motion_align", [io.inp], cfg.alpha_init)
    alignment_parameters(unet)
    return unet


def alignment_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Freeze everything but the alignment layers (temporal layers and alphas, and the motion channels' layers)
    and return those parameters."""
    model.requires_grad_(False)
    new = []
    for m in model.modules():
        if isinstance(m, (AlignmentLayer, ExtraChannels)):
            new += [p for p in m.parameters() if all(p is not q for q in new)]
    for p in new:
        p.requires_grad_(True)
    return new


def alphas(model: nn.Module) -> dict[str, float]:
    """{alignment layer name: its alpha} (1 = the spatial output only, 0 = the temporal output only)."""
    return {m.name: m.alpha for m in model.modules() if isinstance(m, AlignmentLayer)}


@torch.no_grad()
def set_alpha(model: nn.Module, value: float) -> nn.Module:
    """Set every alpha of `model` to `value` in [0, 1] (1: logit +inf, the image model exactly). Returns model."""
    if not 0 <= value <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {value}")
    for m in model.modules():
        if isinstance(m, AlignmentLayer):
            m.logit.fill_(torch.logit(torch.tensor(float(value), dtype=torch.float64)).item())
    return model


class TemporalDecoder(nn.Module):
    """The image autoencoder's decoder with a `TemporalResBlock` after every residual block, alpha-merged (Sec.
    3.1.1). decoder(z): z (B, c, T, h, w) latent clips -> (B, 3, T, h*f, w*f); (B, c, h, w) images decode per frame.

    vae: a trained `AutoencoderKL`; its decoder is used as it is (pass a copy to keep the original), frozen, and
    only `alignment_parameters` train. At initialisation it equals `vae.decode`, exactly. padding: the temporal
    convs' ("zeros" | "replicate", `TemporalResBlock`).
    """

    def __init__(self, vae: AutoencoderKL, kernel: int = 3, alpha_init: float = 0.5, padding: str = "zeros"):
        super().__init__()
        check_kernel_and_alpha(kernel, alpha_init)
        self.decoder, self.latent_channels = vae.decoder, vae.cfg.latent_channels
        self.temporal = nn.ModuleDict({
            str(i): AlignmentLayer(f"decoder{i}_align", [TemporalResBlock(f"decoder{i}_tconv", m.conv2.out_channels,
                                                                          m.norm2.num_groups, None, kernel, padding)],
                                   alpha_init)
            for i, m in enumerate(vae.decoder.body) if isinstance(m, VAEResBlock)})
        alignment_parameters(self)

    def forward(self, z: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """z: (B, c, T, h, w) -> (B, 3, T, H, W); or (B, c, h, w) -> (B, 3, H, W). image: (B,) bool (video only)."""
        if z.dim() not in (4, 5) or z.shape[1] != self.latent_channels:
            raise ValueError(f"z must be (B, {self.latent_channels}, T, h, w) or (B, {self.latent_channels}, h, w), "
                             f"got {tuple(z.shape)}")
        if z.dim() == 4:
            return self.decoder(z)
        T = z.shape[2]
        h = fold_frames(z)                                                   # (B*T, c, h, w)
        for i, layer in enumerate(self.decoder.body):
            h = layer(h)
            if str(i) in self.temporal:
                h = self.temporal[str(i)](h, num_frames=T, image=image)
        return unfold_frames(h, T)                                           # (B, 3, T, H, W)


__all__ = ["PADDINGS", "AlignmentConfig", "check_kernel_and_alpha", "alpha_blend", "TemporalResBlock", "AlignmentLayer",
           "align",
           "alignment_parameters", "alphas", "set_alpha", "TemporalDecoder"]
