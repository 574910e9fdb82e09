"""Chapter 05 benchmark: the Imagen Video cascade on Shapes World (Ho et al. 2022, arXiv:2210.02303; noise-
conditioning augmentation: Ho et al. 2021, arXiv:2106.15282).

`python -m minivid bench ch05 --preset full --seeds 3`:
* headline (every seed): the cascade - the base (chapter 04's model), the TSR and the SSR, all of that training seed -
  on 256 held-out prompts; its final 16-frame 32x32 clips judged at 32x32: colour, shape, size, motion direction,
  temporal consistency, validity, flicker, and flicker over real held-out clips' (16 frames, 32x32, the half-speed
  world the stages train on); each stage's training minutes (`train_minutes`: the chapter's own TSR + SSR); and the
  stage a figure is lost in: the base's motion and validity, the TSR's validity;
* every stage's output judged on the same prompts (seed 0), and the sampling wall time per clip of each stage;
* each upsampler fed real clips (seed 0, the first 64 prompts): its flicker over real clips' of its size, the
  flicker a stage adds on its own (`real_fed_tsr_flicker_ratio`, `real_fed_ssr_flicker_ratio`).

The ablations (augmentation, its level, the SSR's sampling, the TSR's fill, the single-stage baseline) are their own
bench, `python -m minivid bench ch05_ablations` (one seed): the two together sample too many 32x32 clips for one sitting.
"""
from __future__ import annotations

import time

from minivid.bench import judged, recorded_minutes
from minivid.data import sample_batch
from minivid.eval import Judge
from minivid.pipelines import ch05
from minivid.pipelines.ch05_sr import stage_world
from minivid.pipelines.common import pretrained_path
from minivid.utils import make_generator

HEADLINE = ("heldout_color_acc", "heldout_shape_acc", "heldout_size_acc", "heldout_motion_acc",
            "heldout_temporal_consistency", "heldout_validity", "heldout_flicker", "heldout_flicker_ratio",
            "stage_base_motion_acc", "stage_base_validity", "stage_tsr_validity",
            "tsr_train_minutes", "ssr_train_minutes", "train_minutes")


def heldout_prompts(n: int, p, seed: int = 0) -> dict:
    """n held-out prompts (chapter 03's draw) with labels and their real clips in the half-speed world at both sizes:
    {"captions", "labels", "x": (n, 3, 2F, 2S, 2S), "x_low": (n, 3, 2F, S, S)} (the same clips, rendered twice)."""
    b = ch05.base_recipe(p)
    hi, lo = (sample_batch(n, kind="video_text", split="heldout", world=stage_world(s, 2 * b.frames),
                           generator=make_generator(30_000 + seed)) for s in (2 * b.size, b.size))
    return {"captions": hi["captions"], "labels": hi["labels"], "x": hi["x"], "x_low": lo["x"]}


def subset(prompts: dict, n: int) -> dict:
    """The first n of `heldout_prompts`' prompts, labels and clips."""
    return {"captions": prompts["captions"][:n], "labels": {k: v[:n] for k, v in prompts["labels"].items()},
            "x": prompts["x"][:n], "x_low": prompts["x_low"][:n]}


def train_minutes(p, seed: int) -> dict:
    """Recorded training minutes of each stage ({"base", "tsr", "ssr"}; a stage trained elsewhere has none)."""
    paths = {"base": pretrained_path(ch05.base_name(p), p.base_preset, seed),
             "tsr": ch05.checkpoint_path("tsr", p, seed), "ssr": ch05.checkpoint_path("ssr", p, seed)}
    return {k: m for k, path in paths.items() if (m := recorded_minutes(path)) is not None}


def flicker_ratio(row: dict, real: dict) -> float:
    """A judged row's flicker over the real clips' (the target: within 2x)."""
    return row["flicker"] / max(real["flicker"], 1e-8)


