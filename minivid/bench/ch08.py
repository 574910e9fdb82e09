"""Chapter 08 benchmark: a diffusion transformer on spacetime patches of chapter 07's causal-VAE latents (DiT,
arXiv:2212.09748; Sora's spacetime patches; Latte's factorised attention, arXiv:2401.03048; flow matching,
arXiv:2209.03003 / arXiv:2210.02747).

`python -m minivid bench ch08 --preset full --seeds 3`:
* headline (every seed): the chapter's DiT (latent, full spacetime attention, flow matching) on 256 held-out prompts
  (held-out attribute combinations, chapter 03's draw) at 17 frames of 32x32, decoded by chapter 07's VAE and
  judged: colour, shape, size, motion direction, temporal consistency, validity, flicker; its training minutes;
  and (every seed) the same DiT trained with SD3's flow times (logit-normal centred at 0, not 1): direction, its
  sense, validity (`tloc0_*`);
* full vs factorised attention (one seed, the same parameters): train-step time, GFLOPs, peak memory of a step, and
  the judged clips of each, trained the same way;
* flow matching vs v-prediction DDIM (one seed, the same network and training steps): judged quality against
  sampling steps (Euler, Heun: two network calls a step, DDIM);
* Sora's flexibility (one seed): a DiT trained on 9- and 17-frame clips (latent prefixes) and the chapter's
  (17 only), each sampled at 13 frames (seen by neither) and 25 (longer than either), judged;
* pixels vs latents (one seed): the same DiT on RGB clips (4x4 pixel patches), cost and judged quality.
The ablations judge `ablation` prompts each (the first of the 256).
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace
from types import SimpleNamespace

import torch

from minivid.bench import JUDGED, judged, recorded_minutes, train_step
from minivid.bench.ch03 import heldout_prompts
from minivid.bench.ops import MiB, peak_extra_bytes
from minivid.bench.perf import measure
from minivid.eval import Judge
from minivid.pipelines import ch08
from minivid.pipelines.common import capture_training

HEADLINE = ("heldout_color_acc", "heldout_shape_acc", "heldout_size_acc", "heldout_motion_acc",
            "heldout_motion_axis_acc", "heldout_motion_sense_acc",   # direction = axis (horizontal/vertical) x sense
            "heldout_temporal_consistency", "heldout_validity", "heldout_flicker", "train_minutes",
            "tloc0_motion_acc", "tloc0_motion_sense_acc", "tloc0_validity")          # the same DiT at SD3's times
TLOC0 = ("motion_acc", "motion_sense_acc", "validity")
SETTINGS = {"smoke": dict(ablation=2, steps_grid=(1, 2), step_reps=1, lengths=(13, 17)),
            "full": dict(ablation=64, steps_grid=(5, 10, 20, 50), step_reps=6, lengths=(13, 25))}
KEYS = ("color_acc", "shape_acc", "motion_acc", "temporal_consistency", "validity", "flicker")


def variants(p: ch08.Ch08Preset) -> dict[str, ch08.DiTRecipe]:
    """The chapter's DiT and its one-change variants, by name."""
    r = p.dit
    return {"main": r,
            "factorized": replace(r, overrides={**r.overrides, "attention": "factorized"}),
            "v": replace(r, objective="v"),
            "lengths": replace(r, frames=tuple(sorted({(min(r.frames) + 1) // 2 // 4 * 4 + 1, *r.frames}))),
            "pixel": replace(r, space="pixel", overrides={**r.overrides, "patch": (1, 4, 4)}, steps=p.pixel_steps)}


def prompts_at(n: int, frames: int, size: int = 32) -> dict:
    """n held-out prompts with their labels and real clips at `frames` frames (chapter 03's draw)."""
    return heldout_prompts(n, SimpleNamespace(size=size, frames=frames))


def _judged(judge, p, seed, prompts, keys=JUDGED, **kw) -> dict:
    x = ch08.generate(prompts["captions"], preset=p, seed=seed, model_seed=seed, progress=False, **kw)
    return judged(judge, x, prompts["labels"], keys)


def _main(p: ch08.Ch08Preset, seed: int, judge: Judge):
    ch08.load_dit(p, seed)                                           # trains it first if absent (progress bar)
    prompts = prompts_at(p.eval_samples, max(p.dit.frames), p.dit.size)
    gen = _judged(judge, p, seed, prompts, keys=JUDGED + ("motion_axis_acc", "motion_sense_acc"))
    figs = {f"heldout_{k}": v for k, v in gen.items()}
    figs["heldout_flicker_real"] = judged(judge, prompts["x"], prompts["labels"])["flicker"]
    minutes = recorded_minutes(ch08.checkpoint_path(p, seed))
    if minutes is not None:
        figs["train_minutes"] = minutes
    sd3 = replace(p.dit, t_loc=0.0)                                  # SD3's training times, the one change
    if p.dit.objective == "flow" and sd3 != p.dit:
        ch08.load_dit(p, seed, recipe=sd3)
        j = _judged(judge, p, seed, prompts, keys=TLOC0, recipe=sd3)
        figs.update({f"tloc0_{k}": v for k, v in j.items()})
    return figs, prompts


def headline(preset: str = "smoke", seed: int = 0) -> dict:
    """One training seed's DiT, judged: {"heldout_*", "train_minutes"}."""
    p = ch08.get_preset(preset)
    figs = _main(p, seed, Judge())[0]
    return {k: v for k, v in figs.items() if k in HEADLINE}


def _subset(prompts: dict, n: int) -> dict:
    return {"captions": prompts["captions"][:n], "labels": {k: v[:n] for k, v in prompts["labels"].items()},
            "x": prompts["x"][:n]}


def step_cost(p, seed: int, recipe, reps: int) -> dict:
    """A training step of `recipe` (nothing trains): parameters, GFLOPs, median seconds, peak MiB of one step."""
    with capture_training() as got:
        ch08.train_dit(p, seed, progress=False, recipe=recipe)
    setup = got[-1]
    row, _ = measure(setup, reps, profile_steps=1, top=1)
    model = copy.deepcopy(setup.model).train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    train_step(model, setup.batch_fn, setup.loss_fn, opt, 0)          # optimiser state allocated before measuring
    peak = peak_extra_bytes(lambda: train_step(model, setup.batch_fn, setup.loss_fn, opt, 1)) / MiB
    tokens = 1
    for n, k in zip(ch08.item_shape(recipe, max(recipe.frames))[1:], setup.model.cfg.patch):
        tokens *= n // k
    return {"params": row["params"], "tokens": tokens, "GFLOPs/step": row["GFLOPs/step"], "train step s": row["step s"],
            "step peak MiB": peak}


def _row(name: str, j: dict, **more) -> dict:
    return {name[0]: name[1], **more, **{k: j[k] for k in KEYS if k in j}}


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch08.get_preset(preset)
    cfg = SETTINGS[p.name]
    judge = Judge()
    t_start = time.perf_counter()
    figures, prompts = _main(p, seed, judge)
    sub = _subset(prompts, cfg["ablation"])
    var = variants(p)
    for name, r in var.items():
        if name != "main":
            ch08.load_dit(p, seed, recipe=r)                          # train every variant first (progress bars)
    tables = {}

    # full vs factorised attention, pixels vs latents: cost and judged quality on the same prompts
    rows = []
    for name, label in (("main", "latent, full spacetime attention (the chapter's)"),
                        ("factorized", "latent, factorised: space then time (Latte)"),
                        ("pixel", "pixels, full attention, 4x4 patches")):
        r = var[name]
        t0 = time.perf_counter()
        j = _judged(judge, p, seed, sub, recipe=r)
        sample_s = (time.perf_counter() - t0) / len(sub["captions"])
        cost = step_cost(p, seed, r, cfg["step_reps"])
        minutes = recorded_minutes(ch08.checkpoint_path(p, seed, r))
        rows.append(_row(("DiT", label), j, **cost, **{"train minutes": minutes, "sample s/clip": sample_s}))
        figures.update({f"{name}_{k}": v for k, v in j.items() if k in KEYS})
        figures.update({f"{name}_train_step_s": cost["train step s"], f"{name}_step_peak_mib": cost["step peak MiB"],
                        f"{name}_tokens": cost["tokens"], f"{name}_sample_s_per_clip": sample_s})
    tables["architectures"] = rows
    figures["factorized_over_full_step_time"] = figures["factorized_train_step_s"] / figures["main_train_step_s"]
    figures["factorized_over_full_peak_mem"] = figures["factorized_step_peak_mib"] / figures["main_step_peak_mib"]

    # flow matching vs v-prediction DDIM: quality against sampling steps
    rows = []
    for steps in cfg["steps_grid"]:
        for label, r, method, calls in (("flow matching, Euler", var["main"], "euler", steps),
                                        ("flow matching, Heun", var["main"], "heun", 2 * steps),
                                        ("v-prediction, DDIM", var["v"], None, steps)):
            j = _judged(judge, p, seed, sub, recipe=r, steps=steps, method=method)
            rows.append(_row(("sampler", label), j, steps=steps, **{"network calls": calls}))
    tables["samplers"] = rows
    for r in rows:
        tag = {"flow matching, Euler": "flow_euler", "flow matching, Heun": "flow_heun", "v-prediction, DDIM": "ddim"}
        figures[f"{tag[r['sampler']]}{r['steps']}_motion_acc"] = r["motion_acc"]
        figures[f"{tag[r['sampler']]}{r['steps']}_validity"] = r["validity"]

    # Sora's flexibility: lengths never trained on
    rows = []
    for T in cfg["lengths"]:
        at = _subset(prompts_at(p.eval_samples, T, p.dit.size), cfg["ablation"])
        for name, label in (("main", f"trained on {var['main'].frames} frames"),
                            ("lengths", f"trained on {var['lengths'].frames} frames")):
            j = _judged(judge, p, seed, at, recipe=var[name], frames=T)
            rows.append(_row(("model", label), j, **{"sampled frames": T}))
            figures[f"{name}_at{T}_motion_acc"], figures[f"{name}_at{T}_validity"] = j["motion_acc"], j["validity"]
    tables["lengths"] = rows
    figures["bench_wall_minutes"] = (time.perf_counter() - t_start) / 60
    return {"figures": figures, "tables": tables}


__all__ = ["HEADLINE", "TLOC0", "SETTINGS", "variants", "prompts_at", "headline", "step_cost", "run"]
