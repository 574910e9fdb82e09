"""Chapter 05, the single-stage baseline: chapter 03's recipe trained to make the cascade's output (16 frames of
32x32) directly, on the clips the stages train on, given the cascade's whole training budget. The chapter measures
the cascade against it (`bench ch05_ablations`).

    model, schedule, cond, state = train_baseline("full")
"""
from __future__ import annotations

import torch

from minivid.data import image_text_pool, time_reversed
from minivid.pipelines import ch03
from minivid.pipelines.ch05 import checkpoint_path, get_preset, train_command
from minivid.pipelines.ch05_sr import clip_pool
from minivid.pipelines.common import load_or_train, pretrained, schedule_for


def baseline_data(recipe: ch03.VideoRecipe, cond) -> dict:
    """Chapter 03's training data at the cascade's output size: the half-speed clips the stages train on."""
    vid = clip_pool(recipe.size, recipe.frames, recipe.video_pool)
    rev = ch03.encode_captions(cond, time_reversed(vid)["captions"]) if recipe.time_reversal else None
    img = image_text_pool(recipe.size, recipe.image_pool)
    return {"video": {"x": vid["x"], "text": ch03.encode_captions(cond, vid["captions"]), "text_reversed": rev,
                      "direction": vid["labels"]["direction"], "speed": vid["labels"]["speed"]},
            "image": {"x": img["x"], "text": ch03.encode_captions(cond, img["captions"]) if recipe.joint else None}}


def train_baseline(preset="full", seed: int = 0, progress: bool = True, recipe: ch03.VideoRecipe | None = None):
    """The single-stage text-to-video model at the cascade's output size. Returns (model, schedule, cond, state)."""
    p = get_preset(preset)
    r = recipe or p.baseline
    cond = pretrained("ch02.conditioner", r.text_preset, seed, progress)
    schedule = schedule_for(r)
    data = baseline_data(r, cond)
    torch.manual_seed(seed)
    state = load_or_train(ch03.build_model(r, cond.dim), ch03.loss_fn_for(r, schedule, cond.null_features()),
                          ch03.make_batch_fn(r, data), r, checkpoint_path("baseline", p, seed, r), seed=seed,
                          progress=progress, ckpt_every=250, command=train_command(p),
                          desc=f"ch05 single-stage baseline {r.frames}x{r.size}x{r.size} ({p.name})")
    return state.sampling_model.eval(), schedule, cond, state


__all__ = ["baseline_data", "train_baseline"]
