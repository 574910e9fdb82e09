"""Chapter 07 benchmark: the 3-D causal video VAE of CogVideoX (Yang et al. 2024, arXiv:2408.06072) against a
per-frame image VAE given the same latent budget per clip.

`python -m minivid bench ch07 --preset full --seeds 3`:
* headline (every seed): each autoencoder's recorded training minutes (`train_minutes`: the causal video VAE, the
  chapter's training; `frame_vae_train_minutes`: the baseline, trained for the same time); on 256 held-out 17-frame
  32x32 clips (held-out attribute combinations), each one's reconstructions (posterior mean, whole clips): PSNR,
  flicker beside the real clips', and the judge's colour, shape, size and motion direction on them; the numbers each
  keeps of a clip (`latent_values`);
* which clips fail (seed 0): each autoencoder's shape accuracy per held-out (colour, shape, size) combination;
* chunked == whole: the largest difference between chunked and whole reconstructions of the held-out clips;
* decoding long clips (one seed): time and peak memory of the causal VAE's decoder on 17, 65 and 257 frames
  (5, 17, 65 latent frames), whole against chunk by chunk with the conv cache (8 frames, 2 latent frames, a chunk:
  the chapter's `reconstruct(vae, clips, chunk_frames=8)`). Time: the fastest of interleaved rounds; memory: the
  peak of the bytes PyTorch's CPU allocator holds during the decode call beyond those live before it, the output
  included (`minivid.bench.ops.peak_extra_bytes`: torch.profiler's memory events; tracemalloc cannot see tensors).
  A decode that fails (out of memory) is recorded with null time and memory and the reason.
"""
from __future__ import annotations

import time

import torch

from minivid.bench import judged, mean_psnr, recorded_minutes
from minivid.bench.ch03 import heldout_prompts
from minivid.bench.ops import MiB, peak_extra_bytes, time_side_by_side
from minivid.data.world import COLORS, SHAPES, SIZES
from minivid.eval import Judge
from minivid.models.video_vae import latent_frames
from minivid.pipelines import ch07
from minivid.utils import make_generator

HEADLINE = ("recon_psnr", "recon_flicker", "recon_color_acc", "recon_shape_acc", "recon_size_acc", "recon_motion_acc",
            "frame_vae_recon_psnr", "frame_vae_recon_flicker", "frame_vae_recon_color_acc",
            "frame_vae_recon_shape_acc", "frame_vae_recon_size_acc", "frame_vae_recon_motion_acc", "train_minutes",
            "frame_vae_train_minutes")
SETTINGS = {"smoke": dict(clips=4, decode_frames=(9, 17), chunk_frames=8, rounds=1, chunk_check=2),
            "full": dict(clips=256, decode_frames=(17, 65, 257), chunk_frames=8, rounds=3, chunk_check=16)}
NAMES = {"vae": "causal video VAE (CogVideoX)", "frame_vae": "per-frame VAE (chapter 06's kind), same budget"}
PREFIX = {"vae": "recon", "frame_vae": "frame_vae_recon"}


def by_combination(labels: dict, correct: dict[str, torch.Tensor]) -> list[dict]:
    """One row per (colour, shape, size) combination among the clips: how many, and for each autoencoder (correct:
    {name: (N,) bool, the judge read the shape right}) the fraction of its reconstructions whose shape is right."""
    combos = torch.stack([torch.as_tensor(labels[k]) for k in ("color", "shape", "size")], dim=1)   # (N, 3)
    rows = []
    for c, s, z in combos.unique(dim=0).tolist():
        sel = (combos == torch.tensor([c, s, z])).all(dim=1)
        rows.append({"combination": f"{COLORS[c]} {SIZES[z]} {SHAPES[s]}", "clips": int(sel.sum()),
                     **{f"{name} shape_acc": ok[sel].float().mean().item() for name, ok in correct.items()}})
    return rows


def _main(p: ch07.Ch07Preset, seed: int, judge: Judge, n: int):
    """Train (or load) one seed's two autoencoders, reconstruct the held-out clips (the same for every seed), judge:
    (figures, reconstruction rows, shape accuracy by combination, the video VAE, the clips)."""
    models = {"vae": ch07.load_vae(p, seed), "frame_vae": ch07.train_frame_vae(p, seed)[0]}
    clips = heldout_prompts(n, p.vae)                              # 17 frames at 32x32: the recipe's clips
    x, labels = clips["x"], clips["labels"]
    real = judged(judge, x, labels)
    figs, rows, correct = {"real_flicker": real["flicker"]}, [], {}
    for what, vae in models.items():
        r = getattr(p, what)
        rec = ch07.reconstruct(vae, x)
        row = {"PSNR dB": mean_psnr(rec, x), **judged(judge, rec, labels)}
        correct[PREFIX[what]] = judge.score(rec, labels)["per_sample"]["shape_correct"]   # the same reading, cached
        minutes = recorded_minutes(ch07.checkpoint_path(what, p, seed))
        rows.append({"autoencoder": NAMES[what], "latents (c x n x h x w)": "x".join(map(str, ch07.latent_shape(r))),
                     "values per clip": ch07.latent_values(r), "train minutes": minutes, **row})
        figs.update({f"{PREFIX[what]}_{k}": v for k, v in row.items() if k != "PSNR dB"})
        figs[f"{PREFIX[what]}_psnr"] = row["PSNR dB"]
        figs["latent_values" if what == "vae" else "frame_vae_latent_values"] = ch07.latent_values(r)
        if minutes is not None:
            figs["train_minutes" if what == "vae" else "frame_vae_train_minutes"] = minutes
    rows.append({"autoencoder": "real held-out clips (reference)", **real})
    return figs, rows, by_combination(labels, correct), models["vae"], x


