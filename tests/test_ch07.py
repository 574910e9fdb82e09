"""Chapter 07 recipes, CogVideoX's causal video VAE (arXiv:2408.06072): the matched per-frame baseline, batches,
cached training, whole == chunked through the pipeline, the latents exported for chapter 08, and clear errors."""
import copy
from dataclasses import replace

import pytest
import torch

from minivid.cli.chapters import chapter_names, video_chapters
from minivid.compare import assert_close
from minivid.data import from_uint8, time_reversed, video_text_pool
from minivid.models.vae import AutoencoderKL, latent_scale_factor
from minivid.models.video_vae import CausalVideoVAE
from minivid.pipelines import ch07, common

F64 = torch.float64
TOL = dict(atol=1e-9, rtol=1e-9)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke_vae():
    """The smoke video VAE (trained once for the module), its training state."""
    return ch07.train_vae("smoke", progress=False)


def _clips(n=3, T=17, S=32, seed=0):
    return torch.randint(0, 256, (n, 3, T, S, S), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ----------------------------------------------------------------------------- recipes, budget, batches

def test_the_baseline_gets_the_video_vaes_latent_budget_per_clip():
    for name in ch07.PRESETS:
        p = ch07.get_preset(name)
        assert (p.vae.frames, p.vae.size) == (p.frame_vae.frames, p.frame_vae.size) == (17, 32)
        assert ch07.latent_shape(p.vae) == (4, 5, 8, 8), "17 frames of 32x32 -> 5 latent frames of 8x8"
        assert ch07.latent_shape(p.frame_vae) == (5, 17, 4, 4), "every frame alone, 8x in space, 5 channels"
        video, frame = ch07.latent_values(p.vae), ch07.latent_values(p.frame_vae)
        assert video == 1280 and frame == 1360 and 1 <= frame / video < 1.1, "never fewer values, at most 10% more"
        cfg = ch07.model_config(p.frame_vae)
        assert isinstance(ch07.build_vae(p.frame_vae), AutoencoderKL) and cfg.downsample_factor == 8
        v = ch07.model_config(p.vae)
        assert isinstance(ch07.build_vae(p.vae), CausalVideoVAE) and (v.time_factor, v.spatial_factor) == (4, 4)
    full = ch07.get_preset("full")
    share = (full.vae.train_frames or full.vae.frames) / full.vae.frames         # windows: that share of a clip's work
    assert full.vae.steps * 0.74 * share / 60 <= 10, "the full video VAE fits 10 minutes at its measured step time"


def test_batches_clips_reversed_in_time_and_frames_from_random_clips():
    clips = _clips(5)
    r = ch07.VAERecipe(pool=5, batch_size=6, time_reversal=1.0)
    g = torch.Generator().manual_seed(3)
    b = ch07.batch_fn_for(r, clips)(0, g)
    idx = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(3))
    assert b.shape == (6, 3, 17, 32, 32) and torch.equal(b, from_uint8(clips[idx]).flip(2)), "all played backwards"
    b0 = ch07.batch_fn_for(replace(r, time_reversal=0.0), clips)(0, torch.Generator().manual_seed(3))
    assert torch.equal(b0, from_uint8(clips[idx]))
    f = ch07.batch_fn_for(ch07.VAERecipe(kind="frame", model="vae-tiny", overrides=ch07.MATCHED, batch_size=7), clips)
    fb = f(0, torch.Generator().manual_seed(4))
    assert fb.shape == (7, 3, 32, 32) and fb.min() >= -1 and fb.max() <= 1
    frames = from_uint8(clips).transpose(1, 2).reshape(-1, 3, 32, 32)
    assert all(any(torch.equal(x, y) for y in frames) for x in fb), "each a frame of some clip"
    assert torch.equal(fb, f(0, torch.Generator().manual_seed(4)))


