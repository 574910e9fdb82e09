"""Chapter 04's motion ablation, one training seed (the headline figures at three seeds are `python -m minivid
bench ch04`).

`python -m minivid bench ch04_ablations --preset full --seed 0 --out chapters/results/ch04_ablations.json`: the
temporal layers trained on unlabelled clips with each change tried for the straightness of their motion - noisier
training timesteps (`t_shift`), motion channels (the clip's flow read off its pixels, denoised alongside), and on top
of both the temporal layers' own cross-attention to the text tokens (chapter 06's third change) or each frame's
mean token (`Pseudo3DConfig.global_context`, a path for one decision shared by the whole clip); a trainable way to
move a feature to the next pixel in the next frame (`Pseudo3DConfig.shift_levels`); and the motion cue (the clip's
velocity read off its pixels and read by the temporal layers, `VideoRecipe.motion_cue`). Every arm grows the
same frozen chapter-02 image model and is judged on the main bench's 256 held-out prompts through the preset's prior
(with the motion cue: the velocity the prompt names, `ch04.prior_motion`, and again a world motion at random),
DDIM-20 at the preset's guidance, with the judge's motion plausibility, its failures split into paths that drift
sideways (more sideways speed than path noise) and the rest, and the median magnitude of the flow the model
generates beside the pixels (motion-channel arms; real clips: 0.5 at the slow speed, 1 at the fast one).

Arms whose temporal layers are cached are read from the cache (`ch04.checkpoint_path`; by-hand runs with one thread
change their training time, not what they learnt); the others train here.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from minivid.bench import judged
from minivid.bench.ch04 import KEYS, heldout_prompts
from minivid.data import WorldConfig
from minivid.eval import Judge, fit_motion
from minivid.pipelines import ch04
from minivid.pipelines.common import guided_ddim

# name -> VideoRecipe overrides ({"pseudo3d": {...}} adds to the Pseudo3DConfig overrides) of the recipe before the
# motion cue (`Ch04Preset.ablation_base`); {} is that recipe, the last arm the headline recipe at 1,700 steps
ARMS = {
    "the recipe": {},
    "+ noisier timesteps (t_shift 2)": dict(t_shift=2.0),
    "+ t_shift 2 + motion channels": dict(t_shift=2.0, motion_channels=True),
    "+ t_shift 2 + motion channels + cross-attention to the text": dict(t_shift=2.0, motion_channels=True,
                                                                       pseudo3d={"text_cross_attn": True}),
    "+ t_shift 2 + motion channels + each frame's mean token": dict(t_shift=2.0, motion_channels=True,
                                                                   pseudo3d={"global_context": True}),
    "+ t_shift 2 + a depthwise space-time conv after each temporal conv": dict(t_shift=2.0,
                                                                             pseudo3d={"shift_levels": (0, 1, 2)}),
    "+ the motion cue (the clip's velocity, read off its pixels)": dict(motion_cue=True),
    "+ the motion cue + temporal attention along its path": dict(motion_cue=True, pseudo3d={"aligned_attn": True}),
}


def arm_recipe(r: ch04.VideoRecipe, overrides: dict) -> ch04.VideoRecipe:
    """The recipe with an arm's overrides (its Pseudo3DConfig options added to the recipe's own)."""
    more = dict(overrides)
    if "pseudo3d" in more:
        more["pseudo3d"] = {**r.pseudo3d, **more["pseudo3d"]}
    return dataclasses.replace(r, **more)


def motion_failures(x: torch.Tensor, judge: Judge) -> dict:
    """Of the clips whose path is not straight (motion confidence < 0.5): the share of all clips that drift sideways
    (sideways speed above the path's noise per frame, `fit_motion`'s two terms) and of the rest."""
    m = judge.predict(x)
    T = x.shape[2]
    f = fit_motion(m["centroid"][..., 0], m["centroid"][..., 1], WorldConfig(size=x.shape[-1], frames=T))
    across = torch.minimum(f["vx"].abs(), f["vy"].abs())
    noise = f["residual"] / max(T - 1, 1)
    bent = m["motion_conf"] < 0.5
    return {"bent_sideways": (bent & (across > noise)).float().mean().item(),
            "bent_other": (bent & (across <= noise)).float().mean().item()}


def generated_flow_magnitude(flow: torch.Tensor, rgb: torch.Tensor) -> float:
    """Median over clips of the largest component of the velocity v that best explains the flow as coverage x v
    (least squares over the clip; `estimate_flow`'s form and units: the fast speed is 1)."""
    cov = ((rgb + 1) / 2).amax(1).clamp(0, 1)                                          # (B, T, H, W)
    v = (flow * cov[:, None]).sum((2, 3, 4)) / cov.pow(2).sum((1, 2, 3)).clamp_min(1e-8)[:, None]   # (B, 2)
    return v.abs().amax(1).median().item()


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch04.get_preset(preset)
    judge = Judge()
    t_start = time.perf_counter()
    prompts = heldout_prompts(p.eval_samples, p.video)
    rows, figures = [], {}
    for i, (name, overrides) in enumerate(ARMS.items()):
        r = arm_recipe(p.ablation_base or p.video, overrides)
        model, schedule, cond, _ = ch04.train_video(p, seed, recipe=r)         # cached, or trained here
        said = ch04.prior_captions(prompts["captions"], r, p.prior, progress=False)

        def sample(motion=None):
            return guided_ddim(model, schedule, cond, said, (ch04.channels(model), r.frames, r.size, r.size),
                               guidance=p.guidance, objective=ch04.image_model(r).objective, steps=p.eval_steps,
                               seed=seed, progress=False, noise_alpha=r.noise_alpha,
                               extra=None if motion is None else ch04.cue_inputs(motion, r.frames))
        out = sample(ch04.prior_motion(prompts["captions"], r.frames, seed) if r.motion_cue else None)
        x = out[:, :ch04.RGB]
        row = {"temporal layers": name, **judged(judge, x, prompts["labels"], KEYS), **motion_failures(x, judge)}
        if out.shape[1] > ch04.RGB:
            row["flow_magnitude"] = generated_flow_magnitude(out[:, ch04.RGB:], x)
        if r.motion_cue:                              # the cue from no word: one of the world's motions at random
            rand = sample(ch04.prior_motion([""] * len(said), r.frames, seed))[:, :ch04.RGB]
            row["motion_plausible_random_cue"] = judged(judge, rand, prompts["labels"], KEYS)["motion_plausible"]
        rows.append(row)
        figures.update({f"arm{i}_{k}": v for k, v in row.items() if k != "temporal layers"})
    figures["bench_wall_minutes"] = (time.perf_counter() - t_start) / 60
    return {"figures": figures, "tables": {"motion_ablation": rows}}


__all__ = ["ARMS", "arm_recipe", "motion_failures", "generated_flow_magnitude", "run"]
