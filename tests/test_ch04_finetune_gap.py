"""Chapter 04: the fine-tune's new path from the caption into the temporal layers (`add_text_cross_attn`), and the
interpolation network's third task, a gap in the middle of a clip (`gap_mask`, `linear_fill`, the baseline)."""
import copy
from dataclasses import replace

import pytest
import torch

from minivid.data import from_uint8
from minivid.models import UNet2D, unet2d_config
from minivid.models.pseudo3d import (
    Pseudo3DConfig,
    TemporalThenText,
    add_text_cross_attn,
    inflate,
    interpolation_mask,
    temporal_parameters,
)
from minivid.models.temporal import TemporalAttention
from minivid.pipelines import ch04
from tiny_models import text_features


def _video(context_dim=8):
    torch.manual_seed(0)
    unet = UNet2D(unet2d_config("unet2d-tiny", context_dim=context_dim, pooled_dim=8))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                                      # every weight random, the temporal ones included
        for p in unet.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    video = inflate(unet, Pseudo3DConfig(attn_levels=(0,)))
    with torch.no_grad():
        for p in temporal_parameters(video):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return video.eval()


def test_adding_text_cross_attention_to_a_trained_video_model_changes_nothing_until_it_trains():
    video = _video()
    grown = add_text_cross_attn(copy.deepcopy(video), head_dim=4)
    n_attn = sum(isinstance(m, TemporalAttention) for m in video.modules())
    wrapped = [m for m in grown.temporal.values() if isinstance(m, TemporalThenText)]
    assert n_attn > 0 and len(wrapped) == n_attn, "every temporal attention gains one cross-attention"
    x, t, text = torch.randn(2, 3, 4, 8, 8), torch.tensor([10, 700]), text_features(2)
    with torch.no_grad():
        out, before = grown(x, t, **text), video(x, t, **text)
    assert before.abs().mean() > 0.01 and torch.equal(out, before), "zero-init: the same function, exactly"
    trainable = {n for n, p in grown.named_parameters() if p.requires_grad}
    assert {n for n, p in video.named_parameters() if p.requires_grad} <= {n.replace(".attn.", ".") for n in trainable}
    assert any(".cross." in n for n in trainable), "the new layers train"
    opt = torch.optim.SGD([p for p in grown.parameters() if p.requires_grad], lr=1.0)
    grown(x, t, **text).square().mean().backward()
    opt.step()
    with torch.no_grad():                                       # after one step the caption's tokens reach the frames
        a, b = grown(x, t, **text), grown(x, t, **{**text, "context": text_features(2, seed=4)["context"]})
    assert (a - b).abs().max() > 1e-4


def test_adding_text_cross_attention_needs_text_tokens():
    with pytest.raises(ValueError, match="needs an image model with text tokens"):
        add_text_cross_attn(_video(context_dim=None))


def test_gap_mask_removes_the_middle_frames():
    assert ch04.gap_mask(12, 4).tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]
    assert ch04.gap_mask(7, 3).tolist() == [1, 1, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="gap must leave a known frame"):
        ch04.InterpRecipe(extrap_frames=12, gap=11)


def test_linear_fill_is_exact_on_a_clip_linear_in_time_and_is_linear_blend_for_every_other_frame():
    T = 9
    a, b = torch.randn(2, 3, 1, 4, 4), torch.randn(2, 3, 1, 4, 4)
    ramp = a + b * torch.arange(T, dtype=torch.float64).view(1, 1, T, 1, 1)
    m = ch04.gap_mask(T, 5)
    known = torch.where(m.bool().view(1, 1, T, 1, 1), ramp, torch.full_like(ramp, 99.0))   # unknowns never read
    torch.testing.assert_close(ch04.linear_fill(known, m), ramp, atol=1e-12, rtol=0)
    clips = torch.randn(2, 3, 5, 4, 4)
    spread = torch.zeros(2, 3, 9, 4, 4)
    spread[:, :, ::2] = clips
    torch.testing.assert_close(ch04.linear_fill(spread, interpolation_mask(9, list(range(0, 9, 2)))),
                               ch04.linear_blend(clips))
    ends = ch04.linear_fill(ramp, interpolation_mask(T, [3, 5]))      # beyond the known frames: held
    assert torch.equal(ends[:, :, 0], ramp[:, :, 3]) and torch.equal(ends[:, :, -1], ramp[:, :, 5])
    with pytest.raises(ValueError, match="at least one known frame"):
        ch04.linear_fill(ramp, torch.zeros(T))


def test_the_interpolation_batches_take_the_three_tasks_in_turn():
    p = ch04.get_preset("smoke")
    i = p.interp
    pools = {"interp": torch.randint(0, 255, (4, 3, i.interp_frames, 16, 16), dtype=torch.uint8),
             "extrap": torch.randint(0, 255, (4, 3, i.extrap_frames, 16, 16), dtype=torch.uint8)}
    fn = ch04.interp_batch_fn(p, pools)
    g = torch.Generator().manual_seed(0)
    want = {"interp": interpolation_mask(i.interp_frames, list(range(0, i.interp_frames, 2))),
            "extrap": interpolation_mask(i.extrap_frames, list(range(p.video.frames))),
            "gap": ch04.gap_mask(i.extrap_frames, i.gap)}
    for step, task in enumerate(["interp", "extrap", "gap"] * 2):
        b = fn(step, g)
        assert torch.equal(b["mask"], want[task].expand(i.batch_size, -1)), (step, task)
        assert torch.equal(b["x"], b["known"]) and b["x"].shape[2] == len(want[task])
        rows = [from_uint8(c) for c in pools["interp" if task == "interp" else "extrap"]]
        assert all(any(torch.equal(x, r) or torch.equal(x, r.flip(1)) for r in rows) for x in b["x"])


