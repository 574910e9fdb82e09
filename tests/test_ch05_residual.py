"""Chapter 05, the residual stages (`StageRecipe.residual`) and the chapter-04 base: the fill a stage adds to against
a naive float64 version, the loss and the sampler on the residual, and the base sampled as chapter 04 samples
(its starting noise shared across frames as the preset says)."""
import warnings
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from minivid.diffusion import diffusion_loss, make_schedule
from minivid.pipelines import ch03, ch04, ch05
from minivid.pipelines.common import pretrained
from minivid.pipelines.presets import key_parts
from minivid.pipelines.ch05_sr import StageNet, StageRecipe, augment, input_channels, stage_fill, stage_loss_fn
from minivid.models.unet3d import unet3d_config
from minivid.text import caption_dropout
from tiny_models import randomize

D = 8


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _net(kind):
    torch.manual_seed(0)
    cfg = unet3d_config("unet3d-tiny", in_channels=input_channels(kind), out_channels=3, context_dim=D, pooled_dim=D,
                        aug_embedding=True)
    return randomize(StageNet(kind, cfg)).eval()


def test_tsr_fill_is_the_low_clip_on_even_frames_and_blends_between_them():
    low = _rand(2, 3, 4, 5, 5).double()
    out = stage_fill(low, "tsr")
    ref = torch.zeros(2, 3, 8, 5, 5, dtype=torch.float64)
    for t in range(4):                                                   # the naive loop
        ref[:, :, 2 * t] = low[:, :, t]
        ref[:, :, 2 * t + 1] = 0.5 * (low[:, :, t] + low[:, :, min(t + 1, 3)])
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    assert torch.equal(out[:, :, -1], low[:, :, -1]), "the last frame holds"


def test_ssr_fill_is_every_frame_upsampled_bilinearly():
    low = _rand(2, 3, 3, 4, 4).double()
    out = stage_fill(low, "ssr")
    ref = torch.stack([F.interpolate(low[:, :, t], scale_factor=2, mode="bilinear", align_corners=False)
                       for t in range(3)], 2)
    assert out.shape == (2, 3, 3, 8, 8) and torch.allclose(out, ref, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="kind"):
        stage_fill(low, "xsr")


@pytest.mark.parametrize("kind,scale", [("tsr", 1.0), ("ssr", 1.0), ("ssr", 4.0)])
def test_a_residual_stage_learns_the_target_minus_the_fill_of_the_clean_clip(kind, scale):
    r = StageRecipe(kind=kind, T=100, aug_max=50, residual=True, residual_scale=scale)
    schedule, net = make_schedule("cosine", 100), _net(kind)
    low = _rand(2, 3, 2, 4, 4, seed=1).clamp(-1, 1)
    x = _rand(2, 3, *((4, 4, 4) if kind == "tsr" else (2, 8, 8)), seed=2).clamp(-1, 1)
    null = {"pooled": torch.zeros(D)}
    batch = {"x": x, "low": low, "pooled": _rand(2, D, seed=3)}
    got = stage_loss_fn(r, schedule, null)(net, batch, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)                                # the same draws, in the same order
    text, _ = caption_dropout({"pooled": batch["pooled"]}, null, r.p_uncond, generator=g)
    level = torch.randint(0, r.aug_max + 1, (2,), generator=g)
    noisy = augment(low, level, torch.randn(low.shape, generator=g), schedule)
    ref = diffusion_loss(net, scale * (x - stage_fill(low, kind)), schedule, "v", generator=g,
                         cond={**text, "low": noisy, "aug_level": level})
    assert torch.allclose(got, ref, atol=1e-6, rtol=0)
    for other in (StageRecipe(kind=kind, T=100, aug_max=50), replace(r, residual_scale=2 * scale)):
        loss = stage_loss_fn(other, schedule, null)(net, batch, torch.Generator().manual_seed(7))
        assert not torch.allclose(loss, got), f"{other.residual=}, {other.residual_scale=} changes what is learnt"


@pytest.mark.parametrize("residual,scale", [(True, 1.0), (True, 4.0), (False, 1.0)])
def test_a_residual_stage_samples_the_residual_and_adds_the_fill_back(monkeypatch, residual, scale):
    seen = {}

    def fake_ddim(net, schedule, cond, prompts, item, **kw):
        seen.update(kw)
        return torch.full((len(prompts), *item), 0.25 * scale)           # every (scaled) residual sample

    monkeypatch.setattr(ch05, "guided_ddim", fake_ddim)
    recipe = StageRecipe(kind="tsr", T=100, aug_max=50, residual=residual, residual_scale=scale)
    stage = ch05.Stage(_net("tsr"), make_schedule("cosine", 100), recipe)
    low = _rand(2, 3, 2, 4, 4, seed=1).clamp(-1, 1)
    out = ch05.run_stage(stage, None, ["a", "b"], low, steps=2, aug_level=10, progress=False)
    want = (stage_fill(low, "tsr") + 0.25).clamp(-1, 1) if residual else torch.full_like(out, 0.25)
    assert torch.allclose(out, want, atol=1e-7, rtol=0), "the sampled residual is divided by its scale"
    assert seen["clip"] == (2.0 * scale if residual else 1.0), "a residual of clips in [-1, 1] lies in [-2, 2]"