def test_checkpoint_keys_follow_the_recipe_and_the_latents_follow_the_vae():
    p = ch07.get_preset("smoke")
    vae = ch07.checkpoint_path("vae", p)
    assert vae != ch07.checkpoint_path("frame_vae", p) and "ch07-vae-smoke-seed0-" in vae.name
    for change in ({"steps": 3}, {"kl_weight": 1e-4}, {"overrides": {"channels": 16}}, {"time_reversal": 0.0}):
        assert ch07.checkpoint_path("vae", p, recipe=replace(p.vae, **change)) != vae, change
    assert ch07.checkpoint_path("vae", p, seed=1) != vae
    lat = ch07.latents_path(p)
    assert lat != ch07.latents_path(p, seed=1) and lat != ch07.latents_path(replace(p, latent_pool=4))
    assert lat != ch07.latents_path(replace(p, vae=replace(p.vae, steps=3))), "a retrained VAE, new latents"
    assert common.pretrained_path("ch07.video_vae", "smoke") == vae
    assert common.pretrained_path("ch07.latents", "smoke") == lat


# ----------------------------------------------------------------------------- training, cache, chunks

def test_smoke_training_is_cached_and_resumes(smoke_vae):
    vae, st = ch07.train_vae("smoke", progress=False, retrain=True)
    path = ch07.checkpoint_path("vae", "smoke")
    steps = ch07.get_preset("smoke").vae.steps
    assert path.exists() and st.step == steps and st.resumed_from is None, "retrain=True trains afresh"
    assert common.training_record(path)["steps"] == steps
    vae2, st2 = ch07.train_vae("smoke", progress=False)
    assert st2.resumed_from == steps, "loaded, not retrained"
    loaded = common.pretrained("ch07.video_vae", "smoke", progress=False)
    assert not loaded.training and not any(q.requires_grad for q in loaded.parameters()), "frozen"
    for a, b, c in zip(vae.state_dict().values(), vae2.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)
    clips = _clips(2)
    rec = ch07.reconstruct(loaded, clips)
    assert rec.shape == clips.shape and rec.abs().max() <= 1 and torch.isfinite(rec).all()
    frame_vae, fst = ch07.train_frame_vae("smoke", progress=False)
    assert isinstance(frame_vae, AutoencoderKL) and fst.step == ch07.get_preset("smoke").frame_vae.steps
    assert ch07.encode(frame_vae, clips).shape == (2, 5, 17, 4, 4)
    assert ch07.reconstruct(frame_vae, clips).shape == clips.shape


def test_chunked_equals_whole_through_the_pipeline_helpers(smoke_vae):
    vae = copy.deepcopy(smoke_vae[0]).double()
    x = from_uint8(_clips(3)).double()
    q = ch07.encode(vae, x, batch_size=2)
    assert q.shape == (3, 4, 5, 8, 8)
    whole = ch07.reconstruct(vae, x, batch_size=2)
    for chunk in (4, 8, 12, 16):
        qc = ch07.encode(vae, x, chunk_frames=chunk, batch_size=2)
        assert_close(qc.mean, q.mean, **TOL, name=f"chunked mean, {chunk} frames a chunk")
        assert_close(qc.logvar, q.logvar, **TOL, name=f"chunked logvar, {chunk} frames a chunk")
        assert_close(ch07.reconstruct(vae, x, chunk_frames=chunk, batch_size=2), whole, **TOL, name=f"{chunk}")
    z = q.mode()
    for c in (1, 2, 3):
        assert_close(ch07.decode(vae, z, chunk_latents=c), ch07.decode(vae, z), **TOL, name=f"{c} latents a chunk")


# ----------------------------------------------------------------------------- latents for chapter 08

