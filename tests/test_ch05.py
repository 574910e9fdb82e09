"""Chapter 05, Imagen Video (arXiv:2210.02303): the cascade's stage inputs, noise-conditioning augmentation
(arXiv:2106.15282), guidance, checkpoint keys, and the cascade end to end (smoke size)."""
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from minivid.compare import assert_close
from minivid.data import WorldConfig, velocity
from minivid.diffusion import ddim_sample, make_schedule, q_sample
from minivid.exercises import ch05 as checks
from minivid.models.blocks import fold_frames
from minivid.models.unet3d import unet3d_config
from minivid.pipelines import ch05
from minivid.pipelines.ch05_sr import (
    StageNet,
    StageRecipe,
    augment,
    clip_pool,
    input_channels,
    ssr_input,
    stage_batch_fn,
    stage_world,
    tsr_input,
)
from tiny_models import randomize

D = 8


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _net(kind, fill="repeat", aug=True):
    torch.manual_seed(0)
    cfg = unet3d_config("unet3d-tiny", in_channels=input_channels(kind, fill), out_channels=3, context_dim=D,
                        pooled_dim=D, aug_embedding=aug)
    return StageNet(kind, cfg, fill).eval()


def _text(B, L=5):
    return {"context": _rand(B, L, D, seed=3), "context_mask": torch.ones(B, L, dtype=torch.bool),
            "pooled": _rand(B, D, seed=4)}


class _Cond:
    """A stand-in text conditioner: fixed features per prompt, "" the null caption."""
    dim = D

    def __call__(self, prompts):
        feats = [_text(1, 4) if p else {"context": torch.zeros(1, 4, D), "context_mask": torch.zeros(1, 4, dtype=torch.bool),
                                        "pooled": torch.zeros(1, D)} for p in prompts]
        return {k: torch.cat([f[k] for f in feats]) for k in feats[0]}

    def null(self, n):
        return self([""] * n)


# ----------------------------------------------------------------------------- the exercises (pure functions)

@pytest.mark.exercise("5.1")
def test_tsr_input_layout_repeat_and_blank_with_mask():
    assert checks.check_tsr_input()
    x_t, low = _rand(2, 3, 8, 4, 4, seed=1), torch.arange(4.0).view(1, 1, 4, 1, 1).expand(2, 3, 4, 4, 4)
    rep, blank = tsr_input(x_t, low, "repeat"), tsr_input(x_t, low, "blank")
    assert rep.shape == (2, 6, 8, 4, 4) and blank.shape == (2, 7, 8, 4, 4)
    assert torch.equal(rep[:, :3], x_t) and torch.equal(blank[:, :3], x_t), "x_t first, unchanged"
    assert rep[0, 3, :, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3], "frame 2i and 2i + 1 show low's frame i"
    assert blank[0, 3, :, 0, 0].tolist() == [0, 0, 1, 0, 2, 0, 3, 0], "the frames to invent are blank"
    assert blank[0, 6, :, 0, 0].tolist() == [1, 0, 1, 0, 1, 0, 1, 0], "the mask: 1 = a frame of low"


@pytest.mark.exercise("5.2")
def test_augmentation_level_zero_is_the_clean_clip_and_levels_follow_the_forward_process():
    assert checks.check_augment()
    s = make_schedule("cosine", 1000)
    low, noise = _rand(4, 3, 8, 16, 16, seed=5), _rand(4, 3, 8, 16, 16, seed=6)
    assert torch.equal(augment(low, torch.zeros(4, dtype=torch.long), noise, s), low), "level 0: exactly the clip"
    out = augment(low, torch.tensor([0, 100, 500, 1000]), noise, s)
    err = [(out[i] - low[i]).pow(2).mean().item() for i in range(4)]
    assert err[0] == 0 < err[1] < err[2] < err[3], "more steps, more noise"
    assert abs(out[3].std().item() - 1) < 0.05, "after all T steps: (nearly) pure noise, unit variance"


