"""Chapter 02's mini-CLIP: its recipe, its training batches, its loss and its retrieval accuracy (`clip_retrieval`).

The contrastive half of chapter 02, kept apart from the text-conditioned U-Net (`minivid.pipelines.ch02`,
which trains, caches and loads both and re-exports everything here). Two pools feed it, rendered once and
cached: plentiful image-caption pairs (`training_pairs`) and the scarce captioned clips that chapter 03
trains on too (`training_clips`). The clips teach the text tower the motion words (see `minivid.text.clip`);
half of each clip batch is the other half played backwards (`minivid.data.time_reversed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from minivid.data import from_uint8, image_text_pool, sample_batch, time_reversed, video_text_pool
from minivid.text import (
    CLIPConfig,
    ImageEncoderConfig,
    MiniCLIP,
    Tokenizer,
    VideoEncoderConfig,
    attribute_match,
    clip_loss,
    retrieval_accuracy,
    similarity,
    text_encoder_config,
)
from minivid.utils import make_generator


@dataclass(frozen=True)
class ClipRecipe:
    text: str = "text-small"
    text_overrides: dict = field(default_factory=dict)
    image_channels: tuple[int, ...] = (32, 64, 64)
    embed_dim: int = 64
    max_len: int = 16
    multi_positive: bool = True      # same-attribute pairs in a batch are positives (see minivid.text.clip)
    # 1,200, not 800: the motion words are the last thing the encoder learns; at 800 steps one seed in six
    # (on one machine) had not yet told up from down (held-out direction retrieval 0.36; chapter 02, section 5)
    steps: int = 1200
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float | None = None
    pool: int = 20000                # training pairs rendered once (cached) and sampled from
    size: int = 16
    # The motion words: a second contrastive task on the scarce video-text pairs (chapter 03's pool).
    video_pool: int = 2000           # captioned clips (0 = image-text pairs only)
    video_batch: int = 32            # clips per step, next to batch_size images
    time_reversal: bool = True       # half of those clips are the other half played backwards (hard negatives)
    video_frames: int = 8
    video_channels: tuple[int, ...] = (16, 32, 32)
    video_weight: float = 1.0        # loss = image InfoNCE + video_weight * video InfoNCE


training_pairs = image_text_pool     # the pools live in minivid.data (chapter 03 trains on the same clips)
training_clips = video_text_pool


def pool_batches(data: dict, tok: Tokenizer, batch_size: int, clips: dict | None = None, clip_batch: int = 0,
                 reverse: bool = True):
    """batch_fn(step, g) -> {"x", "ids", "mask", "labels"} (+ the same under "video" when clips are given).

    With `reverse`, the clips are clip_batch // 2 clips and the same clips played backwards (`time_reversed`).
    """
    def encoded(pool):
        ids, mask = tok.encode(pool["captions"])                                 # (pool, L)
        return pool["x"], ids, mask, pool["labels"]

    def take(idx, pools):
        parts = [(x[idx], ids[idx], mask[idx], {k: v[idx] for k, v in lab.items()}) for x, ids, mask, lab in pools]
        return {"x": from_uint8(torch.cat([p[0] for p in parts])), "ids": torch.cat([p[1] for p in parts]),
                "mask": torch.cat([p[2] for p in parts]),
                "labels": {k: torch.cat([p[3][k] for p in parts]) for k in parts[0][3]}}

    images = [encoded(data)]
    videos = None
    if clips is not None and clip_batch > 0:
        videos = [encoded(clips), encoded(time_reversed(clips))] if reverse else [encoded(clips)]

    def batch_fn(step, g):
        b = take(torch.randint(0, len(images[0][1]), (batch_size,), generator=g), images)
        if videos is not None:
            n = max(clip_batch // len(videos), 1)
            b["video"] = take(torch.randint(0, len(videos[0][1]), (n,), generator=g), videos)
        return b
    return batch_fn


def build_tokenizer(recipe: ClipRecipe) -> Tokenizer:
    return Tokenizer(max_len=recipe.max_len)


def build_clip(recipe: ClipRecipe, tok: Tokenizer) -> MiniCLIP:
    text = text_encoder_config(recipe.text, vocab_size=tok.vocab_size, max_len=tok.max_len, **recipe.text_overrides)
    image = ImageEncoderConfig(channels=tuple(recipe.image_channels), dim=text.dim)
    video = VideoEncoderConfig(channels=tuple(recipe.video_channels), dim=text.dim) if recipe.video_pool else None
    return MiniCLIP(CLIPConfig(text=text, image=image, video=video, embed_dim=recipe.embed_dim))


VIDEO_KEYS = ("color", "shape", "size", "direction", "speed")   # what a video caption pins down


def clip_loss_fn(multi_positive: bool = True, video_weight: float = 1.0):
    """loss_fn(model, batch, generator) for train(): symmetric InfoNCE on the images, plus the same on the clips
    when the batch has them (one text tower, one temperature); the temperature and both parts as metrics."""
    def loss_fn(net, batch, g):
        img, txt, scale = net(batch["x"], batch["ids"], batch["mask"])
        pos = attribute_match(batch["labels"]) if multi_positive else None
        loss = loss_img = clip_loss(img, txt, scale, pos)
        metrics = {"scale": scale.detach()}
        if "video" in batch:
            v = batch["video"]
            vpos = attribute_match(v["labels"], keys=VIDEO_KEYS) if multi_positive else None
            loss_vid = clip_loss(net.encode_video(v["x"]), net.encode_text(v["ids"], v["mask"]), scale, vpos)
            loss = loss_img + video_weight * loss_vid
            metrics.update(loss_image=loss_img.detach(), loss_video=loss_vid.detach())
        return loss, metrics
    return loss_fn


@torch.no_grad()
def clip_retrieval(clip, tok, split: str = "val", n: int = 256, seed: int = 0,
                   size: int = 16, kind: str = "image", frames: int = 8) -> dict:
    """Top-1 retrieval on n fresh image-caption (kind="image") or clip-caption (kind="video_text") pairs of `split`.

    A retrieved caption (image) counts as correct when the attributes its caption states equal the
    query's (colour, shape, size; for clips also direction and speed): template captions have
    synonyms and a batch repeats attribute combinations, so the exact partner is not identifiable.
    Also reports the chance level of that rule, the exact-partner accuracy and, for clips,
    "direction": how often the retrieved caption names the right direction of motion.
    Returns {"i2t", "t2i", "i2t_exact", "t2i_exact", "chance", "sim": (n, n)}
    (+ "direction_i2t", "direction_t2i", "direction_chance" for clips).
    """
    b = sample_batch(n, kind=kind, split=split, size=size, frames=frames, generator=make_generator(seed))
    ids, mask = tok.encode(b["captions"])
    sim = similarity(clip, b["x"], ids, mask)
    video = kind != "image"
    match = attribute_match(b["labels"], keys=VIDEO_KEYS if video else ("color", "shape", "size"))
    out = retrieval_accuracy(sim, match)
    exact = retrieval_accuracy(sim, torch.eye(n, dtype=torch.bool))
    out.update(i2t_exact=exact["i2t"], t2i_exact=exact["t2i"], chance=match.float().mean().item(), sim=sim)
    if video:
        same_dir = attribute_match(b["labels"], keys=("direction",))
        d = retrieval_accuracy(sim, same_dir)
        out.update(direction_i2t=d["i2t"], direction_t2i=d["t2i"], direction_chance=same_dir.float().mean().item())
    return out


def heldout_direction(clip, tok, r: ClipRecipe, n: int = 256) -> float:
    """How often the caption a held-out clip retrieves names its direction of motion (`clip_retrieval`, top-1)."""
    return clip_retrieval(clip, tok, "heldout", n, size=r.size, kind="video_text", frames=r.video_frames)["direction_i2t"]


def direction_warning(acc: float | None, floor: float | None, seed: int, preset: str) -> str | None:
    """The one line said when a trained text encoder names the right direction for too few held-out clips, else None.

    Whether the contrastive training learns the motion words is decided late and can go either way: on one 2-core
    machine a seed learns them (0.99 of held-out clips), on another the same seed does not (0.36), and then no
    video model trained on that encoder follows "moving left" (chapter 03, section 6).
    """
    if acc is None or floor is None or acc >= floor:
        return None
    return (f"the chapter-02 text encoder ({preset} preset, seed {seed}) names the right direction of motion for only "
            f"{acc:.0%} of held-out clips (a healthy one: {floor:.0%} or more): video models trained on it will not "
            f"follow 'moving left/right/up/down' (chapter 03, section 6); train them with another --seed")


__all__ = ["ClipRecipe", "training_pairs", "training_clips", "pool_batches", "build_tokenizer", "build_clip",
           "VIDEO_KEYS", "clip_loss_fn", "clip_retrieval", "heldout_direction", "direction_warning"]