def test_latent_export_is_scaled_captioned_cached_and_decodes_back(smoke_vae, monkeypatch):
    p = ch07.get_preset("smoke")
    lat = ch07.encode_pool("smoke", progress=False, retrain=True)
    N = p.latent_pool
    assert ch07.latents_path(p).exists()
    for k in ("z", "mean", "std"):
        assert lat[k].shape == (N, 4, 5, 8, 8) and lat[k].dtype == torch.float32, k
    assert abs(lat["z"].double().std().item() - 1) < 1e-5, "unit std on the latents the scale came from"
    vae = ch07.load_vae("smoke", progress=False)
    pool = video_text_pool(32, 17, N)
    assert lat["captions"] == pool["captions"] and torch.equal(lat["labels"]["color"], pool["labels"]["color"])
    q = ch07.encode(vae, pool["x"], batch_size=p.encode_batch)           # batched as the export is
    assert isinstance(lat["scale"], float) and lat["vae"] == ch07.checkpoint_path("vae", p).name
    z = torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(ch07.LATENT_NOISE_SEED))
    z = q.mean + q.std * z
    assert lat["scale"] == latent_scale_factor(z), "LDM's factor, float64, of the unscaled samples"
    assert_close(lat["z"], (z.double() * lat["scale"]).float(), atol=1e-6, rtol=1e-6, name="scaled samples")
    assert_close(lat["mean"], q.mean * lat["scale"], atol=1e-5, rtol=1e-5, name="scaled mean")
    back = ch07.decode_latents(vae, lat["mean"], lat["scale"])
    assert_close(back, ch07.reconstruct(vae, pool["x"]), atol=1e-5, rtol=1e-5, name="decode(mean / scale)")
    rev, want = lat["reversed"], time_reversed(pool)
    assert rev["z"].shape == lat["z"].shape and rev["captions"] == want["captions"]
    assert torch.equal(rev["labels"]["direction"], want["labels"]["direction"])
    assert_close(rev["mean"], ch07.encode(vae, want["x"]).mean * lat["scale"], atol=1e-5, rtol=1e-5, name="reversed")

    def no_encoding(*a, **k):
        raise AssertionError("a cached pool must not be encoded again")
    monkeypatch.setattr(ch07, "encode", no_encoding)
    again = common.pretrained("ch07.latents", "smoke", progress=False)
    assert again["scale"] == lat["scale"] and torch.equal(again["z"], lat["z"]) and again["captions"] == lat["captions"]


def test_cli_trains_the_vae_and_its_latents_and_capture_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVID_HOME", str(tmp_path))
    assert "ch07" in chapter_names() and "ch07" not in video_chapters(), "training only: chapter 08 generates"
    assert ch07.CLI.train is ch07.cli_train and ch07.CLI.generate is None and ch07.CLI.demo_rank == 0
    with common.capture_training() as got:
        path = ch07.CLI.train(preset="smoke", seed=0)
    descs = [s.desc.split(" (")[0] for s in got]
    assert descs == ["ch06 image autoencoder", "ch07 causal video VAE"], "it starts from chapter 06's, inflated"
    assert all(s.trainable for s in got)
    assert not path.exists() and not ch07.latents_path("smoke").exists(), "under capture nothing is written"
    path = ch07.cli_train("smoke", steps=1)
    assert "smoke-steps1" in path.name and common.is_finished(path, 1)
    assert ch07.latents_path(ch07.PRESETS["smoke"]).exists() is False
    steps1 = common.with_steps(ch07.get_preset("smoke"), "vae", 1)
    assert ch07.latents_path(steps1).exists(), "train ch07 encodes chapter 08's latents too"


# ----------------------------------------------------------------------------- clear errors

