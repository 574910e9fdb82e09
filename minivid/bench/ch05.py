"""Chapter 05 benchmark: the Imagen Video cascade on Shapes World (Ho et al. 2022, arXiv:2210.02303; noise-
conditioning augmentation: Ho et al. 2021, arXiv:2106.15282).

`python -m minivid bench ch05 --preset full --seeds 3`:
* headline (every seed): the cascade - chapter 03's base, the TSR and the SSR, all of that training seed - on 256
  held-out prompts; its final 16-frame 32x32 clips judged at 32x32: colour, shape, size, motion direction,
  temporal consistency, validity, flicker, and flicker over real held-out clips' (16 frames, 32x32, the half-speed
  world the stages train on); each stage's training minutes (`train_minutes`: the chapter's own TSR + SSR);
* every stage's output judged on the same prompts, and the sampling wall time per clip of each stage;
* noise-conditioning augmentation (one seed): both upsamplers trained with and without it, fed the same
  *generated* base clips, and the real low-res held-out clips (where no mismatch exists);
* the augmentation-level sweep (one seed): the level the upsamplers are told at sampling, on generated base clips;
* the TSR fill (one seed): the in-between frames repeated vs blank + a mask channel - PSNR of the in-between frames
  on real held-out clips (against repeating the frame before, and linear blending), and the final clips judged;
* the single-stage baseline (one seed): chapter 03's recipe making 16x32x32 directly, trained for about the
  cascade's total training time; every judge figure, training and sampling time, side by side.
"""
from __future__ import annotations

import time

import torch

from minivid.bench import JUDGED, judged, mean_psnr, recorded_minutes
from minivid.data import sample_batch
from minivid.eval import Judge
from minivid.pipelines import ch03, ch05
from minivid.pipelines.ch05_sr import stage_world
from minivid.pipelines.common import pretrained_path
from minivid.utils import make_generator

HEADLINE = ("heldout_color_acc", "heldout_shape_acc", "heldout_size_acc", "heldout_motion_acc",
            "heldout_temporal_consistency", "heldout_validity", "heldout_flicker", "heldout_flicker_ratio",
            "tsr_train_minutes", "ssr_train_minutes", "train_minutes")


def heldout_prompts(n: int, p, seed: int = 0) -> dict:
    """n held-out prompts (chapter 03's draw) with labels and their real clips in the half-speed world at both sizes:
    {"captions", "labels", "x": (n, 3, 2F, 2S, 2S), "x_low": (n, 3, 2F, S, S)} (the same clips, rendered twice)."""
    b = ch05.base_recipe(p)
    hi, lo = (sample_batch(n, kind="video_text", split="heldout", world=stage_world(s, 2 * b.frames),
                           generator=make_generator(30_000 + seed)) for s in (2 * b.size, b.size))
    return {"captions": hi["captions"], "labels": hi["labels"], "x": hi["x"], "x_low": lo["x"]}


def _subset(prompts: dict, n: int) -> dict:
    return {"captions": prompts["captions"][:n], "labels": {k: v[:n] for k, v in prompts["labels"].items()},
            "x": prompts["x"][:n], "x_low": prompts["x_low"][:n]}


def train_minutes(p, seed: int) -> dict:
    """Recorded training minutes of each stage ({"base", "tsr", "ssr"}; a stage trained elsewhere has none)."""
    paths = {"base": pretrained_path("ch03.video", p.base_preset, seed),
             "tsr": ch05.checkpoint_path("tsr", p, seed), "ssr": ch05.checkpoint_path("ssr", p, seed)}
    return {k: m for k, path in paths.items() if (m := recorded_minutes(path)) is not None}


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
    final = judged(judge, outs["ssr"], prompts["labels"])
    figs = {f"heldout_{k}": v for k, v in final.items()}
    real = judged(judge, prompts["x"], prompts["labels"])
    figs["heldout_flicker_real"] = real["flicker"]
    figs["heldout_flicker_ratio"] = final["flicker"] / max(real["flicker"], 1e-8)
    mins = train_minutes(p, seed)
    figs.update({f"{k}_train_minutes": v for k, v in mins.items()})
    if "tsr" in mins and "ssr" in mins:
        figs["train_minutes"] = mins["tsr"] + mins["ssr"]
        if "base" in mins:
            figs["cascade_train_minutes"] = sum(mins.values())
    return figs, models, prompts, outs, secs, real