@pytest.mark.exercise("5.3")
def test_ssr_input_upsamples_every_frame_bilinearly_after_x_t():
    assert checks.check_ssr_input()
    x_t, low = _rand(2, 3, 4, 10, 12, seed=1), _rand(2, 3, 4, 5, 6, seed=2)
    out = ssr_input(x_t, low)
    assert out.shape == (2, 6, 4, 10, 12) and torch.equal(out[:, :3], x_t)
    for t in range(4):                                      # frame by frame, exactly F.interpolate's bilinear
        want = F.interpolate(low[:, :, t], size=(10, 12), mode="bilinear", align_corners=False)
        assert_close(out[:, 3:, t], want, atol=1e-6, rtol=0, name=f"frame {t}")
    flat = torch.full((1, 3, 2, 4, 4), 0.25)
    assert torch.equal(ssr_input(torch.zeros(1, 3, 2, 8, 8), flat)[:, 3:], torch.full((1, 3, 2, 8, 8), 0.25))


def test_checkers_name_the_usual_mistakes():
    with pytest.raises(AssertionError, match="played twice"):
        checks.check_tsr_input(lambda x, low, fill: torch.cat([x, low.repeat(1, 1, 2, 1, 1)], 1) if fill == "repeat"
                               else tsr_input(x, low, fill))
    with pytest.raises(AssertionError, match="level 0 must return the clean clip"):
        checks.check_augment(lambda low, k, n, s: q_sample(low, k.clamp_max(s.T - 1), n, s))
    with pytest.raises(AssertionError, match="nearest-neighbour"):
        checks.check_ssr_input(lambda x, low: torch.cat([x, F.interpolate(low, scale_factor=(1, 2, 2))], 1))


def test_augmentation_level_k_is_q_sample_after_k_steps():
    s = make_schedule("cosine", 1000)
    low, noise = _rand(3, 3, 4, 8, 8, seed=7), _rand(3, 3, 4, 8, 8, seed=8)
    k = torch.tensor([1, 250, 1000])
    assert_close(augment(low, k, noise, s), q_sample(low, k - 1, noise, s), atol=1e-6, rtol=0, name="q_sample(k-1)")


# ----------------------------------------------------------------------------- the stage network

@pytest.mark.parametrize("kind,fill,channels", [("tsr", "repeat", 6), ("tsr", "blank", 7), ("ssr", "repeat", 6)])
def test_each_stage_feeds_its_unet_the_documented_layout(kind, fill, channels):
    net = randomize(_net(kind, fill))
    assert net.unet.cfg.in_channels == channels == input_channels(kind, fill)
    B, T, S = 2, 4, 8
    low = _rand(B, 3, T, S, S, seed=9)
    x = _rand(B, 3, 2 * T, S, S, seed=10) if kind == "tsr" else _rand(B, 3, T, 2 * S, 2 * S, seed=10)
    seen = []
    net.unet.stem.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        out = net(x, torch.tensor([3, 700]), low, aug_level=torch.tensor([0, 5]), **_text(B))
    assert out.shape == x.shape
    want = tsr_input(x, low, fill) if kind == "tsr" else ssr_input(x, low)
    assert want.shape[1] == channels and torch.equal(seen[0], fold_frames(want))
    with pytest.raises(ValueError, match="does not fit"):
        net(x[:, :, :-1], torch.tensor([3, 700]), low, aug_level=torch.tensor([0, 5]))


def test_the_stage_is_told_the_augmentation_level_through_a_zero_init_projection():
    net = randomize(_net("ssr"), skip=("aug_proj",))
    x, low, t = _rand(2, 3, 2, 16, 16, seed=1), _rand(2, 3, 2, 8, 8, seed=2), torch.tensor([100, 100])
    with torch.no_grad():
        a = net(x, t, low, aug_level=torch.tensor([0, 0]), **_text(2))
        b = net(x, t, low, aug_level=torch.tensor([300, 300]), **_text(2))
        assert a.abs().mean() > 1e-3 and torch.equal(a, b), "zero-init: a fresh stage ignores the level"
        net.unet.aug_proj.weight.normal_()
        a = net(x, t, low, aug_level=torch.tensor([0, 0]), **_text(2))
        b = net(x, t, low, aug_level=torch.tensor([300, 300]), **_text(2))
    assert (a - b).abs().max() > 1e-4, "two levels, two outputs"
    plain = _net("ssr", aug=False)
    assert not any("aug" in k for k in plain.state_dict())
    with pytest.raises(ValueError, match="aug_t"):
        plain(x, t, low, aug_level=torch.tensor([0, 0]))


