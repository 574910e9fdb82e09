"""Chapter 04 benchmark: Make-A-Video on Shapes World (Singer et al. 2022, arXiv:2209.14792).

`python -m minivid bench ch04 --preset full --seeds 3`:
* headline (every seed): the temporal layers trained on unlabelled clips (frozen chapter-02 image model),
  256 held-out prompts judged: colour, shape, size (the frozen prior kept), motion plausibility (the object
  moving along a straight path at a world speed; and the same with every frame valid), direction (the text never said how things move, so
  chance is 0.25 before fine-tuning), temporal consistency, flicker, validity; the image model's own
  held-out accuracy at the same prompts for comparison;
* trainable vs frozen parameters, train-step time, against chapter 03's model;
* the conditioning ablation (one seed): pseudo-captions read off a frame through the mini-CLIP space vs the
  unconditional branch only, and how often the pseudo-caption names the clip's true appearance; at sampling, the
  prompt through the prior (`ch04.prior_captions`, the preset's default) vs as written, and how often the prior names
  the prompt's appearance;
* the video-text curve (one seed): held-out direction with the motion cue from a text-to-motion prior fitted on 0,
  100, 500, 2,000 captioned clips (`ch04_prior.fit_motion_prior`; a recipe without the cue: the temporal layers
  fine-tuned on them);
* frame interpolation (one seed): PSNR of the network vs linear blending on held-out real clips with every
  other frame removed, and with the middle `InterpRecipe.gap` frames removed; extrapolation PSNR; the judge's
  consistency and flicker on 15-frame generated clips.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from minivid.bench import judged, time_train_step
from minivid.data import WorldConfig, from_uint8, parse_caption, sample_batch, video_pool, video_text_pool
from minivid.eval import Judge, psnr
from minivid.models.pseudo3d import interpolation_mask
from minivid.pipelines import ch04, ch04_prior
from minivid.pipelines.common import guided_ddim, training_record
from minivid.train import count_params
from minivid.utils import make_generator

HEADLINE = ("heldout_color_acc", "heldout_shape_acc", "heldout_size_acc", "heldout_motion_plausible",
            "heldout_valid_motion_plausible", "heldout_temporal_consistency", "heldout_flicker", "heldout_validity", "heldout_motion_acc",
            "train_minutes")


def heldout_prompts(n: int, r: ch04.VideoRecipe, seed: int = 0) -> dict:
    """n held-out video-text prompts with labels and real clips (the same draw chapter 03 is judged on)."""
    return sample_batch(n, kind="video_text", split="heldout", size=r.size, frames=r.frames,
                        generator=make_generator(30_000 + seed))


KEYS = ("color_acc", "shape_acc", "size_acc", "motion_plausible", "valid_motion_plausible", "motion_acc",
        "temporal_consistency", "flicker", "validity")     # the judge's figures, with ch04's motion plausibility


def _judged(judge: Judge, x: torch.Tensor, labels: dict) -> dict:
    return judged(judge, x, labels, KEYS)


def _sample(model, schedule, cond, p, prompts, seed, **kw):
    """The unlabelled-video model on the held-out prompts (`ch04.sample_prompts`: through the preset's prior, moving
    as the prompt says unless kw says otherwise)."""
    return ch04.sample_prompts(model, schedule, cond, prompts["captions"], p, seed=seed, **kw)


def _main(p, seed: int):
    """Train (or load) one seed's model and judge it: (figures, model, schedule, cond, prompts, clips)."""
    model, schedule, cond, state = ch04.train_video(p, seed, progress=True)
    prompts = heldout_prompts(p.eval_samples, p.video)
    x = _sample(model, schedule, cond, p, prompts, seed)
    figs = {f"heldout_{k}": v for k, v in _judged(Judge(), x, prompts["labels"]).items()}
    rec = training_record(ch04.checkpoint_path("video", p, seed))
    if rec:
        figs["train_minutes"] = rec["train_wall_s"] / 60
    return figs, model, schedule, cond, prompts, x


def headline(preset: str = "smoke", seed: int = 0) -> dict:
    """The main model of one training seed, judged on the held-out prompts: {"heldout_*": ...}."""
    return _main(ch04.get_preset(preset), seed)[0]