def headline(preset: str = "smoke", seed: int = 0) -> dict:
    """One training seed's cascade judged on the held-out prompts: {"heldout_*": ..., "train_minutes": ...}."""
    figs = _main(ch05.get_preset(preset), seed, Judge())[0]
    return {k: v for k, v in figs.items() if k in HEADLINE}


def _rows_to_figures(figures: dict, prefix: str, row: dict, keys=("shape_acc", "motion_acc", "temporal_consistency",
                                                                   "flicker", "validity")) -> None:
    figures.update({f"{prefix}_{k}": row[k] for k in keys if k in row})


def _upsample(p, models, sub, low, seed, level):
    return ch05.cascade(sub["captions"], stages=("tsr", "ssr"), clips=low, models=models, seed=seed,
                        steps=p.eval_steps, aug_level=level, progress=False)["ssr"]


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch05.get_preset(preset)
    judge = Judge()
    figures, tables = {}, {}
    t_start = time.perf_counter()

    # the cascade, stage by stage, on the held-out prompts
    heads, models, prompts, outs, secs, real = _main(p, seed, judge)
    figures.update(heads)
    names = {"base": "base (chapter 03)", "tsr": "TSR", "ssr": "SSR (the cascade's output)"}
    tables["stages"] = [{"stage": names[k], "clips": "x".join(map(str, outs[k].shape[2:])),
                         **judged(judge, outs[k], prompts["labels"]), "sample s/clip": secs[k]} for k in ch05.STAGES]
    for what, clips in (("real held-out clips, the base's size", prompts["x_low"][:, :, ::2]),
                        ("real held-out clips, the TSR's size", prompts["x_low"]), ("real held-out clips", prompts["x"])):
        tables["stages"].append({"stage": what, "clips": "x".join(map(str, clips.shape[2:])),
                                 **(real if clips is prompts["x"] else judged(judge, clips, prompts["labels"]))})
    for k, row in zip(ch05.STAGES, tables["stages"]):
        _rows_to_figures(figures, f"stage_{k}", row, ("shape_acc", "motion_acc", "validity"))
    figures.update({f"sample_s_per_clip_{k}": v for k, v in secs.items()})
    figures["sample_s_per_clip_cascade"] = sum(secs.values())

    # noise-conditioning augmentation, fed generated and real low-res clips (one seed)
    n = p.ablation_samples
    sub = _subset(prompts, n)
    gen_low, real_low = outs["base"][:n], sub["x_low"][:, :, ::2]
    noaug = ch05.load_cascade(p, seed, tsr=ch05.stage_recipe(p, "tsr", aug=False),
                              ssr=ch05.stage_recipe(p, "ssr", aug=False))
    swept = {}
    rows = []
    for arm, m, level in (("with augmentation", models, p.aug_level), ("without augmentation", noaug, 0)):
        for inputs, low in (("generated base clips", gen_low), ("real low-res clips", real_low)):
            x = _upsample(p, m, sub, low, seed, level)
            row = judged(judge, x, sub["labels"])
            if arm == "with augmentation" and inputs.startswith("generated"):
                swept[level] = row
            rows.append({"upsamplers": arm, "sampling level": level, "fed": inputs, **row})
            _rows_to_figures(figures, f"ablation_{'aug' if m is models else 'noaug'}_{inputs.split()[0]}", row)
    tables["augmentation"] = rows

    # the augmentation-level sweep on generated base clips (one seed)
    rows = []
    for level in p.aug_levels:
        if level not in swept:
            swept[level] = judged(judge, _upsample(p, models, sub, gen_low, seed, level), sub["labels"])
        rows.append({"aug level": level, **swept[level]})
        _rows_to_figures(figures, f"sweep_level{level}", swept[level], ("shape_acc", "motion_acc", "validity"))
    tables["aug_sweep"] = rows
    best = max(p.aug_levels, key=lambda k: (swept[k]["validity"], swept[k]["shape_acc"], -k))
    figures["sweep_best_level"] = best

    # the TSR's in-between frames: repeated vs blank + mask (one seed)
    blank = ch05.load_stage(p, "tsr", seed, recipe=ch05.stage_recipe(p, "tsr", fill="blank"))
    cond = models.base[2]
    odd = slice(1, None, 2)
    target = sub["x_low"]
    rows = []
    for fill, stage in (("repeat", models.tsr), ("blank + mask", blank)):
        up = ch05.run_stage(stage, cond, sub["captions"], real_low, guidance=p.guidance[1], steps=p.eval_steps,
                            seed=seed, aug_level=0, progress=False)
        final = (swept[p.aug_level] if stage is models.tsr else
                 judged(judge, _upsample(p, models._replace(tsr=stage), sub, gen_low, seed, p.aug_level), sub["labels"]))
        rows.append({"in-between frames": f"TSR, {fill}",
                     "PSNR in-between (real clips) dB": mean_psnr(up[:, :, odd], target[:, :, odd]),
                     **{f"final {k}": v for k, v in final.items()}})
        figures[f"tsr_psnr_{fill.split()[0]}"] = rows[-1]["PSNR in-between (real clips) dB"]
    hold = real_low.repeat_interleave(2, dim=2)
    mids = (real_low[:, :, 1:] + real_low[:, :, :-1]) / 2
    blend = torch.stack([real_low, torch.cat([mids, real_low[:, :, -1:]], 2)], 3).flatten(2, 3)
    for what, clips in (("the frame before, repeated", hold), ("linear blending (last frame held)", blend)):
        rows.append({"in-between frames": what,
                     "PSNR in-between (real clips) dB": mean_psnr(clips[:, :, odd], target[:, :, odd])})
    figures["tsr_psnr_hold"], figures["tsr_psnr_linear"] = (r["PSNR in-between (real clips) dB"] for r in rows[2:])
    tables["tsr_fill"] = rows

    # the single-stage baseline at 16x32x32 (one seed)
    b = p.baseline
    model, schedule, bcond, _ = ch05.train_baseline(p, seed)
    t0 = time.perf_counter()
    xb = ch03.generate(model, schedule, bcond, prompts["captions"], p.guidance[0], objective=b.objective,
                       steps=p.eval_steps, seed=seed, frames=b.frames, size=b.size)
    base_secs = (time.perf_counter() - t0) / len(prompts["captions"])
    base_row = judged(judge, xb, prompts["labels"])
    base_min = recorded_minutes(ch05.checkpoint_path("baseline", p, seed))
    figures.update({f"baseline_{k}": v for k, v in base_row.items()})
    figures["baseline_flicker_ratio"] = base_row["flicker"] / max(real["flicker"], 1e-8)
    figures["baseline_sample_s_per_clip"] = base_secs
    if base_min is not None:
        figures["baseline_train_minutes"] = base_min
    casc = {k[8:]: v for k, v in heads.items() if k.startswith("heldout_") and k[8:] in JUDGED}
    tables["single_stage_vs_cascade"] = [
        {"model": "cascade: base + TSR + SSR", **casc, "train minutes": heads.get("cascade_train_minutes"),
         "sample s/clip": figures["sample_s_per_clip_cascade"]},
        {"model": f"single stage {b.frames}x{b.size}x{b.size} ({b.steps} steps)", **base_row,
         "train minutes": base_min, "sample s/clip": base_secs}]
    figures["bench_wall_minutes"] = (time.perf_counter() - t_start) / 60
    return {"figures": figures, "tables": tables}


__all__ = ["HEADLINE", "heldout_prompts", "train_minutes", "headline", "run"]
