"""Chapter 03 recipes: joint image-video batches, caption dropout, the cached model and the CLI hooks (smoke size)."""
import warnings
from dataclasses import replace

import pytest
import torch

from minivid.bench import ch03 as bench_ch03
from minivid.pipelines import ch02, ch03
from minivid.utils import CheckpointError


def _tiny_data(recipe, n_vid=6, n_img=20, L=5, D=4):
    g = torch.Generator().manual_seed(0)
    T, S = recipe.frames, recipe.size

    def text(n):
        return {"context": torch.randn(n, L, D, generator=g), "context_mask": torch.ones(n, L, dtype=torch.bool),
                "pooled": torch.randn(n, D, generator=g)}
    return {"video": {"x": torch.randint(0, 256, (n_vid, 3, T, S, S), dtype=torch.uint8, generator=g),
                      "text": text(n_vid), "text_reversed": text(n_vid),
                      "direction": torch.randint(0, 4, (n_vid,), generator=g),
                      "speed": torch.randint(0, 2, (n_vid,), generator=g)},
            "image": {"x": torch.randint(0, 256, (n_img, 3, S, S), dtype=torch.uint8, generator=g),
                      "text": text(n_img)}}


def test_joint_batch_layout_clips_then_image_items():
    r = ch03.VideoRecipe(frames=3, size=8, batch_size=5, image_items=2)
    data = _tiny_data(r)
    b = ch03.make_batch_fn(r, data)(0, torch.Generator().manual_seed(1))
    assert b["x"].shape == (5, 5, 3, 8, 8) and b["context"].shape == (5, 3, 5, 4) and b["pooled"].shape == (5, 3, 4)
    assert b["image"].tolist() == [False, False, False, True, True]
    # a clip item has one caption for all its frames; an image item's frames are pool images with their own captions
    assert torch.equal(b["context"][0, 0], b["context"][0, 2])
    img_frames = ((b["x"][3:, :3].transpose(1, 2).reshape(-1, 3, 8, 8) + 1) * 127.5).round().to(torch.uint8)
    for f, ctx in zip(img_frames, b["context"][3:].reshape(-1, 5, 4)):
        hits = [i for i in range(20) if torch.equal(data["image"]["x"][i], f)]
        assert hits and any(torch.equal(data["image"]["text"]["context"][i], ctx) for i in hits)
    video_only = ch03.make_batch_fn(ch03.VideoRecipe(frames=3, size=8, batch_size=5, joint=False), data)
    assert not video_only(0, torch.Generator().manual_seed(1))["image"].any()


def test_clips_played_backwards_carry_the_reversed_captions():
    r = ch03.VideoRecipe(frames=3, size=8, batch_size=8, image_items=0, time_reversal=0.5)
    data = _tiny_data(r)
    b = ch03.make_batch_fn(r, data)(0, torch.Generator().manual_seed(3))
    clips = data["video"]["x"]
    back = 0
    for x, ctx in zip(((b["x"][:, :3] + 1) * 127.5).round().to(torch.uint8), b["context"][:, 0]):
        fwd = [i for i in range(len(clips)) if torch.equal(clips[i], x)]
        rev = [i for i in range(len(clips)) if torch.equal(clips[i].flip(1), x)]
        assert bool(fwd) != bool(rev)                                    # random clips: never palindromes
        i, key = (fwd[0], "text") if fwd else (rev[0], "text_reversed")
        assert torch.equal(ctx, data["video"][key]["context"][i])
        back += bool(rev)
    assert 0 < back < 8
    no_reversed = {**data, "video": {**data["video"], "text_reversed": None}}
    plain = ch03.make_batch_fn(replace(r, time_reversal=0.0), no_reversed)
    x = ((plain(0, torch.Generator().manual_seed(3))["x"][:, :3] + 1) * 127.5).round().to(torch.uint8)
    assert all(any(torch.equal(c, xi) for c in clips) for xi in x)


