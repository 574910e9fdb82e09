"""Chapter 06 benchmark: Video LDM on Shapes World (Blattmann et al. 2023, arXiv:2304.08818; latent diffusion:
Rombach et al. 2022, arXiv:2112.10752).

`python -m minivid bench ch06 --preset full --seeds 3`:
* headline (every seed): the four trainings - autoencoder, latent image model, temporal layers, decoder fine-tune -
  each one's steps and recorded training minutes (`train_minutes`: all four); the autoencoder's reconstructions
  (posterior mean) of held-out 32x32 frames: PSNR, and the judge's colour, shape and size on them (`recon_attr_acc`:
  all three right), beside the real frames' own; 256 held-out prompts (held-out attribute combinations, chapter 03's
  draw), their 32x32 clips judged: colour, shape, size, motion direction, temporal consistency, validity, flicker -
  decoded by the fine-tuned decoder, and the *same* latents by the per-frame decoder
  (`heldout_flicker_frame_decoder`), beside the real clips' flicker;
* a guidance sweep (one seed): motion direction and flicker against the guidance scale;
* the latent scale factor; the learned alpha of every temporal block, in the video U-Net and in the decoder;
* cost (one seed): latent against pixel-space video diffusion at 32x32 - the temporal-layer training of this chapter
  (8x8 latents) against chapter 05's SSR stage (a 3-D U-Net on the pixels), each step on its own chapter's batches,
  captured and timed as `python -m minivid bench perf` does; and the sampling time per clip of both, the same prompts,
  clip length and DDIM steps (latent: decoding included, and on its own).
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from minivid.bench import judged, mean_psnr, recorded_minutes
from minivid.bench.ch03 import heldout_prompts
from minivid.bench.perf import measure
from minivid.data import sample_batch
from minivid.eval import Judge
from minivid.models.alignment import alphas
from minivid.pipelines import ch05, ch06
from minivid.pipelines.ch05_sr import Stage
from minivid.pipelines.common import capture_training, pretrained, schedule_for, training_record
from minivid.utils import make_generator

HEADLINE = ("heldout_color_acc", "heldout_shape_acc", "heldout_size_acc", "heldout_motion_acc",
            "heldout_temporal_consistency", "heldout_validity", "heldout_flicker", "heldout_flicker_frame_decoder",
            "recon_psnr", "recon_attr_acc", "vae_train_minutes", "latent_train_minutes", "video_train_minutes",
            "decoder_train_minutes", "train_minutes")
TRAININGS = {"vae": "image autoencoder", "latent": "latent text-to-image U-Net", "video": "temporal alignment layers",
             "decoder": "temporal decoder fine-tune"}
SETTINGS = {"smoke": dict(recon_frames=8, timing_clips=2, step_reps=1, guidance=(1.0,)),
            "full": dict(recon_frames=1024, timing_clips=64, step_reps=6, guidance=(1.5, 3.0, 4.5, 6.0))}
ATTRS = ("color", "shape", "size")


def trainings(p: ch06.Ch06Preset, seed: int) -> tuple[dict, list[dict]]:
    """The four trainings as their checkpoints recorded them: ({"<stage>_train_steps", "<stage>_train_minutes",
    "train_minutes" (all four), "stage_train_minutes_max"}, one row each). A checkpoint trained elsewhere has no
    record: no minutes."""
    figs, rows = {}, []
    for stage, name in TRAININGS.items():
        path, r = ch06.checkpoint_path(stage, p, seed), getattr(p, stage)
        rec, minutes = training_record(path), recorded_minutes(path)
        rows.append({"training": name, "steps": rec.get("steps", r.steps), "batch": r.batch_size,
                     "trainable params": rec.get("trainable_params"), "train minutes": minutes,
                     "s/step": 1 / rec["steps_per_s"] if rec.get("steps_per_s") else None, "threads": rec.get("threads")})
        figs[f"{stage}_train_steps"] = rows[-1]["steps"]
        if minutes is not None:
            figs[f"{stage}_train_minutes"] = minutes
    mins = [figs[f"{s}_train_minutes"] for s in TRAININGS if f"{s}_train_minutes" in figs]
    if len(mins) == len(TRAININGS):
        figs.update(train_minutes=sum(mins), stage_train_minutes_max=max(mins))
    return figs, rows


def attributes(judge: Judge, x: torch.Tensor, labels: dict) -> dict:
    """The judge on images: colour, shape, size accuracy, validity, and `attr_acc` (all three right at once)."""
    s = judge.score(x, labels)
    right = torch.stack([s["per_sample"][f"{a}_correct"] for a in ATTRS]).all(0)
    return {"attr_acc": right.float().mean().item(), **{k: s[k] for k in (*(f"{a}_acc" for a in ATTRS), "validity")}}


@torch.no_grad()
def reconstructions(codec: ch06.LatentCodec, n: int, size: int, judge: Judge, batch: int = 256) -> list[dict]:
    """The autoencoder on n held-out frames (the same draw for every seed): rows for its reconstructions (posterior
    mean; PSNR, judged) and the real frames (judged)."""
    b = sample_batch(n, kind="image", split="heldout", size=size, generator=make_generator(31_000))
    x = b["x"]
    rec = torch.cat([codec.decode(codec.encode(x[i:i + batch], sample=False)) for i in range(0, n, batch)])
    rec = rec.clamp(-1, 1)
    return [{"frames": "reconstructed (posterior mean)", "PSNR dB": mean_psnr(rec, x), **attributes(judge, rec, b["labels"])},
            {"frames": "real held-out frames", **attributes(judge, x, b["labels"])}]


def _main(p: ch06.Ch06Preset, seed: int, judge: Judge, recon_frames: int):
    """Train (or load) one seed's four models; measure the autoencoder, judge clips of the held-out prompts:
    (figures, tables, prompts, clips)."""
    ch06.cli_train(p, seed)                                          # the four trainings, each cached
    figs, rows = trainings(p, seed)
    tables = {"training": rows}
    codec = ch06.load_vae(p, seed)
    tables["autoencoder"] = rec, frames = reconstructions(codec, recon_frames, p.vae.size, judge)
    figs.update(recon_psnr=rec["PSNR dB"], **{f"recon_{k}": v for k, v in rec.items() if k.endswith("_acc")},
                real_frames_attr_acc=frames["attr_acc"], latent_scale_factor=codec.scale)

    # chapter 03's held-out draw (its helper reads only .size and .frames) at this chapter's clip shape; the same
    # latents through both decoders
    prompts = heldout_prompts(p.eval_samples, SimpleNamespace(size=p.vae.size, frames=p.video.frames))
    x, z = ch06.generate(prompts["captions"], preset=p, seed=seed, model_seed=seed, steps=p.eval_steps,
                         return_latents=True)
    gen = judged(judge, x, prompts["labels"])
    per_frame = judged(judge, codec.decode(z).clamp(-1, 1), prompts["labels"])
    real = judged(judge, prompts["x"], prompts["labels"])
    figs.update({f"heldout_{k}": v for k, v in gen.items()})
    figs.update(heldout_flicker_frame_decoder=per_frame["flicker"], heldout_flicker_real=real["flicker"])
    tables["heldout"] = [{"clips": f"Video LDM, fine-tuned temporal decoder ({p.eval_steps} DDIM steps)", **gen},
                         {"clips": "the same latents, per-frame decoder", **per_frame},
                         {"clips": "real held-out clips", **real}]
    return figs, tables, prompts, x


def headline(preset: str = "smoke", seed: int = 0) -> dict:
    """One training seed's four models, measured and judged: {"heldout_*", "recon_*", "*train_minutes"}."""
    p = ch06.get_preset(preset)
    figs = _main(p, seed, Judge(), SETTINGS[p.name]["recon_frames"])[0]
    return {k: v for k, v in figs.items() if k in HEADLINE}


