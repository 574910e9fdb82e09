"""Mini-CLIP: a text encoder and an image encoder trained to agree, contrastively.

Follows CLIP (Radford et al. 2021, arXiv:2103.00020): both towers map into one joint space,
embeddings are L2-normalised, their cosine similarities times a *learned* temperature
exp(logit_scale) are the logits, and the loss is the symmetric InfoNCE (van den Oord et al.
2018, arXiv:1807.03748) over the batch: image i must pick caption i among all B captions and
caption i must pick image i.

Shapes World has only 36 attribute combinations, so a batch of 128 holds many pairs that are
the same thing said differently ("a big red circle" / "the large crimson disc"). Plain InfoNCE
calls them negatives, a target no encoder can meet. `clip_loss` therefore accepts a `positives`
matrix: the target of row i is spread uniformly over every item that matches it (multi-positive
InfoNCE, as in supervised contrastive learning, Khosla et al. 2020, arXiv:2004.11362). With
`positives=None` it is exactly CLIP's loss.

Image captions never say how things move, so a text encoder trained on them alone leaves the
motion words ("left", "fast") untrained: "moving left" and "moving right" encode alike. An
optional clip tower closes that gap the way video-text retrieval models do (VideoCLIP, Xu et al.
2021, arXiv:2109.14084): the small pool of captioned clips is a second contrastive task for the
*same* text tower. A clip's embedding is the sum of two parts: appearance, the image tower's
features averaged over frames (CLIP4Clip's mean pooling, Luo et al. 2021, arXiv:2104.08860),
and motion, a small 3-D CNN (`VideoEncoder`). Sharing the image tower matters: with a separate
clip CNN, which reads shapes poorly at this size, the text tower learned to encode video
captions mostly by colour and motion and lost the shape words for them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from minivid.text.encoder import TextEncoder, TextEncoderConfig


@dataclass
class ImageEncoderConfig:
    channels: tuple[int, ...] = (32, 64, 64)  # one conv stage per entry; every stage after the first halves H, W
    dim: int = 64                             # output width
    groups: int = 8


@dataclass
class VideoEncoderConfig:
    channels: tuple[int, ...] = (16, 32, 32)  # one 3x3x3 conv stage per entry; every stage after the first halves H, W
    dim: int = 64                             # output width
    groups: int = 8


@dataclass
class CLIPConfig:
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    video: VideoEncoderConfig | None = None   # None: image-text pairs only
    embed_dim: int = 64                       # joint space
    init_temperature: float = 0.07            # CLIP's init: logit_scale = log(1 / 0.07)
    max_logit_scale: float = 100.0            # CLIP clips exp(logit_scale) at 100


def conv_stages(conv, channels, groups: int, down) -> nn.Sequential:
    """RGB in, one stage per entry of `channels`: conv(stride) - GroupNorm - SiLU - conv - SiLU.

    The first stage keeps the resolution; every later one strides by `down` (2, or (1, 2, 2) for clips).
    """
    layers, cin = [], 3
    for i, c in enumerate(channels):
        layers += [conv(cin, c, 3, stride=1 if i == 0 else down, padding=1), nn.GroupNorm(min(groups, c), c),
                   nn.SiLU(), conv(c, c, 3, padding=1), nn.SiLU()]
        cin = c
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """A small CNN: (B, 3, H, W) in [-1, 1] -> (B, dim). Conv stages, global mean pool, linear.

    Mean pooling makes it blind to where the object is, which is what a caption ignores too;
    colour, shape and size survive the pooling as "how much of which local pattern".
    """

    def __init__(self, cfg: ImageEncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ImageEncoderConfig()
        self.convs = conv_stages(nn.Conv2d, cfg.channels, cfg.groups, down=2)
        self.head = nn.Linear(cfg.channels[-1], cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B, dim)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be images (B, 3, H, W), got {tuple(x.shape)}")
        return self.head(self.convs(x).mean((2, 3)))


class VideoEncoder(nn.Module):
    """The motion part of a clip's embedding, a small 3-D CNN: (B, 3, T, H, W) in [-1, 1] -> (B, dim).

    3x3x3 conv stages, global mean pool, linear. (Appearance comes from the image tower, see MiniCLIP.)

    Each 3x3x3 kernel sees three frames, so it can respond to an edge *moving one way*
    (a motion-energy filter); mean pooling over time and space keeps which way things move and
    how fast while dropping where, which is what a caption says.
    """

    def __init__(self, cfg: VideoEncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VideoEncoderConfig()
        self.convs = conv_stages(nn.Conv3d, cfg.channels, cfg.groups, down=(1, 2, 2))   # time keeps its length
        self.head = nn.Linear(cfg.channels[-1], cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, T, H, W) -> (B, dim)."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"x must be clips (B, 3, T, H, W), got {tuple(x.shape)}")
        return self.head(self.convs(x).mean((2, 3, 4)))


class MiniCLIP(nn.Module):
    """Text tower + image tower (+ optional motion tower for clips) + projections into a joint space + a temperature."""

    def __init__(self, cfg: CLIPConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CLIPConfig()
        self.text = TextEncoder(cfg.text)
        self.image = ImageEncoder(cfg.image)
        self.text_proj = nn.Linear(cfg.text.dim, cfg.embed_dim, bias=False)
        self.image_proj = nn.Linear(cfg.image.dim, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        if cfg.video is not None:
            self.video = VideoEncoder(cfg.video)
            self.video_proj = nn.Linear(cfg.video.dim, cfg.embed_dim, bias=False)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids, mask: (B, L) -> unnormalised joint-space text embeddings (B, E)."""
        return self.text_proj(self.text(ids, mask)[1])

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> unnormalised joint-space image embeddings (B, E)."""
        return self.image_proj(self.image(x))

    def encode_video(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, T, H, W) -> unnormalised joint-space clip embeddings (B, E).

        appearance (the image tower on every frame, averaged over time) + motion (the 3-D CNN).
        """
        if self.cfg.video is None:
            raise ValueError("this MiniCLIP has no video tower (build it with CLIPConfig(video=VideoEncoderConfig()))")
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"x must be clips (B, 3, T, H, W), got {tuple(x.shape)}")
        B, _, T, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * T, 3, H, W)
        appearance = self.image(frames).view(B, T, -1).mean(1)                          # (B, image dim)
        return self.image_proj(appearance) + self.video_proj(self.video(x))

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clipped at max_logit_scale (a scalar tensor)."""
        return self.logit_scale.clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def forward(self, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None):
        """-> (image embeddings (B, E), text embeddings (B, E), scale ())."""
        return self.encode_image(x), self.encode_text(ids, mask), self.scale()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor | float,
              positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of B pairs.

    image_emb, text_emb: (B, E), unnormalised (normalised here); scale: the inverse temperature
    exp(logit_scale), a scalar; positives: optional (B, B) bool, positives[i, j] = "image i and
    caption j describe the same thing" (must be True on the diagonal; default: the identity).

    logits = scale * cos(image_i, text_j); loss = (CE over rows + CE over columns) / 2, where the
    target of a row is uniform over its positives. Returns a scalar.
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must both be (B, E), got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    B = image_emb.shape[0]
    if positives is None:
        positives = torch.eye(B, dtype=torch.bool, device=image_emb.device)
    if positives.shape != (B, B) or positives.dtype != torch.bool:
        raise ValueError(f"positives must be a ({B}, {B}) bool matrix, got {tuple(positives.shape)} {positives.dtype}")
    if not bool(positives.diagonal().all()):
        raise ValueError("positives must be True on the diagonal (each pair is its own positive)")
    target_i2t = positives.to(image_emb.dtype) / positives.sum(1, keepdim=True)      # (B, B), rows sum to 1
    target_t2i = positives.T.to(image_emb.dtype) / positives.sum(0)[:, None]
    ### BEGIN SOLUTION  # exercise 2.1: the symmetric contrastive (InfoNCE) loss
    img = F.normalize(image_emb, dim=-1)
    txt = F.normalize(text_emb, dim=-1)
    logits = scale * img @ txt.T                                                       # (B, B)
    loss_i2t = -(target_i2t * logits.log_softmax(dim=1)).sum(1).mean()
    loss_t2i = -(target_t2i * logits.T.log_softmax(dim=1)).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2
    ### END SOLUTION


def attribute_match(labels_a: dict, labels_b: dict | None = None, keys=("color", "shape", "size")) -> torch.Tensor:
    """(Na, Nb) bool: item i of a has the same attributes `keys` as item j of b (b defaults to a).

    labels: {attribute: (N,) long} as produced by minivid.data.
    """
    labels_b = labels_a if labels_b is None else labels_b
    out = None
    for k in keys:
        eq = torch.as_tensor(labels_a[k])[:, None] == torch.as_tensor(labels_b[k])[None, :]
        out = eq if out is None else out & eq
    return out


@torch.no_grad()
def similarity(clip: MiniCLIP, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every image (B, 3, H, W) or clip (B, 3, T, H, W) with every caption (N, L) -> (B, N)."""
    vis = F.normalize(clip.encode_video(x) if x.dim() == 5 else clip.encode_image(x), dim=-1)
    txt = F.normalize(clip.encode_text(ids, mask), dim=-1)
    return vis @ txt.T


def retrieval_accuracy(sim: torch.Tensor, match: torch.Tensor) -> dict:
    """Top-1 retrieval from a (B, N) image-caption similarity matrix.

    match: (B, N) bool, which captions count as correct for each image. i2t: fraction of images
    whose best caption is correct; t2i: fraction of captions whose best image is correct.
    """
    if sim.shape != match.shape:
        raise ValueError(f"sim and match must have the same shape, got {tuple(sim.shape)} and {tuple(match.shape)}")
    rows, cols = torch.arange(sim.shape[0]), torch.arange(sim.shape[1])
    i2t = match[rows, sim.argmax(1)].float().mean().item()
    t2i = match[sim.argmax(0), cols].float().mean().item()
    return {"i2t": i2t, "t2i": t2i}


__all__ = [
    "ImageEncoderConfig", "VideoEncoderConfig", "CLIPConfig", "ImageEncoder", "VideoEncoder", "MiniCLIP",
    "clip_loss", "attribute_match", "similarity", "retrieval_accuracy",
]