def _db(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean PSNR over clips (dB), of the frames given."""
    return psnr(x.clamp(-1, 1).contiguous(), y.contiguous()).mean().item()


def _interp_figures(p, seed: int, figures: dict, tables: dict, x_gen: torch.Tensor, judge: Judge) -> None:
    """Frame interpolation: network vs linear blending on held-out real clips, and on generated clips."""
    interp, schedule, cond = ch04.train_interpolator(p, seed, progress=True)
    objective = ch04.image_model(p.video).objective
    n, i = p.interp_eval, p.interp
    w = WorldConfig()
    half = WorldConfig(size=p.video.size, frames=i.interp_frames, speed_slow=w.speed_slow / 2,
                       speed_fast=w.speed_fast / 2)
    real = sample_batch(n, kind="video", split="heldout", world=half, generator=make_generator(40_000 + seed))["x"]
    kw = dict(objective=objective, steps=p.eval_steps, seed=seed, noise_alpha=p.video.noise_alpha)
    net = ch04.interpolate(interp, schedule, cond, real[:, :, ::2], **kw)
    lin = ch04.linear_blend(real[:, :, ::2])
    odd = slice(1, None, 2)
    figures["interp_psnr_network"] = _db(net[:, :, odd], real[:, :, odd])
    figures["interp_psnr_linear"] = _db(lin[:, :, odd], real[:, :, odd])
    ext_real = sample_batch(n, kind="video", split="heldout", size=p.video.size, frames=i.extrap_frames,
                            generator=make_generator(41_000 + seed))["x"]
    T0 = p.video.frames
    ext = ch04.extrapolate(interp, schedule, cond, ext_real[:, :, :T0], extra=i.extrap_frames - T0, **kw)
    hold = ext_real[:, :, T0 - 1:T0].expand_as(ext_real[:, :, T0:])
    figures["extrap_psnr_network"] = _db(ext[:, :, T0:], ext_real[:, :, T0:])
    figures["extrap_psnr_hold_last_frame"] = _db(hold, ext_real[:, :, T0:])
    gap = ch04.gap_mask(i.extrap_frames, i.gap) == 0                   # the same clips, their middle frames removed
    figures["gap_psnr_network"] = _db(ch04.fill_gap(interp, schedule, cond, ext_real, i.gap, **kw)[:, :, gap],
                                      ext_real[:, :, gap])
    figures["gap_psnr_linear"] = _db(ch04.linear_fill(ext_real, (~gap).float())[:, :, gap], ext_real[:, :, gap])
    # the baseline that knows straight paths (what a network with InterpRecipe.base = "path" adds its residual to)
    figures["gap_psnr_path"] = _db(ch04.path_fill(ext_real, (~gap).float())[:, :, gap], ext_real[:, :, gap])
    first = interpolation_mask(i.extrap_frames, list(range(T0)))
    figures["extrap_psnr_path"] = _db(ch04.path_fill(ext_real, first)[:, :, T0:], ext_real[:, :, T0:])
    gen = x_gen[:n]
    up = ch04.interpolate(interp, schedule, cond, gen, **kw)
    rows = []
    for name, clips in (("generated, 8 frames", gen), ("interpolated by the network, 15 frames", up),
                        ("linear blending, 15 frames", ch04.linear_blend(gen))):
        s = judge.score(clips)
        rows.append({"clips": name, "temporal_consistency": s["temporal_consistency"], "flicker": s["flicker"],
                     "validity": s["validity"]})
    tables["interpolated_generated"] = rows
    figures["interp15_temporal_consistency"] = rows[1]["temporal_consistency"]
    figures["interp15_flicker"] = rows[1]["flicker"]


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch04.get_preset(preset)
    r = p.video
    judge = Judge()
    figures, tables = {}, {}

    t0 = time.perf_counter()
    heads, model, schedule, cond, prompts, x = _main(p, seed)
    figures.update(heads)
    image = ch04.image_model(r)
    said = ch04.prior_captions(prompts["captions"], r, p.prior, progress=False)   # what the video model heard
    img = guided_ddim(image.model, schedule, cond, said, (3, r.size, r.size),
                           guidance=p.guidance, objective=image.objective, steps=p.eval_steps, seed=seed)
    base = {k: v for k, v in _judged(judge, img, prompts["labels"]).items() if k.endswith("_acc")}
    real = _judged(judge, prompts["x"], prompts["labels"])
    rows = [{"samples": f"Make-A-Video ({r.steps} steps, unlabelled clips), prior {p.prior}",
             **{k[8:]: v for k, v in heads.items() if k.startswith("heldout_")}}]
    for how in [h for h in (*ch04.PRIORS, None) if h != p.prior]:          # the other ways to hear the prompt
        rows.append({"samples": f"the same model, prior {how}" if how else "the same model, the prompt as written",
                     **_judged(judge, _sample(model, schedule, cond, p, prompts, seed, prior=how), prompts["labels"])})
    if r.motion_cue:                                  # the cue from no word: is the motion itself plausible?
        rows.append({"samples": "the same model, a random world motion in place of the prompt's",
                     **_judged(judge, _sample(model, schedule, cond, p, prompts, seed, motion="random"),
                               prompts["labels"])})
        figures["random_motion_plausible"] = rows[-1]["motion_plausible"]
        random_row = {k: v for k, v in rows[-1].items() if k != "samples"}
    for how in ch04.PRIORS:
        figures[f"prior_{how}_appearance_acc"] = _caption_accuracy(ch04.prior_captions(prompts["captions"], r, how,
                                                                                        progress=False),
                                                                   prompts["labels"])
    tables["heldout"] = [*rows,
                         {"samples": "the frozen chapter-02 image model (one frame)", **base},
                         {"samples": "real held-out clips", **real}]
    figures.update({f"image_model_{k}": v for k, v in base.items()})
    figures["heldout_frechet"] = judge.frechet(prompts["x"], x)

    # cost: what trains, and a step
    data = ch04.training_data(r, cond, progress=False)
    net = ch04.build_video_model(r, image.model)
    step = time_train_step(net, ch04.make_batch_fn(r, data),
                      ch04.loss_fn_for(schedule, image.objective, cond.null_features(), r.p_uncond, r.noise_alpha,
                                       r.t_shift),
                      steps=2 if p.name == "smoke" else 6)
    figures.update(params_total=count_params(net), params_trainable=count_params(net, trainable_only=True),
                   train_step_s=step)
    tables["cost"] = [{"model": "Make-A-Video: frozen ch02 U-Net + temporal layers", "params": figures["params_total"],
                       "trainable": figures["params_trainable"], f"train step s ({r.batch_size} clips)": step}]

    # the conditioning question (one seed)
    pool_labels = video_pool(r.size, r.frames, r.video_pool)["labels"]        # read only here, to score
    figures["pseudo_caption_appearance_acc"] = _caption_accuracy(data["captions"], pool_labels)
    null = replace(r, conditioning="null")
    m2, s2, c2, _ = ch04.train_video(p, seed, progress=True, recipe=null)
    x2 = _sample(m2, s2, c2, p, prompts, seed)
    tables["conditioning"] = [{"training text": "pseudo-captions (a frame through the mini-CLIP space)",
                               **_judged(judge, x, prompts["labels"])},
                              {"training text": "none (the unconditional branch only)",
                               **_judged(judge, x2, prompts["labels"])}]

    if r.motion_cue:                          # the video-text step: a text-to-motion prior from n captioned clips
        _prior_curve(p, seed, figures, tables, model, schedule, cond, prompts, judge,
                     at_zero=random_row)
    else:                                     # the paper's: the temporal layers fine-tuned on n captioned clips
        _finetune_curve(p, seed, figures, tables, prompts, judge)

    _interp_figures(p, seed, figures, tables, x, judge)
    figures["bench_wall_minutes"] = (time.perf_counter() - t0) / 60
    return {"figures": figures, "tables": tables}


def _finetune_curve(p, seed: int, figures: dict, tables: dict, prompts: dict, judge: Judge) -> None:
    """Held-out figures after the temporal layers are fine-tuned on n captioned clips (`ch04.finetune`)."""
    r, rows = p.video, []
    for n in p.finetune_clips:
        mf, sf, cf = ch04.finetune(p, seed, clips=n, progress=True)
        xf = ch04.generate(mf, sf, cf, prompts["captions"], p.finetune_guidance,
                           objective=ch04.image_model(r, False).objective, steps=p.eval_steps, seed=seed,
                           frames=r.frames, size=r.size, noise_alpha=r.noise_alpha)
        rows.append({"captioned clips": n, **_judged(judge, xf, prompts["labels"])})
        figures[f"finetune{n}_motion_acc"] = rows[-1].get("motion_acc", float("nan"))
    tables["finetune_curve"] = rows


def _prior_curve(p, seed: int, figures: dict, tables: dict, model, schedule, cond, prompts: dict,
                 judge: Judge, at_zero: dict) -> None:
    """Held-out figures with the motion cue from a text-to-motion prior fitted on n captioned clips
    (`ch04_prior.fit_motion_prior`), the appearance heard through the preset's prior. At 0 there is no prior: a world
    motion at random (`ch04_prior.learned_motion`), the heldout table's row of that name, `at_zero`."""
    r, rows = p.video, []
    for n in p.finetune_clips:
        if n == 0:
            rows.append({"captioned clips": 0, **at_zero})
        else:
            pool = video_text_pool(r.size, r.frames, n)
            prior = ch04_prior.fit_motion_prior(cond, pool["captions"], from_uint8(pool["x"]))
            motion = ch04_prior.learned_motion(prior, cond, prompts["captions"], r.frames, seed)
            rows.append({"captioned clips": n, **_judged(judge, _sample(model, schedule, cond, p, prompts, seed,
                                                                        motion=motion), prompts["labels"])})
        figures[f"prior{n}_motion_acc"] = rows[-1]["motion_acc"]
    tables["motion_prior_curve"] = rows


def _caption_accuracy(captions: list[str], labels: dict) -> float:
    """How often a pseudo-caption names the clip's true colour, shape and size (labels never used in training)."""
    hits = 0
    for i, c in enumerate(captions):
        want = parse_caption(c)
        hits += all(int(labels[k][i]) == want[k] for k in ("color", "shape", "size"))
    return hits / max(len(captions), 1)
