"""Chapter 03 benchmark: the factorised 3-D U-Net text-to-video model (VDM, arXiv:2204.03458).

`python -m minivid bench ch03 --preset full`:
* cost: parameters and FLOPs per clip of the factorised U-Net vs the same U-Net with full 3x3x3
  convolutions (and with per-frame convs only), plus a measured training step of each;
* quality: the cached main model (trained first if absent, steps/s recorded) on held-out
  attribute combinations, judged (colour, shape, size, motion, temporal consistency, flicker);
* the paper's ablation: the same recipe with and without joint image training, same budget
  (`Ch03Preset.ablation_steps`, by default the recipe's own: the joint arm is then the main model),
  judged side by side;
* sampling time per clip, DDIM at 50 and 20 steps (with classifier-free guidance);
* whether motion follows the prompt: a confusion matrix of asked against judged direction, and the
  denoising loss with each clip's own caption vs the caption with its direction flipped;
* the motion-channel ablation: the main recipe against the same recipe without motion channels
  (`VideoRecipe.motion_channels`, VideoJAM-style flow denoised with the clip), same full budget;
* the schedule-shift ablation: the recipe on the unshifted cosine schedule (`schedule_shift` = 1) and with larger
  shifts, at the (shift, seed) pairs of `Ch03Preset.shift_ablation`, judged like the main model.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace

import torch

from minivid.bench import judged, time_train_step
from minivid.data import DIRECTIONS, sample_batch, time_reversed
from minivid.diffusion import q_sample, training_target
from minivid.eval import Judge
from minivid.models.unet3d import model_flops
from minivid.pipelines import ch02, ch03
from minivid.pipelines.common import training_record
from minivid.train import count_params
from minivid.utils import make_generator


@torch.no_grad()
def direction_reliance(model, schedule, cond, n: int = 128,
                       levels: tuple[float, ...] = (0.3, 0.5, 0.7), *, objective: str = "v", frames: int = 8,
                       size: int = 16, seed: int = 0) -> dict:
    """Does the model listen to the direction words? Its diffusion loss on n validation clips with
    their own captions vs with the direction flipped (clips, noise and t unchanged).

    levels: noise levels as fractions of the schedule's T (0.3 -> t = 300 of 1000).
    Returns {"true": loss, "flipped": loss, "gap": flipped - true} (means over levels) on the RGB channels,
    so models with and without motion channels compare; a motion-channel model (5 input channels) also gets
    "flow_true", "flow_flipped" (its loss on the flow channels, fed the clips' true flow). A gap near 0 means
    the direction in the prompt does not change the denoiser's prediction.
    """
    b = sample_batch(n, kind="video_text", split="val", size=size, frames=frames, generator=make_generator(seed))
    flipped = time_reversed(b, seed)["captions"]
    g = make_generator(seed + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feats = {"true": cond(b["captions"]), "flipped": cond(flipped)}
    x = b["x"]
    motion = ch03.has_motion_channels(model)
    if motion:
        x = ch03.with_motion(x, b["labels"]["direction"], b["labels"]["speed"])
    out = {k: 0.0 for k in ("true", "flipped", *(("flow_true", "flow_flipped") if motion else ()))}
    for level in levels:
        noise = torch.randn(x.shape, generator=g)
        tt = torch.full((n,), min(int(level * schedule.T), schedule.T - 1), dtype=torch.long)
        x_t, target = q_sample(x, tt, noise, schedule), training_target(objective, x, noise, tt, schedule)
        for k in ("true", "flipped"):
            err = (model(x_t, tt, **feats[k]) - target).pow(2)
            out[k] += err[:, :ch03.RGB].mean().item() / len(levels)
            if motion:
                out[f"flow_{k}"] += err[:, ch03.RGB:].mean().item() / len(levels)
    return {**out, "gap": out["flipped"] - out["true"]}


def heldout_prompts(n: int, r: ch03.VideoRecipe, seed: int = 0) -> dict:
    """n held-out video-text prompts with labels and real clips (sample_batch, fixed generator)."""
    return sample_batch(n, kind="video_text", split="heldout", size=r.size, frames=r.frames,
                        generator=make_generator(30_000 + seed))


def _cost_rows(r: ch03.VideoRecipe, text_dim: int) -> list[dict]:
    rows = []
    for conv in ("factorized", "full", "spatial"):
        m = ch03.build_model(r, text_dim, conv=conv)
        x = torch.randn(4, m.cfg.in_channels, r.frames, r.size, r.size)
        ctx = torch.randn(4, 16, text_dim)
        t = torch.randint(0, r.T, (4,))
        m(x, t, context=ctx).square().mean().backward()                   # warm-up
        t0 = time.perf_counter()
        for _ in range(2):
            m.zero_grad()
            m(x, t, context=ctx).square().mean().backward()
        step = (time.perf_counter() - t0) / 2
        rows.append({"conv": conv, "params": count_params(m),
                     "GFLOPs/clip": model_flops(m, T=r.frames, size=r.size) / 1e9,
                     "train step (4 clips) s": step})
    return rows


def direction_confusion(judged: torch.Tensor, asked: torch.Tensor) -> list[dict]:
    """Rows: the direction a prompt asked for; columns: how many clips the judge saw move each way."""
    names = list(DIRECTIONS)
    rows = []
    for a, name in enumerate(names):
        sel = judged[asked == a]
        row = {"asked": name, **{f"judged {n}": int((sel == j).sum()) for j, n in enumerate(names)}}
        row["judged none"] = int((sel < 0).sum())
        rows.append(row)
    return rows


def measure_train_speed(r: ch03.VideoRecipe, cond, steps: int = 6) -> float:
    """Training steps per second of the recipe (fresh model, real batches, AdamW), after one warm-up step."""
    data = ch03.training_data(r, cond)
    batch_fn, loss_fn = ch03.make_batch_fn(r, data), ch03.loss_fn_for(r, ch03.schedule_for(r), cond.null_features())
    return 1.0 / time_train_step(ch03.build_model(r, cond.dim), batch_fn, loss_fn, steps, lr=r.lr)


HEADLINE = ("heldout_color_acc", "heldout_shape_acc", "heldout_size_acc", "heldout_motion_acc",
            "heldout_temporal_consistency", "heldout_flicker", "heldout_validity", "train_minutes",
            "direction_loss_gap", "flow_direction_loss_gap", "text_direction_i2t")


def _main(p: ch03.Ch03Preset, seed: int, judge: Judge):
    """Train (or load) one seed's model, judge it on the chapter's held-out prompts (the same for every seed;
    the sampling noise follows the seed): (figures, model, schedule, cond, prompts, clips, judged row, reliance)."""
    r = p.video
    model, schedule, cond, state = ch03.train_video(p, seed, progress=True)
    figs = {"train_steps": r.steps}
    # the video model's own training run, as recorded beside its checkpoint (not the text encoder's, which a new
    # seed trains first); a model trained with another thread count is not timed here
    if (rec := training_record(ch03.checkpoint_path(p, seed))).get("threads") == torch.get_num_threads():
        figs["train_steps_per_s"] = rec["steps_per_s"]
        figs["train_minutes"] = rec["train_wall_s"] / 60
    prompts = heldout_prompts(p.eval_samples, r)
    x = ch03.generate(model, schedule, cond, prompts["captions"], p.guidance, objective=r.objective,
                      steps=p.eval_steps, seed=seed, frames=r.frames, size=r.size)
    main = judged(judge, x, prompts["labels"])
    figs.update({f"heldout_{k}": v for k, v in main.items()})
    # how much the denoiser listens to the caption's direction: its loss with the direction flipped minus with
    # the clip's own caption (on the flow channels where the recipe has them) - per seed, beside motion_acc
    rel = direction_reliance(model, schedule, cond, n=min(p.eval_samples, 128), objective=r.objective,
                             frames=r.frames, size=r.size, seed=seed)
    figs["direction_loss_gap"] = rel["gap"]
    # ... and whether its frozen text encoder can say which way at all: how often the caption a held-out clip
    # retrieves names its direction (chapter 02's retrieval; 0.36 for one seed on another machine, section 6)
    text, (tok, clip) = ch02.get_preset(r.text_preset), ch02.load_clip(r.text_preset, seed, progress=False)
    figs["text_direction_i2t"] = ch02.heldout_direction(clip, tok, text.clip, text.retrieval_batch)
    if "flow_true" in rel:
        figs["flow_direction_loss_gap"] = rel["flow_flipped"] - rel["flow_true"]
    return figs, model, schedule, cond, prompts, x, main, rel


def headline(preset: str = "smoke", seed: int = 0) -> dict:
    """One training seed's model (its own chapter-02 text encoder too), judged: {"heldout_*", "train_minutes"}."""
    return _main(ch03.get_preset(preset), seed, Judge())[0]


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch03.get_preset(preset)
    r = p.video
    judge = Judge()
    figures, tables = {}, {}

    # main model (cached) + its training speed, judged on the held-out prompts
    figs, model, schedule, cond, prompts, x, main, rel = _main(p, seed, judge)
    figures.update(figs)
    sps = measure_train_speed(r, cond, steps=2 if p.name == "smoke" else 10)
    figures["train_steps_per_s_measured"] = sps
    figures["train_minutes_projected"] = r.steps / sps / 60
    tables["cost"] = _cost_rows(r, cond.dim)
    fact, full = tables["cost"][0], tables["cost"][1]
    figures["flops_ratio_full_over_factorized"] = full["GFLOPs/clip"] / fact["GFLOPs/clip"]
    figures["params_ratio_full_over_factorized"] = full["params"] / fact["params"]

    # held-out quality (the real clips of the same prompts, for reference)
    real = judged(judge, prompts["x"], prompts["labels"])
    tables["heldout"] = [{"samples": f"model (joint, {r.steps} steps)", **main},
                         {"samples": "real held-out clips", **real}]
    figures["heldout_frechet"] = judge.frechet(prompts["x"], x)
    tables["direction_confusion"] = direction_confusion(judge.predict(x)["direction"], prompts["labels"]["direction"])
    figures["loss_own_captions"], figures["loss_direction_flipped"] = rel["true"], rel["flipped"]
    if "flow_true" in rel:
        figures["flow_loss_own_captions"] = rel["flow_true"]
        figures["flow_loss_direction_flipped"] = rel["flow_flipped"]

    # sampling time per clip
    rows = []
    for steps in p.timing_steps:
        t0 = time.perf_counter()
        ch03.generate(model, schedule, cond, prompts["captions"][:p.timing_clips], p.guidance, objective=r.objective,
                      steps=steps, seed=seed, frames=r.frames, size=r.size, progress=False)
        per = (time.perf_counter() - t0) / p.timing_clips
        figures[f"ddim{steps}_s_per_clip"] = per
        rows.append({"sampler": f"DDIM-{steps} + CFG", "clips per batch": p.timing_clips, "s/clip": per})
    tables["sampling"] = rows

    # ablation: joint image-video training vs video only, same budget; at the full budget the joint arm
    # is the main model (same recipe, same checkpoint, same prompts), so only the video-only arm trains
    rows = []
    steps = p.ablation_steps or r.steps
    sub = prompts if p.ablation_samples is None else heldout_prompts(p.ablation_samples, r, seed + 1)
    for joint in (True, False):
        rec = replace(r, joint=joint, steps=steps)
        if rec == r and sub is prompts:
            row = main
        else:
            m, sch, c, _ = ch03.train_video(p, seed, progress=True, recipe=rec)
            xa = ch03.generate(m, sch, c, sub["captions"], p.guidance, objective=r.objective, steps=p.eval_steps,
                               seed=seed, frames=r.frames, size=r.size)
            row = judged(judge, xa, sub["labels"])
        frames_seen = (r.batch_size - (r.image_items if joint else 0), r.image_items if joint else 0)
        rows.append({"training": "joint video + images" if joint else "video only",
                     "steps": steps, "clips/images items per batch": f"{frames_seen[0]}/{frames_seen[1]}", **row})
        for k in ("color_acc", "shape_acc", "motion_acc", "validity"):
            figures[f"ablation_{'joint' if joint else 'video_only'}_{k}"] = row.get(k, float("nan"))
    tables["ablation"] = rows

    # ablation: motion channels or not, the full budget (at the short one neither arm draws valid clips yet)
    if r.motion_channels:
        rec = replace(r, motion_channels=False)
        m, sch, c, _ = ch03.train_video(p, seed, progress=True, recipe=rec)
        xm = ch03.generate(m, sch, c, prompts["captions"], p.guidance, objective=r.objective, steps=p.eval_steps,
                           seed=seed, frames=r.frames, size=r.size)
        row = judged(judge, xm, prompts["labels"])
        rel_m = direction_reliance(m, sch, c, n=min(p.eval_samples, 128), objective=r.objective,
                                        frames=r.frames, size=r.size, seed=seed)
        tables["motion_ablation"] = [
            {"model": f"with motion channels (the recipe), {r.steps} steps", **main,
             "loss own / flipped captions": f"{rel['true']:.4f} / {rel['flipped']:.4f}"},
            {"model": f"RGB only, {r.steps} steps", **row,
             "loss own / flipped captions": f"{rel_m['true']:.4f} / {rel_m['flipped']:.4f}"}]
        for k in ("motion_acc", "shape_acc", "temporal_consistency", "validity"):
            figures[f"motion_ablation_rgb_only_{k}"] = row[k]
        figures["motion_ablation_rgb_only_loss_gap"] = rel_m["gap"]

    # ablation: the schedule shift - unshifted at several seeds, larger shifts at one (the recipe's own rows are the
    # seeds table); each arm judged on the same prompts with its seed's sampling noise, like the main model
    if p.shift_ablation:
        tables["shift_ablation"] = rows = []
        for shift, s in p.shift_ablation:
            m, sch, c, _ = ch03.train_video(p, s, progress=True, recipe=replace(r, schedule_shift=shift))
            xs = ch03.generate(m, sch, c, prompts["captions"], p.guidance, objective=r.objective,
                               steps=p.eval_steps, seed=s, frames=r.frames, size=r.size)
            rel_s = direction_reliance(m, sch, c, n=min(p.eval_samples, 128), objective=r.objective,
                                       frames=r.frames, size=r.size, seed=s)
            rows.append({"schedule_shift": shift, "seed": s, **judged(judge, xs, prompts["labels"]),
                         "direction_loss_gap": rel_s["gap"],
                         "flow_direction_loss_gap": rel_s.get("flow_flipped", float("nan")) - rel_s.get("flow_true", 0.0)})
        unshifted = [row for row in rows if row["schedule_shift"] == 1.0]
        for k in ("motion_acc", "shape_acc", "temporal_consistency", "validity") if unshifted else ():
            figures[f"shift_ablation_unshifted_{k}_min"] = min(row[k] for row in unshifted)
            figures[f"shift_ablation_unshifted_{k}_mean"] = sum(row[k] for row in unshifted) / len(unshifted)
    return {"figures": figures, "tables": tables}