def test_guidance_one_is_the_conditional_model_and_the_aug_noise_is_seeded():
    net = randomize(_net("tsr"))
    stage = ch05.Stage(net, make_schedule("cosine", 100), StageRecipe(kind="tsr", T=100, aug_max=50))
    cond, prompts = _Cond(), ["a red circle", "a blue square"]
    low = _rand(2, 3, 2, 8, 8, seed=3).clamp(-1, 1)
    one = ch05.run_stage(stage, cond, prompts, low, guidance=1.0, steps=3, seed=5, aug_level=20, progress=False)
    g = torch.Generator().manual_seed(5)
    level = torch.full((2,), 20)
    aug = augment(low, level, torch.randn(low.shape, generator=torch.Generator().manual_seed(5 + ch05.AUG_NOISE_SEED)),
                  stage.schedule)
    ref = ddim_sample(net, (2, 3, 4, 8, 8), stage.schedule, "v", steps=3, cond={**cond(prompts), "low": aug,
                      "aug_level": level}, clip=1.0, noise=torch.randn(2, 3, 4, 8, 8, generator=g), progress=False)
    assert torch.equal(one, ref.clamp(-1, 1)), "guidance 1 = the conditional branch alone"
    three = ch05.run_stage(stage, cond, prompts, low, guidance=3.0, steps=3, seed=5, aug_level=20, progress=False)
    assert not torch.equal(one, three)
    again = ch05.run_stage(stage, cond, prompts, low, guidance=3.0, steps=3, seed=5, aug_level=20, progress=False)
    assert torch.equal(three, again), "same seed, same clips"


# ----------------------------------------------------------------------------- data

def test_stage_world_clips_halve_the_speed_and_the_pools_hold_the_same_clips_at_both_sizes():
    d, v = torch.arange(4).repeat(2), torch.tensor([0, 1]).repeat_interleave(4)
    fast, half = velocity(d, v, WorldConfig(frames=8)), velocity(d, v, stage_world(16, 16))
    assert all(torch.equal(2 * h, f) for h, f in zip(half, fast)), "frame 2i of 16 = frame i of an 8-frame clip"
    lo, hi = clip_pool(16, 8, 8), clip_pool(32, 8, 8)
    assert lo["captions"] == hi["captions"] and all(torch.equal(lo["labels"][k], hi["labels"][k]) for k in lo["labels"])
    pooled = F.avg_pool3d(hi["x"].float(), (1, 2, 2))
    assert (pooled - lo["x"].float()).abs().mean() < 4, "the 32x32 clips are the 16x16 ones, rendered finer"


def test_batches_tsr_low_is_the_even_frames_and_ssr_crops_line_up():
    text = {"context": torch.randn(16, 3, D), "context_mask": torch.ones(16, 3, dtype=torch.bool),
            "pooled": torch.randn(16, D)}
    lo, hi = clip_pool(16, 8, 16), clip_pool(32, 8, 16)
    r = StageRecipe(kind="tsr", batch_size=4, time_reversal=0.5)
    b = stage_batch_fn(r, {"x": lo["x"], "text": text, "text_reversed": text})(0, torch.Generator().manual_seed(0))
    assert b["x"].shape == (4, 3, 8, 16, 16) and torch.equal(b["low"], b["x"][:, :, ::2])
    r = StageRecipe(kind="ssr", batch_size=4, crop=16, time_reversal=0.0)
    data = {"x": hi["x"], "low": lo["x"], "text": text, "text_reversed": text}
    b = stage_batch_fn(r, data)(0, torch.Generator().manual_seed(1))
    assert b["x"].shape == (4, 3, 8, 16, 16) and b["low"].shape == (4, 3, 8, 8, 8)
    assert (F.avg_pool3d(b["x"], (1, 2, 2)) - b["low"]).abs().mean() < 0.05, "the crops show the same window"