def _main(p, seed: int, judge: Judge):
    """Train (or load) one seed's cascade, run it stage by stage on the held-out prompts, judge it."""
    models = ch05.load_cascade(p, seed)
    prompts = heldout_prompts(p.eval_samples, p, seed)
    outs, secs, x = {}, {}, None
    for name in ch05.STAGES:
        t0 = time.perf_counter()
        x = ch05.cascade(prompts["captions"], stages=(name,), clips=x, models=models, seed=seed,
                         steps=p.eval_steps)[name]
        secs[name] = (time.perf_counter() - t0) / len(prompts["captions"])
        outs[name] = x
    stages = {k: judged(judge, outs[k], prompts["labels"]) for k in ch05.STAGES}
    final = stages["ssr"]
    figs = {f"heldout_{k}": v for k, v in final.items()}
    for k, row in stages.items():                                   # every seed: which stage a figure is lost in
        rows_to_figures(figs, f"stage_{k}", row, ("shape_acc", "motion_acc", "validity"))
    real = judged(judge, prompts["x"], prompts["labels"])
    figs["heldout_flicker_real"] = real["flicker"]
    figs["heldout_flicker_ratio"] = flicker_ratio(final, real)
    mins = train_minutes(p, seed)
    figs.update({f"{k}_train_minutes": v for k, v in mins.items()})
    if "tsr" in mins and "ssr" in mins:
        figs["train_minutes"] = mins["tsr"] + mins["ssr"]
        if "base" in mins:
            figs["cascade_train_minutes"] = sum(mins.values())
    return figs, models, prompts, outs, secs, real, stages


def headline(preset: str = "smoke", seed: int = 0) -> dict:
    """One training seed's cascade judged on the held-out prompts: {"heldout_*": ..., "train_minutes": ...}."""
    figs = _main(ch05.get_preset(preset), seed, Judge())[0]
    return {k: v for k, v in figs.items() if k in HEADLINE}


def rows_to_figures(figures: dict, prefix: str, row: dict, keys=("shape_acc", "motion_acc", "temporal_consistency",
                                                                  "flicker", "validity")) -> None:
    figures.update({f"{prefix}_{k}": row[k] for k in keys if k in row})


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch05.get_preset(preset)
    judge = Judge()
    figures, tables = {}, {}
    t_start = time.perf_counter()

    # the cascade, stage by stage, on the held-out prompts
    heads, models, prompts, outs, secs, real, stages = _main(p, seed, judge)
    figures.update(heads)
    names = {"base": f"base (chapter {p.base[2:]})", "tsr": "TSR", "ssr": "SSR (the cascade's output)"}
    tables["stages"] = [{"stage": names[k], "clips": "x".join(map(str, outs[k].shape[2:])),
                         **stages[k], "sample s/clip": secs[k]} for k in ch05.STAGES]
    for what, clips in (("real held-out clips, the base's size", prompts["x_low"][:, :, ::2]),
                        ("real held-out clips, the TSR's size", prompts["x_low"]), ("real held-out clips", prompts["x"])):
        tables["stages"].append({"stage": what, "clips": "x".join(map(str, clips.shape[2:])),
                                 **(real if clips is prompts["x"] else judged(judge, clips, prompts["labels"]))})
    # each upsampler fed real clips (the first ablation_samples prompts): the flicker a stage adds on its own
    sub = subset(prompts, p.ablation_samples)
    for name, low, ref in (("tsr", sub["x_low"][:, :, ::2], sub["x_low"]), ("ssr", sub["x_low"], sub["x"])):
        out = ch05.cascade(sub["captions"], stages=(name,), clips=low, models=models, seed=seed,
                           steps=p.eval_steps)[name]
        row, real_row = judged(judge, out, sub["labels"]), judged(judge, ref, sub["labels"])
        tables["stages"].append({"stage": f"{name.upper()} fed real clips ({len(out)} prompts)",
                                 "clips": "x".join(map(str, out.shape[2:])), **row})
        figures[f"real_fed_{name}_flicker_ratio"] = flicker_ratio(row, real_row)
    figures.update({f"sample_s_per_clip_{k}": v for k, v in secs.items()})
    figures["sample_s_per_clip_cascade"] = sum(secs.values())

    figures["bench_wall_minutes"] = (time.perf_counter() - t_start) / 60
    return {"figures": figures, "tables": tables}


__all__ = ["HEADLINE", "heldout_prompts", "subset", "train_minutes", "flicker_ratio", "headline", "rows_to_figures",
           "run"]
