"""Chapter 04's video-text step with the motion cue: a text-to-motion prior fitted on captioned clips
(`ch04_prior.fit_motion_prior`), and the interpolation network's cue read off its known frames alone
(`ch04_interp.known_cue`, `estimate_velocity(..., times=)`)."""
import pytest
import torch

from minivid.compare import assert_close
from minivid.data import WorldConfig, estimate_velocity, parse_caption, render, sample_batch, sample_params
from minivid.models.pseudo3d import interpolation_mask
from minivid.pipelines import ch04, ch04_prior
from minivid.models.temporal import shifted
from minivid.pipelines.ch04_interp import (gap_mask, interp_batch_fn, interp_loss_fn, known_cue, linear_fill, path_fill,
                                           reads_cue)
from minivid.utils import make_generator

pytestmark = pytest.mark.usefixtures("one_thread")


class WordText:
    """A stand-in text encoder: a caption's pooled vector is one-hot in its (direction, speed) words, with two
    numbers for its colour; tokens are its pooled vector then padding (garbage) the mask hides."""

    def __call__(self, prompts):
        pooled = torch.zeros(len(prompts), 10)
        for i, p in enumerate(prompts):
            d = parse_caption(p)
            pooled[i, 2 * d["direction"] + d["speed"]] = 1
            pooled[i, 8 + d["color"] % 2] = 1
        context = torch.cat([pooled[:, None], torch.full((len(prompts), 3, 10), 99.0)], 1)
        mask = torch.tensor([[True, False, False, False]]).expand(len(prompts), 4)
        return {"context": context, "context_mask": mask, "pooled": pooled}


class TokensOnly(WordText):
    def __call__(self, prompts):
        out = super().__call__(prompts)
        del out["pooled"]
        return out


def _clips(n, split, seed):
    b = sample_batch(n, kind="video_text", split=split, size=16, frames=8, generator=make_generator(seed))
    return b["captions"], b["x"]


@pytest.mark.parametrize("cond", [WordText(), TokensOnly()], ids=["pooled", "masked mean of the tokens"])
def test_the_motion_prior_learns_each_prompts_velocity_from_captioned_clips(cond):
    caps, x = _clips(200, "train", 1)
    prior = ch04_prior.fit_motion_prior(cond, caps, x, ridge=1e-6)
    test_caps, _ = _clips(64, "heldout", 2)
    got = prior(cond, test_caps)
    assert got.shape == (64, 2) and got.dtype == torch.float32
    # the grammar's velocity of each prompt: the prior never read a word, only the clips' pixels
    assert_close(got, ch04_prior.prior_motion(test_caps, 8), atol=0.03, name="learnt velocity")
    # the closed form against float64 least squares on the same design (ridge -> 0: the same predictions)
    X = torch.cat([ch04_prior.text_vector(cond, caps), torch.ones(200, 1, dtype=torch.float64)], 1)
    Y = estimate_velocity(x, WorldConfig(size=16, frames=8)).double()
    W = torch.linalg.lstsq(X, Y, driver="gelsd").solution
    Xt = torch.cat([ch04_prior.text_vector(cond, test_caps), torch.ones(64, 1, dtype=torch.float64)], 1)
    assert_close(Xt @ prior.weight, Xt @ W, atol=1e-4, name="ridge vs lstsq")


def test_without_captioned_clips_the_motion_is_a_world_motion_at_random_and_bad_input_is_refused():
    caps, x = _clips(8, "train", 1)
    prompts = ["a big red circle moving to the left"] * 16
    assert torch.equal(ch04_prior.learned_motion(None, WordText(), prompts, 8, seed=3),
                       ch04_prior.prior_motion([""] * 16, 8, seed=3))
    prior = ch04_prior.fit_motion_prior(WordText(), caps, x)
    assert torch.equal(ch04_prior.learned_motion(prior, WordText(), prompts, 8), prior(WordText(), prompts))
    with pytest.raises(ValueError, match="one caption per clip"):
        ch04_prior.fit_motion_prior(WordText(), caps[:3], x)