def test_video_vae_trains_on_random_windows_of_the_clips():
    clips = _clips(5)
    r = ch07.VAERecipe(pool=5, batch_size=6, time_reversal=0.0, train_frames=9)
    b = ch07.batch_fn_for(r, clips)(0, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)                       # the oracle: the same draws, by hand
    idx = torch.randint(0, 5, (6,), generator=g)
    start = torch.randint(0, 17 - 9 + 1, (6,), generator=g)
    assert b.shape == (6, 3, 9, 32, 32)
    for i in range(6):
        assert torch.equal(b[i], from_uint8(clips[idx[i], :, start[i]:start[i] + 9])), "9 consecutive frames"
    assert len(set(start.tolist())) > 1, "windows start anywhere in the clip"
    assert ch07.latent_shape(r) == (4, 5, 8, 8), "the model is still built for, and judged on, 17-frame clips"
    with pytest.raises(ValueError, match="train_frames: got 8 frames.*use 5 or 9"):
        ch07.VAERecipe(train_frames=8)
    with pytest.raises(ValueError, match="train_frames .* must be an int in 1..frames=17"):
        ch07.VAERecipe(train_frames=21)
    with pytest.raises(ValueError, match="train_frames .*'frame'"):
        ch07.VAERecipe(kind="frame", model="vae-tiny", train_frames=9)
    with pytest.raises(ValueError, match="temporal_weight must be >= 0, and 0 for the per-frame VAE"):
        ch07.VAERecipe(kind="frame", model="vae-tiny", temporal_weight=1.0)
    with pytest.raises(ValueError, match="temporal_weight must be >= 0"):
        ch07.VAERecipe(temporal_weight=-1.0)
    with pytest.raises(ValueError, match="lr_decay must be one of"):
        ch07.VAERecipe(lr_decay="linear")


def test_bad_inputs_get_clear_errors(smoke_vae):
    vae = smoke_vae[0]
    with pytest.raises(ValueError, match="got 16 frames; a causal video needs 1 \\+ 4k frames: use 13 or 17"):
        ch07.VAERecipe(frames=16)
    with pytest.raises(ValueError, match="got 18 frames.*use 17 or 21"):
        ch07.VAERecipe(frames=18)
    with pytest.raises(ValueError, match="frames \\(clip length\\) must be an int in 1..32"):
        ch07.VAERecipe(frames=33)
    assert ch07.VAERecipe(kind="frame", model="vae-tiny", frames=16).frames == 16, "per frame: any count"
    with pytest.raises(ValueError, match="got 16 frames.*use 13 or 17"):
        ch07.reconstruct(vae, _clips(1, T=16))
    with pytest.raises(ValueError, match="chunk_frames must be a positive multiple of 4"):
        ch07.encode(vae, _clips(1), chunk_frames=6)
    with pytest.raises(ValueError, match="per-frame VAE.*chunk_frames=None"):
        ch07.reconstruct(ch07.build_vae(ch07.get_preset("smoke").frame_vae), _clips(1), chunk_frames=8)
    with pytest.raises(ValueError, match=r"clips must be \(N >= 1, 3, T, H, W\)"):
        ch07.encode(vae, torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="scale must be > 0"):
        ch07.decode_latents(vae, torch.zeros(1, 4, 2, 8, 8), 0.0)
    with pytest.raises(ValueError, match="unknown ch07 preset 'huge'"):
        ch07.get_preset("huge")
    with pytest.raises(ValueError, match="what must be"):
        ch07.checkpoint_path("dit", "smoke")
    with pytest.raises(ValueError, match="recipe.kind is 'frame'"):
        ch07.checkpoint_path("vae", "smoke", recipe=ch07.get_preset("smoke").frame_vae)
    with pytest.raises(ValueError, match="kind must be one of"):
        ch07.VAERecipe(kind="image")
    with pytest.raises(ValueError, match="unknown video VAE preset"):
        ch07.VAERecipe(model="vae-tiny")
    with pytest.raises(ValueError, match="multiple of the spatial compression 8"):
        ch07.VAERecipe(kind="frame", model="vae-tiny", overrides=ch07.MATCHED, size=36)
    with pytest.raises(ValueError, match="time_reversal"):
        ch07.VAERecipe(time_reversal=2.0)
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        ch07.cli_train("smoke", steps=0)
