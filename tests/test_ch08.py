"""Chapter 08 recipes, the DiT on chapter 07's causal-VAE latents: batches cut exact causal prefixes and flip
direction with the caption, the two objectives' losses, flow sampling's noise and guidance, caching, clear errors."""
from dataclasses import replace

import pytest
import torch

from minivid.bench import ch08 as bench08
from minivid.bench import run_bench
from minivid.compare import assert_close
from minivid.diffusion import diffusion_loss
from minivid.diffusion.flow import flow_matching_loss, flow_sample
from minivid.pipelines import ch07, ch08, common
from minivid.pipelines.common import pretrained
from minivid.text import caption_dropout
from minivid.utils import make_generator

pytestmark = pytest.mark.usefixtures("one_thread")
SMOKE = ch08.get_preset("smoke")


@pytest.fixture(scope="module")
def cond():
    return pretrained("ch02.conditioner", "smoke", progress=False)


@pytest.fixture(scope="module")
def data(cond):
    return ch08.training_data(replace(SMOKE.dit, frames=(5, 9)), 0, cond)


class Zero(torch.nn.Module):
    """A velocity model that predicts 0 (what a DiT does at initialisation, adaLN-Zero)."""

    def forward(self, x, t, **_):
        return torch.zeros_like(x)


def test_recipes_check_their_fields():
    with pytest.raises(ValueError, match="13 or 17"):
        ch08.DiTRecipe(frames=(16,))                       # a causal VAE's latents need 1 + 4k frames
    ch08.DiTRecipe(space="pixel", frames=(16,))            # pixels take any length
    for bad in (dict(space="voxels"), dict(objective="eps"), dict(t_sampler="beta"), dict(frames=()),
                dict(p_uncond=1.5), dict(model="dit-huge"), dict(overrides={"heads": 5})):
        with pytest.raises(ValueError):
            ch08.DiTRecipe(**bad)


def test_item_shapes_follow_the_causal_vae():
    r = ch08.get_preset("full").dit
    assert ch08.item_shape(r, 17) == (4, 5, 8, 8) and ch08.item_shape(r, 13) == (4, 4, 8, 8)
    assert ch08.item_shape(replace(r, space="pixel"), 16) == (3, 16, 32, 32)
    with pytest.raises(ValueError, match="13 or 17"):
        ch08.item_shape(r, 15)


def test_batches_are_causal_prefixes_with_the_right_direction_and_caption(data):
    r = replace(SMOKE.dit, frames=(5, 9), batch_size=6, time_reversal=0.5)
    fn = ch08.batch_fn_for(r, data)
    lengths = set()
    for step in range(12):
        g = make_generator(step)
        b = fn(step, g)
        n = b["x"].shape[2]
        lengths.add(n)
        # replay the draws: length, items, direction, then the posterior noise over the whole 5-latent clip
        g = make_generator(step)
        n_want = [2, 3][int(torch.randint(0, 2, (1,), generator=g))]
        idx = torch.randint(0, len(data["fwd"]["text"]["pooled"]), (6,), generator=g)
        back = torch.rand(6, generator=g) < 0.5
        src = [data["rev" if bk else "fwd"] for bk in back]
        mean = torch.stack([s["mean"][i] for s, i in zip(src, idx)])
        std = torch.stack([s["std"][i] for s, i in zip(src, idx)])
        want = (mean + std * torch.randn(mean.shape, generator=g))[:, :, :n_want]
        assert n == n_want and torch.equal(b["x"], want), "a prefix of 1 + a latent frames of the whole clip"
        pooled = torch.stack([s["text"]["pooled"][i] for s, i in zip(src, idx)])
        assert torch.equal(b["pooled"], pooled), "a backwards clip reads its own (direction-flipped) caption"
    assert lengths == {2, 3}, "both trained lengths occur"


def test_reversed_latents_are_their_own_encoding_not_a_flip(data):
    # the causal VAE's first latent frame is an image of the first frame: reversing the clip changes it
    assert not torch.allclose(data["rev"]["mean"], data["fwd"]["mean"].flip(2))


@pytest.mark.parametrize("objective,t_loc", [("flow", 0.0), ("flow", 1.0), ("v", 0.0)])
def test_the_loss_is_the_objectives_own(objective, t_loc, cond, data):
    r = replace(SMOKE.dit, objective=objective, p_uncond=0.5, t_loc=t_loc)
    net = ch08.build_dit(r, cond.dim)
    with torch.no_grad():                                  # leave adaLN-Zero's zeros: a model that says something
        for q in net.parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=make_generator(1)))
    batch = ch08.batch_fn_for(r, data)(0, make_generator(0))
    null = cond.null_features()
    got = ch08.loss_fn_for(r, null)(net, batch, make_generator(7))[0]
    g = make_generator(7)
    text, _ = caption_dropout({k: batch[k] for k in null}, null, 0.5, generator=g)
    want = (flow_matching_loss(net, batch["x"], g, cond=text, t_sampler=r.t_sampler, loc=t_loc) if objective == "flow" else
            diffusion_loss(net, batch["x"], common.schedule_for(r), "v", generator=g, cond=text))
    assert_close(got, want, atol=0, rtol=0)