def test_motion_channels_carry_each_clips_flow_and_zero_for_images():
    from minivid.data import REVERSED_DIRECTION, WorldConfig, flow_field, sample_batch

    r = ch03.VideoRecipe(frames=4, size=8, batch_size=8, image_items=2, time_reversal=0.5, motion_channels=True)
    real = sample_batch(6, kind="video_text", size=8, frames=4)
    data = _tiny_data(r)
    data["video"].update(x=((real["x"] + 1) * 127.5).round().to(torch.uint8), **real["labels"])
    b = ch03.make_batch_fn(r, data)(0, torch.Generator().manual_seed(3))
    assert b["x"].shape == (8, 5, 4, 8, 8)
    assert b["x"][6:, 3:].abs().max() == 0                                  # image items: still, zero flow
    clips, world, back = data["video"]["x"], WorldConfig(size=8, frames=4), 0
    for x in b["x"][:6]:
        u8 = ((x[:3] + 1) * 127.5).round().to(torch.uint8)
        i = next(i for i in range(6) if torch.equal(clips[i], u8) or torch.equal(clips[i].flip(1), u8))
        reversed_ = not torch.equal(clips[i], u8)
        d = REVERSED_DIRECTION[data["video"]["direction"][i]] if reversed_ else data["video"]["direction"][i]
        want = flow_field(x[None, :3], d.view(1), data["video"]["speed"][i].view(1), world)[0]
        assert torch.equal(x[3:], want) and want.abs().max() > 0
        back += reversed_
    assert 0 < back < 6
    model = ch03.build_model(r, text_dim=4)
    assert model.cfg.in_channels == model.cfg.out_channels == 5


def test_generate_returns_the_flow_only_from_a_motion_channel_model():
    p = ch03.get_preset("smoke")
    cond = ch03.load_conditioner(p.video, progress=False)
    schedule = ch03.schedule_for(p.video)
    prompts = ["a big red circle moving to the right"] * 2
    kw = dict(steps=2, frames=4, size=16, progress=False)
    motion = ch03.build_model(p.video, cond.dim).eval()
    x, flow = ch03.generate(motion, schedule, cond, prompts, return_motion=True, **kw)
    assert x.shape == (2, 3, 4, 16, 16) and flow.shape == (2, 2, 4, 16, 16) and flow.abs().max() <= 1
    assert torch.equal(ch03.generate(motion, schedule, cond, prompts, **kw), x)     # same seed, pixels only
    rgb = ch03.build_model(replace(p.video, motion_channels=False), cond.dim).eval()
    assert ch03.generate(rgb, schedule, cond, prompts, **kw).shape == (2, 3, 4, 16, 16)
    with pytest.raises(ValueError, match="motion channels"):
        ch03.generate(rgb, schedule, cond, prompts, return_motion=True, **kw)


def test_caption_dropout_swaps_whole_items_for_the_null_caption():
    r = ch03.VideoRecipe(frames=3, size=8, batch_size=4, image_items=1, p_uncond=0.5)
    batch = ch03.make_batch_fn(r, _tiny_data(r))(0, torch.Generator().manual_seed(2))
    null = {"context": torch.zeros(5, 4), "context_mask": torch.zeros(5, dtype=torch.bool), "pooled": torch.zeros(4)}
    seen = {}

    def spy(x, t, **kw):
        seen.update(kw)
        return torch.zeros_like(x)
    ch03.loss_fn_for(r, ch03.schedule_for(r), null)(spy, batch, torch.Generator().manual_seed(4))
    dropped = (seen["pooled"] == 0).all(-1).all(-1)                     # (B,)
    assert 0 < dropped.sum() < 4, "with p=0.5 and this seed some, not all, items are dropped"
    for i in range(4):
        src = null["context"] if dropped[i] else batch["context"][i]
        assert torch.equal(seen["context"][i], src.expand_as(seen["context"][i]))
        assert seen["context_mask"][i].any() != bool(dropped[i])
    assert torch.equal(seen["image"], batch["image"])


def test_smoke_train_generate_cache_and_corrupt_file(capsys):
    path = ch03.checkpoint_path("smoke")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = ch03.cli_generate(["a big red circle moving to the right"], preset="smoke", steps=2)   # trains first
    p = ch03.get_preset("smoke").video
    assert x.shape == (1, 3, p.frames, p.size, p.size) and x.min() >= -1 and x.max() <= 1
    assert path.exists() and "training it now" in capsys.readouterr().out
    again = ch03.cli_generate(["a big red circle moving to the right"], preset="smoke", steps=2)
    assert torch.equal(again, x), "same seed, cached model: the same clip"
    assert "training it now" not in capsys.readouterr().out
    with pytest.warns(UserWarning, match="did you mean"):
        ch03.cli_generate(["a big red cirlce"], preset="smoke", steps=1)
    assert ch03.cli_train("smoke") == path
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="python -m minivid train ch03"):
        ch03.cli_generate(["a red circle"], preset="smoke", steps=1)
    path.unlink()


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown ch03 preset"):
        ch03.get_preset("huge")


