"""Chapter 06's direction ablation, one training seed (the headline figures at three seeds are `python -m minivid
bench ch06`).

`python -m minivid bench ch06_ablations --preset full --seed 1 --out chapters/results/ch06_ablations.json`: the
temporal layers trained with each ingredient of the recipe's motion fix on its own, with chapter 03's pair (motion
channels and noisier timesteps) and with all three, at seed 1 - the seed whose frozen chapter-02 text encoder puts
"up" nearest "right" and "down" nearest "left", where the first recipe moved half its "up" clips right. Every arm
shares the seed's autoencoder, latent image model and decoder; each is judged on the 256 held-out prompts of the
main bench (DDIM-20, the preset's guidance, fine-tuned decoder), with the share of each asked direction moved that
way (chance 0.25).

Arms whose temporal layers are cached are read from the cache (`ch06.checkpoint_path`; some were trained by hand
with one thread, which changes their training time, not what they learnt); the others train here.
"""
from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import torch

from minivid.bench import judged
from minivid.bench.ch03 import direction_confusion, heldout_prompts
from minivid.eval import Judge
from minivid.pipelines import ch06

# name -> VideoRecipe overrides; {} is the recipe itself
ARMS = {
    "first recipe: temporal attention also at full size": dict(alignment={"attn_levels": (0,)}, t_shift=1.0),
    "+ noisier timesteps (t_shift 2)": dict(alignment={"attn_levels": (0,)}, t_shift=2.0),
    "+ motion channels": dict(alignment={"attn_levels": (0,), "motion_channels": 2}, t_shift=1.0),
    "+ cross-attention to the text tokens": dict(alignment={"attn_levels": (0,), "text_cross_attn": True},
                                                 t_shift=1.0),
    "+ motion channels + t_shift 2": dict(alignment={"attn_levels": (0,), "motion_channels": 2}, t_shift=2.0),
    "the recipe: motion channels + cross-attention + t_shift 2": {},
}


FIX = ("attn_levels", "motion_channels", "text_cross_attn")     # the alignment options the arms set


def arm_preset(p: ch06.Ch06Preset, overrides: dict) -> ch06.Ch06Preset:
    """The preset with its temporal layers' recipe changed by an arm's overrides (the alignment options in FIX are
    the arm's; the preset's others, e.g. the smoke preset's head size, are kept)."""
    if not overrides:
        return p
    keep = {k: v for k, v in p.video.alignment.items() if k not in FIX}
    video = dataclasses.replace(p.video, **{**overrides, "alignment": {**keep, **overrides["alignment"]}})
    return dataclasses.replace(p, video=video)


def per_direction(judge: Judge, x: torch.Tensor, labels: dict) -> dict:
    """{"<direction>_acc": share of the clips asked to move that way that were judged to} for each direction asked
    (the diagonal of chapter 03's `direction_confusion`, over its rows)."""
    rows = direction_confusion(judge.predict(x)["direction"].cpu(), torch.as_tensor(labels["direction"]).long().cpu())
    out = {}
    for r in rows:
        asked = sum(v for k, v in r.items() if k.startswith("judged "))
        if asked:
            out[f"{r['asked']}_acc"] = r[f"judged {r['asked']}"] / asked
    return out


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch06.get_preset(preset)
    judge = Judge()
    t_start = time.perf_counter()
    prompts = heldout_prompts(p.eval_samples, SimpleNamespace(size=p.vae.size, frames=p.video.frames))
    rows, figures = [], {}
    for i, (name, overrides) in enumerate(ARMS.items()):
        q = arm_preset(p, overrides)
        ch06.train_video(q, seed)                                  # cached, or trained here (progress bar)
        x = ch06.generate(prompts["captions"], preset=q, seed=seed, model_seed=seed, steps=p.eval_steps,
                          progress=False)
        row = {"temporal layers": name, **judged(judge, x, prompts["labels"]),
               **per_direction(judge, x, prompts["labels"])}
        rows.append(row)
        figures.update({f"arm{i}_{k}": v for k, v in row.items() if k != "temporal layers"})
    figures["bench_wall_minutes"] = (time.perf_counter() - t_start) / 60
    return {"figures": figures, "tables": {"direction_ablation": rows}}


__all__ = ["ARMS", "FIX", "arm_preset", "per_direction", "run"]