def test_guided_flow_starts_from_guided_ddims_noise_and_is_plain_at_scale_one(cond):
    prompts = ["a big red circle moving to the right", "a small blue square moving up", ""]
    shape = (4, 2, 8, 8)
    x = common.guided_flow(Zero(), cond, prompts, shape, guidance=3.0, steps=4, seed=5, batch_size=2, progress=False)
    assert torch.equal(x, torch.randn((3, *shape), generator=make_generator(5))), "v = 0 leaves the noise where it is"

    class Cond(torch.nn.Module):                           # a velocity that depends on the caption
        def forward(self, x, t, pooled=None, **_):
            return 0.1 * x + pooled[:, :4, None, None, None]
    one = common.guided_flow(Cond(), cond, prompts[:2], shape, guidance=1.0, steps=3, seed=1, progress=False)
    plain = flow_sample(Cond(), (2, *shape), 3, cond=cond(prompts[:2]), noise=torch.randn((2, *shape),
                        generator=make_generator(1)))
    assert_close(one, plain, atol=0, rtol=0)               # CFG at scale 1 is the conditional model alone


def test_smoke_trains_caches_and_generates_any_valid_length():
    net, state = ch08.train_dit("smoke", progress=False)
    path = ch08.checkpoint_path("smoke")
    assert common.is_finished(path, SMOKE.dit.steps) and state.step == SMOKE.dit.steps
    again = ch08.load_dit("smoke", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    x = ch08.generate(["a big red circle moving to the right"] * 2, preset="smoke", progress=False)
    assert x.shape == (2, 3, 9, 32, 32) and x.abs().max() <= 1
    x13 = ch08.generate(["a small blue square moving up"], preset="smoke", frames=13, progress=False)
    assert x13.shape == (1, 3, 13, 32, 32), "a length the smoke DiT never trained on"
    with pytest.raises(ValueError, match="9 or 13"):
        ch08.generate(["a red circle"], preset="smoke", frames=12, progress=False)
    assert ch08.checkpoint_path("smoke") != ch08.checkpoint_path("smoke", recipe=replace(SMOKE.dit, objective="v"))
    v = ch08.generate(["a red circle"], preset="smoke", recipe=replace(SMOKE.dit, objective="v"), progress=False)
    assert v.shape == (1, 3, 9, 32, 32)


def test_the_latents_come_from_chapter_07():
    lat = pretrained("ch07.latents", "smoke", progress=False)
    assert lat["vae"] == ch07.checkpoint_path("vae", "smoke").name
    assert ch08.checkpoint_path("smoke").name != ch08.checkpoint_path("smoke", seed=1).name


def test_bench_ch08_smoke_reports_what_the_issue_names():
    rec = run_bench("ch08", "smoke", seeds=2)
    f, t = rec["figures"], rec["tables"]
    sense = "heldout_motion_sense_acc"          # defined only when some clip moves along its asked axis
    assert (sense in f) == (f["heldout_motion_axis_acc"] > 0)
    if sense in f:
        assert f["heldout_motion_acc"] == pytest.approx(f["heldout_motion_axis_acc"] * f[sense])
    optional = (sense, "tloc0_motion_sense_acc")
    for k in (*(h for h in bench08.HEADLINE if h not in optional), "heldout_flicker_real", "factorized_over_full_step_time", "factorized_over_full_peak_mem",
              "main_tokens", "pixel_tokens", "pixel_sample_s_per_clip"):
        assert k in f, k
    assert [r["seed"] for r in t["seeds"]] == [0, 1]
    assert all({"tloc0_motion_acc", "tloc0_validity"} <= set(r) for r in t["seeds"]), "SD3's times at every seed"
    sd3 = replace(ch08.get_preset("smoke").dit, t_loc=0.0)
    assert sd3 != ch08.get_preset("smoke").dit and ch08.checkpoint_path("smoke", 0, sd3).exists()
    arch = t["architectures"]
    assert [r["DiT"].split(",")[0] for r in arch] == ["latent", "latent", "pixels"]
    assert arch[0]["params"] == arch[1]["params"], "full and factorised attention: the same parameters"
    assert all(r["GFLOPs/step"] > 0 and r["step peak MiB"] > 0 and r["train step s"] > 0 for r in arch)
    assert f["pixel_tokens"] > f["main_tokens"]
    samplers = {(r["sampler"], r["steps"]) for r in t["samplers"]}
    assert samplers == {(s, n) for s in ("flow matching, Euler", "flow matching, Heun", "v-prediction, DDIM")
                        for n in bench08.SETTINGS["smoke"]["steps_grid"]}
    assert {r["sampled frames"] for r in t["lengths"]} == set(bench08.SETTINGS["smoke"]["lengths"])
    for r in t["samplers"] + t["lengths"] + arch:
        assert 0 <= r["motion_acc"] <= 1 and 0 <= r["validity"] <= 1
