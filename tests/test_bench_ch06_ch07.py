"""The chapter 06 (Video LDM) and chapter 07 (causal video VAE) benchmarks, smoke size: every figure the issues
name is recorded and in range, the tables hold the expected rows, and `headline` gives the per-seed figures."""
import warnings
from types import SimpleNamespace

import pytest
import torch

from minivid.bench import ch06 as bench06
from minivid.bench import ch06_ablations as abl06
from minivid.bench import ch07 as bench07
from minivid.bench import run_bench
from minivid.bench.ch03 import heldout_prompts
from minivid.eval import Judge
from minivid.models.alignment import AlignmentLayer
from minivid.pipelines import ch06, ch07

pytestmark = pytest.mark.usefixtures("one_thread")

JUDGED = ("color_acc", "shape_acc", "size_acc", "motion_acc", "temporal_consistency", "validity")


def _bench(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_bench(name, "smoke")


def _fractions(figures, names):
    for k in names:
        assert 0 <= figures[k] <= 1, (k, figures[k])


def test_bench_ch06_smoke_reports_what_the_issue_names():
    p = ch06.get_preset("smoke")
    rec = _bench("ch06")
    f, t = rec["figures"], rec["tables"]
    for k in (*bench06.HEADLINE, "heldout_flicker_real", "heldout_frechet", "recon_color_acc", "recon_shape_acc",
              "recon_size_acc", "real_frames_attr_acc", "latent_scale_factor", "stage_train_minutes_max",
              "video_alpha_mean", "decoder_alpha_mean", "latent_train_step_s", "pixel_train_step_s",
              "latent_sample_s_per_clip", "latent_decode_s_per_clip", "pixel_sample_s_per_clip"):
        assert k in f, k
    _fractions(f, [f"heldout_{k}" for k in JUDGED] + ["recon_attr_acc", "recon_color_acc", "real_frames_attr_acc",
                                                        "video_alpha_min", "video_alpha_max", "decoder_alpha_mean"])
    assert f["heldout_flicker"] >= 0 and f["heldout_flicker_frame_decoder"] >= 0 and f["heldout_flicker_real"] >= 0
    assert f["recon_psnr"] > 0 and f["latent_scale_factor"] > 0
    assert f["train_minutes"] == pytest.approx(sum(f[f"{s}_train_minutes"] for s in ch06.STAGES))
    assert [r["training"] for r in t["training"]] == list(bench06.TRAININGS.values())
    assert [r["steps"] for r in t["training"]] == [getattr(p, s).steps for s in ch06.STAGES]

    auto = t["autoencoder"]
    assert [r["frames"] for r in auto] == ["reconstructed (posterior mean)", "real held-out frames"]
    assert auto[1]["attr_acc"] == 1.0, "the judge reads real held-out frames perfectly"
    assert [r["clips"].split(",")[0] for r in t["heldout"]] == ["Video LDM", "the same latents", "real held-out clips"]
    assert t["heldout"][2]["color_acc"] == 1.0 and t["heldout"][0]["flicker"] == f["heldout_flicker"]

    video, dec = ch06.load_video("smoke", progress=False).model, ch06.load_decoder("smoke", progress=False)
    blocks = [m for net in (video, dec) for m in net.modules() if isinstance(m, AlignmentLayer)]
    assert len(t["alphas"]) == len(blocks) and all(0 < r["alpha"] < 1 for r in t["alphas"])
    assert {r["model"] for r in t["alphas"]} == {"latent video U-Net", "temporal decoder"}

    cost = t["cost"]
    assert [r["diffusion"].split(":")[0] for r in cost] == ["latent", "pixel space"]
    assert cost[0]["denoises"] == f"4x{p.video.frames}x8x8 latents" and cost[1]["denoises"] == f"3x{p.video.frames}x32x32 pixels"
    assert all(r["train step s"] > 0 and r["sample s/clip"] > 0 and r["GFLOPs/step"] > 0 for r in cost)
    assert cost[0]["trainable"] < cost[0]["params"], "only the temporal layers train"

    heads = bench06.headline("smoke", 0)                          # the per-seed figures of `--seeds N`
    assert set(heads) == set(bench06.HEADLINE) and heads["recon_psnr"] == f["recon_psnr"]


def test_ch06_direction_ablation_arms_change_only_the_motion_fix_and_per_direction_reads_real_clips():
    """Each arm is the preset with the three motion-fix options set its way (the smoke preset's head size kept), the
    last arm is the recipe itself, no two arms share a checkpoint; real clips move every asked way (1.0 each), and
    a clip judged the wrong way counts against its asked direction only."""
    for name in ("smoke", "full"):
        p = ch06.get_preset(name)
        presets = [abl06.arm_preset(p, o) for o in abl06.ARMS.values()]
        assert presets[-1] is p
        assert len({ch06.checkpoint_path("video", q, 1) for q in presets}) == len(presets)
        for q, o in zip(presets[:-1], list(abl06.ARMS.values())[:-1]):
            a = q.video.alignment
            assert {k: a.get(k) for k in o["alignment"]} == o["alignment"] and q.video.t_shift == o["t_shift"]
            assert not any(a.get(k) for k in abl06.FIX if k not in o["alignment"])
            assert a.get("head_dim") == p.video.alignment.get("head_dim")
    prompts = heldout_prompts(32, SimpleNamespace(size=32, frames=8))
    real = abl06.per_direction(Judge(), prompts["x"], prompts["labels"])
    assert set(real) == {f"{d}_acc" for d in ("left", "right", "up", "down")} and all(v == 1 for v in real.values())
    flipped = abl06.per_direction(Judge(), prompts["x"].flip(2), prompts["labels"])    # played backwards
    assert all(v == 0 for v in flipped.values())


def test_bench_ch07_smoke_reports_what_the_issue_names():
    p = ch07.get_preset("smoke")
    rec = _bench("ch07")
    f, t = rec["figures"], rec["tables"]
    for k in (*bench07.HEADLINE, "real_flicker", "latent_values", "frame_vae_latent_values", "recon_chunked_max_abs_diff",
              "decode_chunked_max_abs_diff", "recon_flicker_over_real"):
        assert k in f, k
    for pre in ("recon", "frame_vae_recon"):
        _fractions(f, [f"{pre}_{k}" for k in JUDGED])
        assert f[f"{pre}_psnr"] > 0 and f[f"{pre}_flicker"] >= 0
    assert f["latent_values"] == 1280 and f["frame_vae_latent_values"] == 1360, "the matched budget"
    assert f["recon_chunked_max_abs_diff"] < 1e-4 and f["decode_chunked_max_abs_diff"] < 1e-4, "chunked == whole"

    rows = t["reconstruction"]
    assert [r["autoencoder"] for r in rows] == [*bench07.NAMES.values(), "real held-out clips (reference)"]
    assert [r["latents (c x n x h x w)"] for r in rows[:2]] == ["4x5x8x8", "5x17x4x4"]
    assert rows[2]["color_acc"] == 1.0 and rows[2]["flicker"] == f["real_flicker"]

    combos = t["shape_by_combination"]
    assert sum(r["clips"] for r in combos) == bench07.SETTINGS["smoke"]["clips"]
    assert all(set(r) == {"combination", "clips", "recon shape_acc", "frame_vae_recon shape_acc"} for r in combos)

    dec = t["decoding"]
    frames = bench07.SETTINGS["smoke"]["decode_frames"]
    assert [(r["frames"], r["decoding"].split()[0]) for r in dec] == [(T, m) for T in frames for m in ("whole", "chunks")]
    assert all(r["ms"] > 0 and r["peak MiB"] > 0 and "failed" not in r for r in dec)
    assert [r["latent frames"] for r in dec[::2]] == [1 + (T - 1) // 4 for T in frames]
    longest = frames[-1]
    assert f[f"decode{longest}_chunked_peak_mib"] < f[f"decode{longest}_whole_peak_mib"], "chunks bound the memory"

    heads = bench07.headline("smoke", 0)
    assert set(heads) == set(bench07.HEADLINE) and heads["recon_psnr"] == f["recon_psnr"]
    assert p.vae.frames == 17


def test_shape_accuracy_by_combination_counts_each_combination_apart():
    labels = {"color": torch.tensor([3, 3, 0, 3]), "shape": torch.tensor([1, 1, 1, 1]),
              "size": torch.tensor([0, 0, 1, 1])}
    ok = {"a": torch.tensor([True, False, True, True]), "b": torch.tensor([False, False, False, True])}
    rows = bench07.by_combination(labels, ok)
    assert rows == [{"combination": "red big square", "clips": 1, "a shape_acc": 1.0, "b shape_acc": 0.0},
                    {"combination": "cyan small square", "clips": 2, "a shape_acc": 0.5, "b shape_acc": 0.0},
                    {"combination": "cyan big square", "clips": 1, "a shape_acc": 1.0, "b shape_acc": 1.0}]