# ----------------------------------------------------------------------------- keys, arguments

def test_checkpoint_keys_change_with_the_recipe_and_the_upstream_text_encoder(monkeypatch):
    p = ch05.get_preset("smoke")
    tsr = ch05.checkpoint_path("tsr", p)
    assert tsr != ch05.checkpoint_path("ssr", p) != ch05.checkpoint_path("baseline", p)
    for change in ({"aug": False}, {"fill": "blank"}, {"steps": 3}, {"aug_max": 30}, {"text_preset": "full"}):
        assert ch05.checkpoint_path("tsr", p, recipe=ch05.stage_recipe(p, "tsr", **change)) != tsr, change
    assert ch05.checkpoint_path("tsr", p, seed=1) != tsr
    assert "tsr-blank" in ch05.checkpoint_path("tsr", p, recipe=ch05.stage_recipe(p, "tsr", fill="blank")).name
    monkeypatch.setattr(ch05, "pretrained_path", lambda name, preset, seed: type(tsr)(f"/x/{name}-retrained.pt"))
    assert ch05.checkpoint_path("tsr", p) != tsr, "a retrained text encoder retrains the stages"


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="kind must be"):
        StageRecipe(kind="xsr")
    with pytest.raises(ValueError, match="fill must be"):
        StageRecipe(fill="zeros")
    with pytest.raises(ValueError, match="aug_max"):
        StageRecipe(T=100, aug_max=101)
    with pytest.raises(ValueError, match="crop"):
        StageRecipe(kind="tsr", crop=16)
    with pytest.raises(ValueError, match="crop"):
        StageRecipe(kind="ssr", crop=10)
    for bad in ("base,ssr,tsr", "tsr,tsr", "", "base,fsr", ()):
        with pytest.raises(ValueError, match="stages must be"):
            ch05.check_stages(bad)
    assert ch05.check_stages("base, TSR") == ("base", "tsr")
    with pytest.raises(ValueError, match="does not fit"):
        tsr_input(torch.zeros(1, 3, 7, 4, 4), torch.zeros(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        ssr_input(torch.zeros(1, 3, 4, 8, 6), torch.zeros(1, 3, 4, 4, 4))
    s = make_schedule("cosine", 10)
    with pytest.raises(ValueError, match="level must lie in 0..10"):
        augment(torch.zeros(2, 3), torch.tensor([0, 11]), torch.zeros(2, 3), s)
    with pytest.raises(ValueError, match="level must be"):
        augment(torch.zeros(2, 3), torch.tensor([0.5, 1.0]), torch.zeros(2, 3), s)
    with pytest.raises(ValueError, match="unknown ch05 preset"):
        ch05.get_preset("huge")
    with pytest.raises(ValueError, match="what must be"):
        ch05.checkpoint_path("vae", "smoke")
    stage = ch05.Stage(_net("tsr", aug=False), make_schedule("cosine", 100), StageRecipe(T=100, aug_max=50, aug=False))
    with pytest.raises(ValueError, match="without noise-conditioning augmentation"):
        ch05.run_stage(stage, _Cond(), ["a"], torch.zeros(1, 3, 2, 8, 8), aug_level=10, progress=False)
    with pytest.raises(ValueError, match="one per prompt"):
        ch05.run_stage(stage, _Cond(), ["a", "b"], torch.zeros(1, 3, 2, 8, 8), progress=False)
    stage = stage._replace(recipe=StageRecipe(T=100, aug_max=50))
    with pytest.raises(ValueError, match="aug_level must be an int in 0..100"):
        ch05.run_stage(stage, _Cond(), ["a"], torch.zeros(1, 3, 2, 8, 8), aug_level=101, progress=False)
    with pytest.raises(ValueError, match="same text features"):
        ch05.load_cascade("smoke", tsr=ch05.stage_recipe("smoke", "tsr", text_preset="full"))
    with pytest.raises(ValueError, match="give `clips`"):
        ch05.cascade(["a"], preset="smoke", stages=("tsr",))
    with pytest.raises(ValueError, match="guidance must be"):
        ch05.cascade(["a"], preset="smoke", guidance=(1.0, -2.0, 1.0))
    for bad in (0, (20, 10), (20, 2.5, 10)):
        with pytest.raises(ValueError, match="steps must be"):
            ch05.cascade(["a"], preset="smoke", steps=bad)
    with pytest.raises(ValueError, match="--frames 12"):
        ch05.cli_generate(["a"], preset="smoke", frames=12)


# ----------------------------------------------------------------------------- end to end (smoke)

def test_smoke_cascade_end_to_end_stages_cli_and_bench():
    prompts = ["a big red circle moving to the right", "a small blue square moving up"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ch05.cascade(prompts, preset="smoke", steps=2, seed=3, progress=False)
        F0 = ch05.base_recipe("smoke").frames
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "base": (2, 3, F0, 16, 16), "tsr": (2, 3, 2 * F0, 16, 16), "ssr": (2, 3, 2 * F0, 32, 32)}
        assert all(v.abs().max() <= 1 for v in out.values())
        models = ch05.load_cascade("smoke", progress=False)
        resumed = ch05.cascade(prompts, stages=("tsr", "ssr"), clips=out["base"], models=models, steps=2, seed=3,
                               progress=False)
        assert torch.equal(resumed["ssr"], out["ssr"]), "a stage at a time = the whole cascade"
        clip = ch05.cli_generate(prompts[:1], preset="smoke", steps=2, seed=3)
        assert torch.equal(clip, ch05.cascade(prompts[:1], preset="smoke", steps=2, seed=3, progress=False)["ssr"])
        assert ch05.cli_generate(prompts[:1], preset="smoke", steps=2, stages="base,tsr").shape[2] == 2 * F0
        fewer = ch05.cascade(prompts, stages=("tsr",), clips=out["base"], models=models, steps=(9, 1, 9), seed=3,
                             progress=False)
        assert not torch.equal(fewer["tsr"], out["tsr"]), "steps per stage"
        assert ch05.CLI.generate is ch05.cli_generate and ch05.CLI.demo_rank == 0
        from minivid.bench import ch05 as bench
        from minivid.bench import ch05_ablations as ablations
        res, abl = bench.run("smoke"), ablations.run("smoke")
    figs = res["figures"]
    for k in (*bench.HEADLINE, "heldout_flicker_real", "sample_s_per_clip_ssr", "stage_tsr_validity"):
        assert k in figs, k
    assert set(res["tables"]) == {"stages"}
    figs = abl["figures"]
    for k in ("ablation_noaug_generated_validity", "ablation_aug_real_validity", "sweep_best_level", "tsr_psnr_repeat",
              "tsr_psnr_blank", "tsr_psnr_linear", "baseline_validity", "baseline_train_minutes",
              "baseline_sample_s_per_clip", "cascade_validity", "cascade_sample_s_per_clip",
              "upsample_tsr_w1_ssr_w1_steps1_validity"):
        assert k in figs, k
    assert {"augmentation", "aug_sweep", "base_noise", "upsampler_sampling", "tsr_fill",
            "single_stage_vs_cascade"} == set(abl["tables"])
    assert [r["base noise share"] for r in abl["tables"]["base_noise"]] == ["as trained", "4"]
    assert {"base_noise_as_trained_flicker_ratio", "base_noise_4_flicker_ratio"} <= set(figs)
    assert [r["aug level"] for r in abl["tables"]["aug_sweep"]] == list(ch05.get_preset("smoke").aug_levels)
    assert [(r["TSR guidance"], r["SSR guidance"], r["SSR DDIM steps"]) for r in abl["tables"]["upsampler_sampling"]] \
        == list(ablations.UPSAMPLER_GRID["smoke"])
    assert replace(ch05.get_preset("smoke").tsr, aug=False) != ch05.get_preset("smoke").tsr