def test_bench_smoke_reports_the_figures_the_issue_names():
    from minivid.bench import run_bench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = run_bench("ch03", "smoke")
    f = rec["figures"]
    for k in ("heldout_color_acc", "heldout_shape_acc", "heldout_motion_acc", "heldout_temporal_consistency",
              "ddim4_s_per_clip", "ddim2_s_per_clip", "flops_ratio_full_over_factorized",
              "ablation_joint_color_acc", "ablation_video_only_color_acc", "train_steps_per_s_measured"):
        assert k in f, k
    assert 1.5 < f["flops_ratio_full_over_factorized"] < 3
    assert [r["training"] for r in rec["tables"]["ablation"]] == ["joint video + images", "video only"]
    assert rec["tables"]["heldout"][1]["color_acc"] == 1.0, "the judge reads real held-out clips perfectly"
    conf = rec["tables"]["direction_confusion"]
    assert [r["asked"] for r in conf] == ["left", "right", "up", "down"]
    p = ch03.get_preset("smoke")
    assert sum(v for r in conf for k, v in r.items() if k != "asked") == p.eval_samples       # every clip counted
    assert f["loss_own_captions"] > 0 and f["loss_direction_flipped"] > 0
    assert f["flow_loss_own_captions"] > 0 and f["flow_loss_direction_flipped"] > 0
    assert [r["model"].split(",")[0] for r in rec["tables"]["motion_ablation"]] == [
        "with motion channels (the recipe)", "RGB only"]
    assert "motion_ablation_rgb_only_motion_acc" in f
    shift = rec["tables"]["shift_ablation"]                   # other schedule shifts, at the preset's seeds
    assert [(r["schedule_shift"], r["seed"]) for r in shift] == list(p.shift_ablation)
    assert f["shift_ablation_unshifted_motion_acc_min"] == min(r["motion_acc"] for r in shift if r["schedule_shift"] == 1)
    # the text encoder's own direction retrieval, beside motion_acc (chapter 02's measure, on its smoke encoder)
    tok, clip = ch02.load_clip("smoke", progress=False)
    assert f["text_direction_i2t"] == ch02.heldout_direction(clip, tok, ch02.get_preset("smoke").clip, 64)


def test_direction_reliance_is_zero_for_a_model_that_ignores_the_prompt():
    p = ch03.get_preset("smoke")
    cond = ch03.load_conditioner(p.video, progress=False)
    schedule = ch03.schedule_for(p.video)
    blind = lambda x, t, **kw: x * 0.5                                       # noqa: E731 - reads no text
    r = bench_ch03.direction_reliance(blind, schedule, cond, n=8, levels=(0.5,), frames=4)
    assert r["gap"] == 0.0 and r["true"] == r["flipped"] > 0

    def reader(x, t, pooled, **kw):                                          # its output depends on the text
        return x * 0 + pooled.mean(-1).view(-1, 1, 1, 1, 1)
    r = bench_ch03.direction_reliance(reader, schedule, cond, n=8, levels=(0.5,), frames=4)
    assert r["gap"] != 0.0
    # a motion-channel model gets its flow loss too; the RGB loss is the mean over the first 3 channels
    model = ch03.build_model(p.video, cond.dim)
    r = bench_ch03.direction_reliance(model, schedule, cond, n=8, levels=(0.5,), frames=4)
    assert r["flow_true"] > 0 and r["flow_flipped"] > 0 and r["true"] > 0
    with torch.no_grad():                        # undo every zero init, so the text reaches the output
        for w in model.parameters():
            if not w.any():
                w.normal_(0, 0.1)
    r = bench_ch03.direction_reliance(model, schedule, cond, n=8, levels=(0.5,), frames=4)
    assert r["gap"] != 0.0 and r["flow_flipped"] != r["flow_true"]