@pytest.mark.parametrize("task", ["interp", "extrap", "gap"])
def test_the_cue_from_the_known_frames_is_the_whole_clips_motion_and_reads_nothing_else(task):
    T = 15 if task == "interp" else 12
    world = WorldConfig(size=16, frames=T)
    x = render(sample_params(16, "train", "video", world, make_generator(4)), world, T)
    mask = {"interp": interpolation_mask(T, list(range(0, T, 2))), "extrap": interpolation_mask(T, list(range(8))),
            "gap": gap_mask(T, 4)}[task]
    cue = known_cue(x, mask)
    whole = ch04.cue_inputs(estimate_velocity(x, world), T)         # displacement per frame, read off every frame
    assert_close(cue["motion"], whole["motion"], atol=3e-3, name="displacement per frame")
    hidden = torch.where(mask.bool()[None, None, :, None, None], x, torch.rand_like(x))
    assert torch.equal(known_cue(hidden, mask)["motion"], cue["motion"]), "the missing frames were read"
    # a typical wrong answer: the known frames taken as consecutive (their places in the clip forgotten)
    idx = mask.nonzero().flatten()
    naive = ch04.cue_inputs(estimate_velocity(x[:, :, idx], WorldConfig(size=16, frames=len(idx))), len(idx))
    if task == "interp":
        assert (naive["motion"] - whole["motion"]).abs().max() > 0.02


def test_the_interpolation_batches_carry_the_known_frames_cue_and_the_loss_passes_it_on():
    p = ch04.get_preset("smoke")
    assert p.video.motion_cue
    T = p.interp.interp_frames
    pools = {"interp": torch.randint(0, 255, (4, 3, T, 16, 16), dtype=torch.uint8),
             "extrap": torch.randint(0, 255, (4, 3, p.interp.extrap_frames, 16, 16), dtype=torch.uint8)}
    batch = interp_batch_fn(p, pools)(0, make_generator(0))
    assert_close(batch["motion"], known_cue(batch["known"], batch["mask"][0])["motion"], atol=0, name="cue")
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, t, **kw):
            seen.update(kw)
            return torch.zeros_like(x)
    loss_fn = interp_loss_fn(ch04.image_model(p.video, progress=False).schedule, "v", {"context": torch.zeros(2, 4)})
    loss_fn(Spy(), batch, make_generator(1))
    assert torch.equal(seen["motion"], batch["motion"]) and torch.equal(seen["extra_emb"], batch["extra_emb"])
    assert not reads_cue(Spy())


def test_shifted_moves_content_by_whole_pixels_as_a_float64_roll_does():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    x[:, :, 3:5, 2:4] = torch.rand(2, 3, 2, 2, dtype=torch.float64)     # away from the edges (edges are repeated)
    d = torch.tensor([[2 * 2 / 8, 0.0], [-1 * 2 / 8, 3 * 2 / 8]], dtype=torch.float64)   # (x, y): 2 px right; 1 left 3 down
    want = torch.stack([torch.roll(x[0], 2, -1), torch.roll(torch.roll(x[1], -1, -1), 3, -2)])
    assert_close(shifted(x, d), want, atol=1e-12, name="shifted")


def test_path_fill_follows_the_path_where_blending_ghosts_and_blends_single_in_betweens():
    world = WorldConfig(size=16, frames=12)
    x = render(sample_params(32, "train", "video", world, make_generator(5)), world, 12)
    gap = gap_mask(12, 4)
    miss = gap == 0
    err = lambda y: (y[:, :, miss] - x[:, :, miss]).pow(2).mean().item()    # noqa: E731
    assert err(path_fill(x, gap)) < 0.25 * err(linear_fill(x, gap)), (err(path_fill(x, gap)), err(linear_fill(x, gap)))
    first = interpolation_mask(12, list(range(8)))                          # extrapolation: the last frame moved on
    late = slice(8, None)
    assert (path_fill(x, first)[:, :, late] - x[:, :, late]).pow(2).mean() < \
        0.25 * (linear_fill(x, first)[:, :, late] - x[:, :, late]).pow(2).mean()
    every_other = interpolation_mask(11, list(range(0, 11, 2)))
    assert torch.equal(path_fill(x[:, :, :11], every_other), linear_fill(x[:, :, :11], every_other))
    hidden = torch.where(gap.bool()[None, None, :, None, None], x, torch.rand_like(x))
    assert torch.equal(path_fill(hidden, gap)[:, :, miss], path_fill(x, gap)[:, :, miss]), "missing frames were read"
    assert torch.equal(path_fill(x, gap)[:, :, ~miss], x[:, :, ~miss]), "known frames are kept"