def alpha_rows(p: ch06.Ch06Preset, seed: int) -> list[dict]:
    """The learned alpha of every temporal block: {"model", "after block" (the spatial block it follows), "alpha"}
    (1: the spatial output only, 0: the temporal layers' only)."""
    models = {"latent video U-Net": ch06.load_video(p, seed, progress=False).model,
              "temporal decoder": ch06.load_decoder(p, seed, progress=False)}
    return [{"model": m, "after block": name.removesuffix("_align"), "alpha": a}
            for m, net in models.items() for name, a in alphas(net).items()]


@torch.no_grad()
def guidance_rows(p: ch06.Ch06Preset, seed: int, prompts: dict, judge: Judge, scales) -> list[dict]:
    """The guidance sweep (one seed): the held-out prompts sampled at each scale, the same noise; judged as decoded
    by the fine-tuned decoder, with the per-frame decoder's flicker of the same latents beside it."""
    codec, rows = ch06.load_vae(p, seed, progress=False), []
    for w in scales:
        x, z = ch06.generate(prompts["captions"], preset=p, seed=seed, model_seed=seed, steps=p.eval_steps,
                             guidance=w, return_latents=True, progress=False)
        rows.append({"guidance": w, **judged(judge, x, prompts["labels"]),
                     "flicker, per-frame decoder": judged(judge, codec.decode(z).clamp(-1, 1))["flicker"]})
    return rows


def _captured(train, desc: str):
    """The training setup `train()` asks for whose label starts with `desc` (under `capture_training`: nothing
    trains; a finished checkpoint is loaded as usual)."""
    with capture_training() as got:
        train()
    return next(s for s in got if s.desc.startswith(desc))


