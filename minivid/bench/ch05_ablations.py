"""Chapter 05's ablations, one training seed (the headline figures at three seeds are `python -m minivid bench ch05`).

`python -m minivid bench ch05_ablations --preset full --out chapters/results/ch05_ablations.json`, on the preset's
`ablation_samples` held-out prompts (the first of chapter 05's 256):
* noise-conditioning augmentation: both upsamplers trained with and without it, fed the same *generated* base clips,
  and the real low-res held-out clips (where no mismatch exists);
* the augmentation-level sweep: the level the upsamplers are told at sampling, on generated base clips;
* the base's noise share: its starting noise shared across frames at sampling (`Ch05Preset.base_noise_alpha`), the
  base's clips judged at their size and the whole cascade's at 32x32, each flicker over real clips' of its size;
* the upsamplers' sampling: each one's guidance scale and the SSR's DDIM steps, on the same generated base clips;
* the TSR fill: the in-between frames repeated vs blank + a mask channel - PSNR of the in-between frames on real
  held-out clips (against repeating the frame before, and linear blending), and the final clips judged;
* the single-stage baseline: chapter 03's recipe making 16x32x32 directly, trained for about the cascade's total
  training time; every judge figure, training and sampling time, beside the cascade's on the same prompts.

Split from `bench ch05` because the two do not fit one sitting: sampling a 16-frame 32x32 clip costs the SSR about
4 s at DDIM-20 with guidance on 2 cores, and the ablations sample a few hundred of them.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from minivid.bench import JUDGED, judged, mean_psnr, recorded_minutes
from minivid.bench.ch05 import flicker_ratio, heldout_prompts, rows_to_figures, subset, train_minutes
from minivid.eval import Judge
from minivid.pipelines import ch03, ch05

# (TSR guidance, SSR guidance, SSR DDIM steps) compared on the same generated base clips
UPSAMPLER_GRID = {"smoke": ((1.0, 1.0, 1), (2.0, 1.0, 2)),
                  "full": ((1.0, 1.0, 10), (1.0, 1.0, 20), (2.0, 1.0, 10), (1.0, 2.0, 10), (2.0, 2.0, 10))}
# the base's starting noise share across frames at sampling (None: as the base trained; chapter 04's is 1)
BASE_NOISE_GRID = {"smoke": (None, 4.0), "full": (None, 2.0, 4.0, 8.0, 16.0)}


def _upsample(p, models, sub, low, seed, level):
    return ch05.cascade(sub["captions"], stages=("tsr", "ssr"), clips=low, models=models, seed=seed,
                        steps=p.eval_steps, aug_level=level, progress=False)["ssr"]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch05.get_preset(preset)
    judge = Judge()
    figures, tables = {}, {}
    t_start = time.perf_counter()
    n = p.ablation_samples
    sub = subset(heldout_prompts(p.eval_samples, p, seed), n)
    models = ch05.load_cascade(p, seed)
    noaug = ch05.load_cascade(p, seed, tsr=ch05.stage_recipe(p, "tsr", aug=False),
                              ssr=ch05.stage_recipe(p, "ssr", aug=False))
    blank = ch05.load_stage(p, "tsr", seed, recipe=ch05.stage_recipe(p, "tsr", fill="blank"))
    model, schedule, bcond, _ = ch05.train_baseline(p, seed)          # every training first (progress bars)

    gen_low, base_s = _timed(lambda: ch05.cascade(sub["captions"], stages=("base",), models=models, seed=seed,
                                                  steps=p.eval_steps, progress=False)["base"])
    real_low = sub["x_low"][:, :, ::2]

    # noise-conditioning augmentation, fed generated and real low-res clips
    swept, rows = {}, []
    for arm, m, level in (("with augmentation", models, p.aug_level), ("without augmentation", noaug, 0)):
        for inputs, low in (("generated base clips", gen_low), ("real low-res clips", real_low)):
            x, secs = _timed(lambda: _upsample(p, m, sub, low, seed, level))
            row = judged(judge, x, sub["labels"])
            if arm == "with augmentation" and inputs.startswith("generated"):
                swept[level], cascade_row, up_s = row, row, secs
            rows.append({"upsamplers": arm, "sampling level": level, "fed": inputs, **row})
            rows_to_figures(figures, f"ablation_{'aug' if m is models else 'noaug'}_{inputs.split()[0]}", row)
    tables["augmentation"] = rows

    # the augmentation-level sweep on generated base clips
    rows = []
    for level in p.aug_levels:
        if level not in swept:
            swept[level] = judged(judge, _upsample(p, models, sub, gen_low, seed, level), sub["labels"])
        rows.append({"aug level": level, **swept[level]})
        rows_to_figures(figures, f"sweep_level{level}", swept[level], ("shape_acc", "motion_acc", "validity"))
    tables["aug_sweep"] = rows
    figures["sweep_best_level"] = max(p.aug_levels, key=lambda k: (swept[k]["validity"], swept[k]["shape_acc"], -k))

    # the base's noise share across frames: the base's clips and the cascade's, each against real clips of its size
    rows, real_base, real = [], judged(judge, real_low, sub["labels"]), judged(judge, sub["x"], sub["labels"])
    for alpha in BASE_NOISE_GRID[p.name]:
        if alpha == p.base_noise_alpha:                       # the headline arm: its clips and row from above
            low, final = gen_low, cascade_row
        else:
            low = ch05.cascade(sub["captions"], stages=("base",), models=models._replace(
                preset=replace(p, base_noise_alpha=alpha)), seed=seed, steps=p.eval_steps, progress=False)["base"]
            final = judged(judge, _upsample(p, models, sub, low, seed, p.aug_level), sub["labels"])
        row = judged(judge, low, sub["labels"])
        tag = "as trained" if alpha is None else f"{alpha:g}"
        rows.append({"base noise share": tag, "base flicker / real": flicker_ratio(row, real_base),
                     "base validity": row["validity"], "base motion_acc": row["motion_acc"],
                     **{f"final {k}": v for k, v in final.items()}, "final flicker / real": flicker_ratio(final, real)})
        figures[f"base_noise_{tag.replace(' ', '_')}_flicker_ratio"] = rows[-1]["final flicker / real"]
    tables["base_noise"] = rows

    # the upsamplers' guidance scales and the SSR's DDIM steps, on the same generated base clips
    tsr_out, rows = {}, []
    for w_tsr, w_ssr, steps in UPSAMPLER_GRID[p.name]:
        if w_tsr not in tsr_out:
            tsr_out[w_tsr] = ch05.cascade(sub["captions"], stages=("tsr",), clips=gen_low, models=models, seed=seed,
                                          steps=p.eval_steps, guidance=(p.guidance[0], w_tsr, w_ssr),
                                          progress=False)["tsr"]
        x, secs = _timed(lambda: ch05.cascade(sub["captions"], stages=("ssr",), clips=tsr_out[w_tsr], models=models,
                                              seed=seed, steps=steps, guidance=(p.guidance[0], w_tsr, w_ssr),
                                              progress=False)["ssr"])
        row = judged(judge, x, sub["labels"])
        rows.append({"TSR guidance": w_tsr, "SSR guidance": w_ssr, "SSR DDIM steps": steps, **row,
                     "SSR s/clip": secs / n})
        rows_to_figures(figures, f"upsample_tsr_w{w_tsr:g}_ssr_w{w_ssr:g}_steps{steps}", row,
                        ("shape_acc", "temporal_consistency", "validity"))
    tables["upsampler_sampling"] = rows

    # the TSR's in-between frames: repeated vs blank + mask
    odd, target = slice(1, None, 2), sub["x_low"]
    rows = []
    for fill, stage in (("repeat", models.tsr), ("blank + mask", blank)):
        up = ch05.cascade(sub["captions"], stages=("tsr",), clips=real_low, models=models._replace(tsr=stage),
                          seed=seed, steps=p.eval_steps, aug_level=0, progress=False)["tsr"]
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

    # the single-stage baseline at 16x32x32, beside the cascade on the same prompts
    b = p.baseline
    xb, base_secs = _timed(lambda: ch03.generate(model, schedule, bcond, sub["captions"], p.guidance[0],
                                                 objective=b.objective, steps=ch05.stage_steps(p, "base"), seed=seed,
                                                 frames=b.frames, size=b.size))
    base_row = judged(judge, xb, sub["labels"])
    base_min = recorded_minutes(ch05.checkpoint_path("baseline", p, seed))
    figures.update({f"baseline_{k}": v for k, v in base_row.items()})
    figures["baseline_flicker_ratio"] = flicker_ratio(base_row, real)
    figures["baseline_sample_s_per_clip"] = base_secs / n
    figures.update({f"cascade_{k}": v for k, v in cascade_row.items()})
    figures["cascade_flicker_ratio"] = flicker_ratio(cascade_row, real)
    figures["cascade_sample_s_per_clip"] = (base_s + up_s) / n
    stage_min = train_minutes(p, seed)
    cascade_min = sum(stage_min.values()) if len(stage_min) == 3 else None
    if base_min is not None:
        figures["baseline_train_minutes"] = base_min
    if cascade_min is not None:
        figures["cascade_train_minutes"] = cascade_min
    tables["single_stage_vs_cascade"] = [
        {"model": "cascade: base + TSR + SSR", **{k: cascade_row[k] for k in JUDGED if k in cascade_row},
         "train minutes": cascade_min, "sample s/clip": figures["cascade_sample_s_per_clip"]},
        {"model": f"single stage {b.frames}x{b.size}x{b.size} ({b.steps} steps)",
         **{k: base_row[k] for k in JUDGED if k in base_row}, "train minutes": base_min,
         "sample s/clip": figures["baseline_sample_s_per_clip"]},
        {"model": "real held-out clips", **{k: real[k] for k in JUDGED if k in real}}]
    figures["bench_wall_minutes"] = (time.perf_counter() - t_start) / 60
    return {"figures": figures, "tables": tables}


__all__ = ["UPSAMPLER_GRID", "BASE_NOISE_GRID", "run"]
