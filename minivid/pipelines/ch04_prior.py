"""Chapter 04's conditioning question: what the frozen spatial layers read while the temporal layers learn from
unlabelled clips, and what they read at sampling time.

Training: each clip's first frame, embedded by the mini-CLIP image tower, is named by the nearest appearance caption
of the training combinations (`pseudo_captions`) - the pixels pick the caption through the shared image-text space.
Sampling: the prompt is said as an appearance caption (`prior_captions`), so the model hears captions of the form it
was trained on, as the paper's prior maps text into the space its decoder was trained on. With the motion cue, the
prompt's motion is read by the caption grammar (`prior_motion`), or by a prior learnt from a few captioned clips
(`fit_motion_prior`: the one step of this recipe that needs video-text pairs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from minivid.data import (COLORS, DIRECTIONS, SHAPES, SIZES, SPEEDS, WorldConfig, combos, estimate_velocity,
                          from_uint8, parse_caption, prompt_labels, velocity)
from minivid.data.world import all_combos
from minivid.pipelines.common import pretrained


def appearance_captions(split: str = "train") -> list[str]:
    """One caption per attribute combination of a split ("all": every combination): "a big red circle", ..."""
    triples = all_combos() if split == "all" else combos(split).tolist()
    return [f"a {SIZES[z]} {COLORS[c]} {SHAPES[s]}" for c, s, z in triples]


PRIORS = ("parse", "clip")


def prior_captions(prompts: list[str], recipe, how: str | None = "parse", progress: bool = True) -> list[str]:
    """The sampling-time prior: each prompt said as an appearance caption ("the large scarlet block is heading left
    swiftly" -> "a big red square"), the form of caption the unlabelled-video model was trained hearing.

    how="parse": the appearance words read by the world's caption grammar (`parse_caption`); a prompt that names
    fewer than all three, or has a word outside the vocabulary, falls back to "clip". how="clip": the nearest
    caption of *any* combination through the mini-CLIP text tower, a learned prior like the paper's (which maps text
    into the space its decoder was trained on: CLIP image embeddings). Direction words do not survive either: they
    never meant anything to this model. how=None: no prior, the prompts as written.
    """
    if how is None:
        return list(prompts)
    if how not in PRIORS:
        raise ValueError(f"the prior must be one of {PRIORS}, got {how!r}")
    out = [_parsed(p) if how == "parse" else None for p in prompts]
    rest = [p for p, o in zip(prompts, out) if o is None]
    if rest:
        tok, clip = pretrained("ch02.clip", recipe.image_preset, recipe.image_seed, progress)
        bank = appearance_captions("all")              # a caption is not data: held-out combinations can be named
        with torch.no_grad():
            unit = lambda e: e / e.norm(dim=-1, keepdim=True)          # noqa: E731
            sim = unit(clip.encode_text(*tok.encode(rest))) @ unit(clip.encode_text(*tok.encode(bank))).T
        found = iter(bank[int(k)] for k in sim.argmax(1))
        out = [o if o is not None else next(found) for o in out]
    return out


def prior_motion(prompts: list[str], frames: int, seed: int = 0) -> torch.Tensor:
    """The sampling-time prior of the motion cue (`VideoRecipe.motion_cue`): (B, 2) velocities in the units of
    `estimate_velocity` (the world's fast speed is 1), the direction and speed the prompt names, read by the
    caption grammar (words outside the world's vocabulary are skipped). A prompt that names no direction (or no
    speed) gets one of the world's (or its speeds) at random, from a generator seeded `seed`: the model then makes
    one of the motions unlabelled video has."""
    world = WorldConfig(frames=frames)
    g = torch.Generator().manual_seed(seed)
    named = [_motion_words(p) for p in prompts]
    direction = torch.tensor([d for d, _ in named])
    speed = torch.tensor([s for _, s in named])
    direction = torch.where(direction < 0, torch.randint(0, len(DIRECTIONS), direction.shape, generator=g), direction)
    speed = torch.where(speed < 0, torch.randint(0, len(SPEEDS), speed.shape, generator=g), speed)
    vx, vy = velocity(direction, speed, world)
    return (torch.stack([vx, vy], 1) / (world.speed_fast * world.speed_scale())).float()


@dataclass(frozen=True)
class MotionPrior:
    """A learnt text-to-motion prior: prompt -> the velocity of the clip it describes, (B, 2) in the units of
    `estimate_velocity`. A linear map of the frozen text encoder's caption vector (`text_vector`), fitted by
    `fit_motion_prior`; the text encoder never changes."""
    weight: torch.Tensor                     # (D + 1, 2) float64: the caption vector's D numbers, then a bias

    def __call__(self, cond, prompts: list[str]) -> torch.Tensor:
        return (_with_bias(text_vector(cond, prompts)) @ self.weight).clamp(-1, 1).float()


def text_vector(cond, prompts: list[str]) -> torch.Tensor:
    """The text encoder's (`TextConditioner`) vector of each prompt, (B, D) float64: its pooled output, or the mean
    of its tokens where it has none."""
    with torch.no_grad():
        f = cond(list(prompts))
    if "pooled" in f:
        return f["pooled"].double()
    m = f["context_mask"].double()[..., None]
    return (f["context"].double() * m).sum(1) / m.sum(1).clamp_min(1)


def _with_bias(v: torch.Tensor) -> torch.Tensor:
    return torch.cat([v, v.new_ones(len(v), 1)], 1)


def fit_motion_prior(cond, captions: list[str], clips: torch.Tensor, ridge: float = 1e-3) -> MotionPrior:
    """Fit the text-to-motion prior on captioned clips (N, 3, T, S, S) in [-1, 1]: ridge regression (closed form,
    float64) from each caption's `text_vector` to the velocity read off its clip's pixels (`estimate_velocity`), so
    the caption is the only thing a label could come from, as in the paper's prior (text -> what its decoder reads).
    """
    if len(captions) != len(clips) or not len(captions):
        raise ValueError(f"need one caption per clip and at least one: {len(captions)} captions, {len(clips)} clips")
    X = _with_bias(text_vector(cond, captions))                                     # (N, D + 1)
    Y = estimate_velocity(clips, WorldConfig(size=clips.shape[-1], frames=clips.shape[2])).double()   # (N, 2)
    A = X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype)
    return MotionPrior(torch.linalg.solve(A, X.T @ Y))


def learned_motion(prior: MotionPrior | None, cond, prompts: list[str], frames: int, seed: int = 0) -> torch.Tensor:
    """The motion cue from a learnt prior; with none (no captioned clip yet), a world motion at random for each
    prompt, as `prior_motion` gives a prompt that names none."""
    return prior_motion([""] * len(prompts), frames, seed) if prior is None else prior(cond, prompts)


def _motion_words(prompt: str) -> tuple[int, int]:
    d = prompt_labels(prompt)                          # a misspelt shape does not lose "moving up"
    return d["direction"], d["speed"]


def _parsed(prompt: str) -> str | None:
    try:
        d = parse_caption(prompt)
    except ValueError:                                 # a word outside the vocabulary, or two colours
        return None
    return None if min(d["color"], d["shape"], d["size"]) < 0 else \
        f"a {SIZES[d['size']]} {COLORS[d['color']]} {SHAPES[d['shape']]}"


def pseudo_captions(clips_uint8: torch.Tensor, recipe, progress: bool = True,
                    batch: int = 1024) -> list[str]:
    """Each clip's first frame, embedded by the mini-CLIP image tower, named by the nearest appearance caption.

    The pixels pick the caption through the shared image-text space; the clip's own caption is never read.
    """
    tok, clip = pretrained("ch02.clip", recipe.image_preset, recipe.image_seed, progress)   # trains if absent
    bank = appearance_captions()
    with torch.no_grad():
        text = clip.encode_text(*tok.encode(bank))                               # (K, E), normalised
        picks = [(clip.encode_image(from_uint8(clips_uint8[i:i + batch, :, 0])) @ text.T).argmax(1)
                 for i in range(0, len(clips_uint8), batch)]                     # first frames -> nearest caption
    return [bank[int(k)] for k in torch.cat(picks)]


__all__ = ["PRIORS", "appearance_captions", "pseudo_captions", "prior_captions", "prior_motion", "MotionPrior",
           "text_vector", "fit_motion_prior", "learned_motion"]