def _clip(shape) -> str:
    return "x".join(map(str, shape))


def cost(p: ch06.Ch06Preset, seed: int, prompts: dict, cfg: dict) -> tuple[list[dict], dict]:
    """Latent vs pixel-space video diffusion at 32x32: a training step (perf's measure: parameters, GFLOPs, median
    step seconds) and sampling seconds per clip (the same prompts, clip length, DDIM steps and batch; models loaded
    beforehand), for this chapter's temporal layers and chapter 05's SSR stage."""
    p5 = ch05.get_preset(p.name)
    latent = _captured(lambda: ch06.train_video(p, seed, progress=False), "ch06 temporal alignment layers")
    pixel = _captured(lambda: ch05.train_stage(p5, "ssr", seed, progress=False), "ch05 SSR")
    steps = {}
    for key, setup in (("latent", latent), ("pixel", pixel)):
        row, _ = measure(setup, cfg["step_reps"], profile_steps=1, top=1)
        steps[key] = {"train batch": _clip(setup.batch_fn(0, make_generator(0))["x"].shape), **{
            k: row[k] for k in ("params", "trainable", "GFLOPs/step")}, "train step s": row["step s"]}

    # sampling, the models loaded first: `ch06.generate`'s DDIM on latents, then its temporal decoder
    n = min(cfg["timing_clips"], len(prompts["captions"]))
    caps = prompts["captions"][:n]
    video, codec = ch06.load_video(p, seed, progress=False), ch06.load_vae(p, seed, progress=False)
    dec = ch06.load_decoder(p, seed, progress=False)
    t0 = time.perf_counter()
    z = ch06.sample_latents(p, video, codec, caps, frames=p.video.frames, steps=p.eval_steps, seed=seed,
                            progress=False)
    t1 = time.perf_counter()
    x = codec.decode(z, dec).clamp(-1, 1)
    decode_s = (time.perf_counter() - t1) / n
    latent_s = (time.perf_counter() - t0) / n
    stage = Stage(pixel.model.eval(), schedule_for(pixel.recipe), pixel.recipe)
    cond = pretrained("ch02.conditioner", pixel.recipe.text_preset, seed, progress=False)
    low = F.avg_pool3d(prompts["x"][:n], (1, 2, 2))                 # the real clips at 16x16: what the SSR reads
    t0 = time.perf_counter()
    ch05.run_stage(stage, cond, caps, low, guidance=p5.guidance[2], steps=p.eval_steps, seed=seed,
                   aug_level=p5.aug_level if pixel.recipe.aug else 0, progress=False)
    pixel_s = (time.perf_counter() - t0) / n
    rows = [{"diffusion": "latent: temporal layers on the frozen latent U-Net (this chapter)",
             "denoises": f"{_clip(z.shape[1:])} latents", **steps["latent"], "sample s/clip": latent_s,
             "of which decoding": decode_s},
            {"diffusion": "pixel space: chapter 05's SSR stage (3-D U-Net)",
             "denoises": f"{_clip(x.shape[1:])} pixels", **steps["pixel"], "sample s/clip": pixel_s}]
    figs = {"latent_train_step_s": steps["latent"]["train step s"], "pixel_train_step_s": steps["pixel"]["train step s"],
            "latent_gflops_per_step": steps["latent"]["GFLOPs/step"],
            "pixel_gflops_per_step": steps["pixel"]["GFLOPs/step"], "latent_sample_s_per_clip": latent_s,
            "latent_decode_s_per_clip": decode_s, "pixel_sample_s_per_clip": pixel_s,
            "sample_time_pixel_over_latent": pixel_s / latent_s}
    return rows, figs


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch06.get_preset(preset)
    cfg = SETTINGS[p.name]
    judge = Judge()
    t_start = time.perf_counter()
    figures, tables, prompts, x = _main(p, seed, judge, cfg["recon_frames"])
    figures["heldout_frechet"] = judge.frechet(prompts["x"], x)

    tables["guidance"] = guidance_rows(p, seed, prompts, judge, cfg["guidance"])
    tables["alphas"] = rows = alpha_rows(p, seed)
    for tag, model in (("video", "latent video U-Net"), ("decoder", "temporal decoder")):
        a = [r["alpha"] for r in rows if r["model"] == model]
        figures.update({f"{tag}_alpha_mean": sum(a) / len(a), f"{tag}_alpha_min": min(a), f"{tag}_alpha_max": max(a)})

    tables["cost"], figs = cost(p, seed, prompts, cfg)
    figures.update(figs)
    figures["bench_wall_minutes"] = (time.perf_counter() - t_start) / 60
    return {"figures": figures, "tables": tables}


__all__ = ["HEADLINE", "trainings", "attributes", "reconstructions", "headline", "guidance_rows", "alpha_rows", "cost",
           "run"]