def test_finetune_keys_follow_the_new_path():
    p = ch04.get_preset("smoke")
    off = replace(p, finetune=replace(p.finetune, text_cross_attn=False))
    assert p.finetune.text_cross_attn
    assert ch04.checkpoint_path("finetune", p, clips=8) != ch04.checkpoint_path("finetune", off, clips=8)


def test_bench_ch04_smoke_reports_every_figure_and_the_gap_is_where_blending_fails():
    import warnings

    from minivid.bench import run_bench
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = run_bench("ch04", "smoke")
    f = rec["figures"]
    for k in ("heldout_color_acc", "heldout_motion_plausible", "image_model_color_acc", "prior_parse_appearance_acc",
              "prior0_motion_acc", "prior8_motion_acc", "random_motion_plausible", "interp_psnr_network",
              "interp_psnr_linear", "gap_psnr_network", "gap_psnr_linear", "extrap_psnr_network", "interp15_flicker"):
        assert k in f, k
    curve = rec["tables"]["motion_prior_curve"]                     # at 0 clips: the random-motion row, not resampled
    assert [r["captioned clips"] for r in curve] == [0, 8] and f["prior0_motion_acc"] == curve[0]["motion_acc"]
    assert curve[0]["motion_plausible"] == f["random_motion_plausible"]
    # real held-out clips: an in-between is a fraction of a pixel from its neighbours, a gap's frames are pixels away
    assert f["gap_psnr_linear"] < f["interp_psnr_linear"] - 5, (f["gap_psnr_linear"], f["interp_psnr_linear"])


class _Zero(torch.nn.Module):
    """A stand-in network that predicts x0 = 0 everywhere: a residual interpolator that learnt nothing."""

    def __init__(self, residual):
        super().__init__()
        self.residual = residual

    def forward(self, x, t, **_):
        return torch.zeros_like(x)


class _NoText:
    def __call__(self, prompts):
        return {}

    def null(self, b):
        return {}


def test_a_residual_interpolator_starts_from_linear_blending_and_learns_only_what_it_gets_wrong():
    from minivid.diffusion import make_schedule
    schedule = make_schedule("cosine", 100)
    T = 7
    clips = torch.rand(2, 3, T, 4, 4) * 2 - 1
    m = ch04.gap_mask(T, 3)
    kw = dict(objective="x0", steps=3, noise_alpha=0.0)
    out = ch04.fill_frames(_Zero(True), schedule, _NoText(), clips, m, **kw)
    torch.testing.assert_close(out, ch04.linear_fill(clips, m).clamp(-1, 1))
    assert torch.equal(out[:, :, m.bool()], clips[:, :, m.bool()])
    plain = ch04.fill_frames(_Zero(False), schedule, _NoText(), clips, m, **kw)
    assert plain[:, :, ~m.bool()].abs().max() == 0, "a plain network's x0 = 0 is a black frame"
    # the loss: on a clip linear in time the residual is zero, so the zero network is exact only when residual
    ramp = (torch.linspace(-1, 1, T).view(1, 1, T, 1, 1) * torch.rand(2, 3, 1, 4, 4)).contiguous()
    batch = {"x": ramp, "known": ramp, "mask": m.expand(2, T), "blend": ch04.linear_fill(ramp, m)}
    null = {}
    g = torch.Generator().manual_seed(0)
    loss = ch04.interp_loss_fn(schedule, "x0", null)
    assert loss(_Zero(True), batch, g).item() < 1e-12
    assert loss(_Zero(False), batch, g).item() > 0.01


@pytest.mark.parametrize("train_all", [True, False])
def test_the_interpolation_fine_tune_moves_every_weight_only_when_told(train_all):
    import warnings
    p = ch04.get_preset("smoke")
    p = replace(p, interp=replace(p.interp, train_all=train_all))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        video, _, _ = ch04.load_video_model(p, progress=False)
        before = {n: q.clone() for n, q in video.named_parameters()}
        interp, _, _ = ch04.train_interpolator(p, progress=False)
    inside = {n[len("video."):]: q for n, q in interp.named_parameters() if n.startswith("video.")}
    temporal = {id(q) for q in temporal_parameters(video)}            # the layers grown on the image model
    spatial = [n for n, q in video.named_parameters() if id(q) not in temporal and "stem" not in n]
    assert spatial and all(torch.equal(q, before[n]) for n, q in video.named_parameters()), "the video model is kept"
    moved = [n for n in spatial if n in inside and not torch.equal(inside[n], before[n])]
    assert (len(moved) > 0) == train_all, moved[:3]