def headline(preset: str = "smoke", seed: int = 0) -> dict:
    """One training seed's two autoencoders on the held-out clips: {"recon_*", "frame_vae_recon_*", "*train_minutes"}."""
    p = ch07.get_preset(preset)
    figs = _main(p, seed, Judge(), SETTINGS[p.name]["clips"])[0]
    return {k: v for k, v in figs.items() if k in HEADLINE}


def decode_cost(vae, frames, chunk_frames: int, rounds: int, size: int, seed: int = 0) -> tuple[list[dict], dict]:
    """Whole vs chunked decoding of one clip of each length in `frames` (random latents: the cost does not depend on
    them): rows {"frames", "latent frames", "decoding", "ms", "peak MiB", "peak vs whole"} and figures."""
    cfg = vae.cfg
    chunk = chunk_frames // cfg.time_factor
    h = size // cfg.spatial_factor
    rows, figs, diffs = [], {}, []
    for T in frames:
        z = torch.randn(1, cfg.latent_channels, latent_frames(T, cfg.time_factor), h, h, generator=make_generator(seed))

        def whole(z=z):
            with torch.no_grad():
                return vae.decode(z)

        def chunked(z=z):
            return vae.decode_chunked(z, chunk)

        fns, out, failed = {"whole": whole, "chunked": chunked}, {}, {}
        for mode, fn in fns.items():
            try:
                out[mode] = fn()
            except (RuntimeError, MemoryError) as e:            # e.g. out of memory: recorded, not fatal
                failed[mode] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        ok = {m: f for m, f in fns.items() if m not in failed}
        secs = time_side_by_side(ok, rounds) if ok else {}
        peak = {m: peak_extra_bytes(f) / MiB for m, f in ok.items()}
        if len(out) == 2:
            diffs.append((out["whole"] - out["chunked"]).abs().max().item())
        for mode in fns:
            label = "whole" if mode == "whole" else f"chunks of {chunk} latent frames ({chunk_frames} frames)"
            row = {"frames": T, "latent frames": z.shape[2], "decoding": label,
                   "ms": 1e3 * secs[mode] if mode in secs else None, "peak MiB": peak.get(mode),
                   "peak vs whole": peak[mode] / peak["whole"] if mode in peak and "whole" in peak else None}
            if mode in failed:
                row["failed"] = failed[mode]
            rows.append(row)
            if mode in peak:
                figs[f"decode{T}_{mode}_ms"], figs[f"decode{T}_{mode}_peak_mib"] = row["ms"], row["peak MiB"]
        if len(peak) == 2:
            figs[f"decode{T}_chunked_mem_vs_whole"] = peak["chunked"] / peak["whole"]
    if diffs:
        figs["decode_chunked_max_abs_diff"] = max(diffs)
    return rows, figs


def run(preset: str = "smoke", seed: int = 0) -> dict:
    p = ch07.get_preset(preset)
    cfg = SETTINGS[p.name]
    judge = Judge()
    t_start = time.perf_counter()
    figures, rows, combos, vae, x = _main(p, seed, judge, cfg["clips"])
    tables = {"reconstruction": rows, "shape_by_combination": combos}
    figures["recon_flicker_over_real"] = figures["recon_flicker"] / max(figures["real_flicker"], 1e-8)
    figures["frame_vae_recon_flicker_over_real"] = figures["frame_vae_recon_flicker"] / max(figures["real_flicker"], 1e-8)

    # chunk by chunk with the conv cache: the same reconstructions as whole clips
    sub = x[:cfg["chunk_check"]]
    figures["recon_chunked_max_abs_diff"] = (ch07.reconstruct(vae, sub, chunk_frames=cfg["chunk_frames"])
                                             - ch07.reconstruct(vae, sub)).abs().max().item()

    tables["decoding"], figs = decode_cost(vae, cfg["decode_frames"], cfg["chunk_frames"], cfg["rounds"], p.vae.size,
                                           seed)
    figures.update(figs)
    figures["bench_wall_minutes"] = (time.perf_counter() - t_start) / 60
    return {"figures": figures, "tables": tables}


__all__ = ["HEADLINE", "headline", "by_combination", "decode_cost", "run"]