def test_the_residual_scale_is_checked_and_keeps_the_keys_of_stages_trained_before_it():
    with pytest.raises(ValueError, match="residual_scale must be > 0"):
        StageRecipe(kind="ssr", residual=True, residual_scale=0.0)
    with pytest.raises(ValueError, match="1 unless residual=True"):
        StageRecipe(kind="ssr", residual_scale=4.0)
    r = StageRecipe(kind="ssr", residual=True)
    assert "residual_scale" not in key_parts(r) and key_parts(replace(r, residual_scale=4.0))["residual_scale"] == 4


def test_the_chapter_04_base_samples_as_chapter_04_does_and_the_stages_read_their_own_text():
    p = ch05.get_preset("smoke")
    assert p.base == "ch04" and ch05.base_name(p) == "ch04.video"
    assert ch05.base_recipe(p) == ch04.get_preset(p.base_preset).video
    prompts = ["a big red circle moving to the right", "a small blue square moving up"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = ch05.load_cascade(p, seed=1, progress=False, stages=("base",))
        got = ch05.sample_base(p, models.base, prompts, guidance=1.0, steps=2, seed=3, progress=False)
        model, schedule, cond = ch04.load_video_model(p.base_preset, seed=1, progress=False)
        ref = ch04.sample_prompts(model, schedule, cond, prompts, p.base_preset, seed=3, steps=2, guidance=1.0,
                                  progress=False, noise_alpha=p.base_noise_alpha)
        assert p.base_noise_alpha is not None and torch.equal(got, ref)
        as_trained = ch05.sample_base(replace(p, base_noise_alpha=None), models.base, prompts, guidance=1.0, steps=2,
                                      seed=3, progress=False)          # None: chapter 04's own share, as it trained
        assert torch.equal(as_trained, ch04.sample_prompts(model, schedule, cond, prompts, p.base_preset, seed=3,
                                                           steps=2, guidance=1.0, progress=False))
        assert not torch.allclose(as_trained, got, atol=1e-3), "the base's noise share must reach its sampler"
        text = pretrained("ch02.conditioner", p.tsr.text_preset, 1, False)
    assert models.cond(prompts)["pooled"].equal(text(prompts)["pooled"]), "the stages' text: chapter 02's at seed 1"
    with pytest.raises(ValueError, match="base must be one of"):
        ch05.base_recipe(replace(p, base="ch09"))
    with pytest.raises(ValueError, match="base_noise_alpha must be None or a number >= 0"):
        replace(p, base_noise_alpha=-1.0)


@pytest.mark.parametrize("chapter", ["ch03", "ch04"])
def test_each_base_chapter_samples_with_the_noise_share_it_is_given(monkeypatch, chapter):
    mod = {"ch03": ch03, "ch04": ch04}[chapter]
    seen = []

    def fake_ddim(model, schedule, cond, prompts, item, **kw):
        seen.append(kw["noise_alpha"])
        return torch.zeros(len(prompts), *item)

    monkeypatch.setattr(mod, "guided_ddim", fake_ddim)
    model = SimpleNamespace(cfg=SimpleNamespace(in_channels=3))             # what the samplers read of a model
    kw = {} if chapter == "ch03" else {"prior": None, "motion": torch.zeros(1, 2)}   # no prior, no motion cue
    p = mod.get_preset("smoke")
    mod.sample_prompts(model, None, None, ["a"], p, steps=1, progress=False, **kw)
    mod.sample_prompts(model, None, None, ["a"], p, steps=1, progress=False, noise_alpha=6.0, **kw)
    own = 0.0 if chapter == "ch03" else p.video.noise_alpha          # chapter 03 trains on independent frames
    assert seen == [own, 6.0]


# ----------------------------------------------------------------------------- noise shared across frames

def test_the_cascade_samples_each_upsampler_with_the_presets_shared_noise(monkeypatch):
    seen = {}

    def fake_ddim(net, schedule, cond, prompts, item, **kw):
        seen[net.kind] = kw["noise_alpha"]
        return torch.zeros(len(prompts), *item)

    monkeypatch.setattr(ch05, "guided_ddim", fake_ddim)
    schedule = make_schedule("cosine", 100)
    stages = {k: ch05.Stage(_net(k), schedule, StageRecipe(kind=k, T=100, aug_max=50)) for k in ("tsr", "ssr")}
    p = replace(ch05.get_preset("smoke"), noise_alpha=(2.0, 5.0))
    models = ch05.Cascade(None, stages["tsr"], stages["ssr"], p, None)
    low = torch.zeros(1, 3, 2, 4, 4)
    ch05.cascade(["a"], stages=("tsr", "ssr"), clips=low, models=models, steps=2, progress=False)
    assert seen == {"tsr": 2.0, "ssr": 5.0}
    ch05.cascade(["a"], stages=("tsr", "ssr"), clips=low, models=models, steps=2, progress=False, noise_alpha=(0, 1))
    assert seen == {"tsr": 0, "ssr": 1}
    with pytest.raises(ValueError, match="noise_alpha must be two numbers"):
        ch05.cascade(["a"], stages=("tsr",), clips=low, models=models, steps=2, progress=False, noise_alpha=(1,))
    with pytest.raises(ValueError, match="noise_alpha must be two numbers"):
        replace(p, noise_alpha=(1.0, -1.0))
