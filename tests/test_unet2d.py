"""Chapter 01 models: the 2-D U-Net (and the toy MLP) — shapes, zero init, hooks, conditioning."""
import pytest
import torch
from torch import nn

from minivid.diffusion import guided_predict
from minivid.models import DiffusionMLP, MLPConfig, UNet2D, unet2d_config
from minivid.models.blocks import AttentionBlock, ResBlock
from minivid.compare import assert_close


def _tiny(**kw):
    torch.manual_seed(0)
    return UNet2D(unet2d_config("unet2d-tiny", **kw))


def _randomize_zero_params(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_shapes_images_video_and_presets():
    m = _tiny()
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 10, 999])
    assert m(x, t).shape == (3, 3, 16, 16)
    assert m(torch.randn(2, 3, 4, 8, 8), torch.tensor([1, 2])).shape == (2, 3, 4, 8, 8)
    for name in ("unet2d-small",):
        assert UNet2D(unet2d_config(name))(torch.randn(1, 3, 16, 16), torch.tensor([5])).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        unet2d_config("unet2d-huge")
    with pytest.raises(ValueError, match=r"x must be"):
        m(torch.randn(2, 1, 16, 16), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(2, 3, 15, 15), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"t must be"):
        m(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="context_dim=None"):
        m(x, t, context=torch.randn(3, 4, 8))


def test_zero_init_output_and_identity_residual_branches():
    m = _tiny(context_dim=8)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    assert torch.equal(m(x, t), torch.zeros_like(x)), "zero-initialised output conv must give exactly 0"
    h, emb = torch.randn(2, 32, 8, 8), torch.randn(2, 64)
    for blk in m.blocks():
        if isinstance(blk, AttentionBlock):
            assert torch.equal(blk(h[:, :blk.channels], emb, context=torch.randn(2, 5, 8)), h[:, :blk.channels])
    res = ResBlock("r", 32, 32, 64, 8, 0.0)
    assert torch.equal(res(h, emb), h), "a fresh ResBlock is the identity (zero-init second conv)"


def test_gradients_reach_every_parameter():
    m = _randomize_zero_params(_tiny(context_dim=8, pooled_dim=6))
    out = m(torch.randn(2, 3, 16, 16), torch.tensor([3, 500]), context=torch.randn(2, 5, 8),
            context_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool), pooled=torch.randn(2, 6))
    out.pow(2).mean().backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


def test_determinism_and_batch_independence():
    a, b = _randomize_zero_params(_tiny()), _randomize_zero_params(_tiny())
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([1, 2, 3, 4])
    assert torch.equal(a(x, t), b(x, t))
    # each example is processed independently (GroupNorm, not BatchNorm)
    assert_close(a(x[1:2], t[1:2]), a(x, t)[1:2], atol=1e-5, rtol=1e-5)


def test_cross_attention_masking():
    m = _randomize_zero_params(_tiny(context_dim=8)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    ctx = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    ctx2 = ctx.clone()
    ctx2[~mask] = 100.0                                           # padded tokens must not matter
    assert_close(m(x, t, context=ctx, context_mask=mask), m(x, t, context=ctx2, context_mask=mask), atol=1e-5, rtol=1e-5)
    assert (m(x, t, context=ctx) - m(x, t, context=ctx2)).abs().max() > 1e-3   # ...but do when unmasked
    none = torch.zeros(2, 5, dtype=torch.bool)                    # all masked == no text
    assert_close(m(x, t, context=ctx, context_mask=none), m(x, t), atol=1e-6, rtol=1e-6)


def test_cfg_scale_one_is_exactly_the_conditional_model():
    m = _randomize_zero_params(_tiny(context_dim=8)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    cond = {"context": torch.randn(2, 5, 8), "context_mask": torch.ones(2, 5, dtype=torch.bool)}
    uncond = {"context": torch.zeros(2, 5, 8), "context_mask": torch.zeros(2, 5, dtype=torch.bool)}
    with torch.no_grad():
        assert torch.equal(guided_predict(m, x, t, cond, uncond, 1.0), m(x, t, **cond))
        batched = guided_predict(m, x, t, cond, uncond, 3.0, "batch")
        twice = guided_predict(m, x, t, cond, uncond, 3.0, "twice")
    assert_close(batched, twice, atol=1e-5, rtol=1e-5)


class _Recorder(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.ch, self.seen = ch, []

    def forward(self, h, emb, num_frames, **_):
        self.seen.append((tuple(h.shape), num_frames))
        return h


def test_temporal_insertion_points_and_video_folding():
    m = _randomize_zero_params(_tiny()).eval()
    x = torch.randn(2, 3, 4, 8, 8)                                 # (B, C, T, H, W)
    t = torch.tensor([10, 20])
    with torch.no_grad():
        ref = m(x, t)
        # no temporal layers: a video is a batch of independent frames
        per_frame = torch.stack([m(x[:, :, i], t) for i in range(4)], dim=2)
    assert_close(ref, per_frame, atol=1e-5, rtol=1e-5)
    points = m.insertion_points()
    assert "mid0_attn" in points and "down0_0_res" in points and all(c > 0 for c in points.values())
    names = m.add_temporal_layers(lambda n, c: _Recorder(c))
    assert names == list(points) and set(m.temporal) == set(points)
    with torch.no_grad():
        assert torch.equal(m(x, t), ref), "identity temporal layers must not change the output"
    for n in names:
        rec = m.temporal[n]
        assert rec.seen[-1][1] == 4 and rec.seen[-1][0][:2] == (8, rec.ch)
    # per-frame timesteps (B, T)
    with torch.no_grad():
        assert m(x, torch.tensor([[10] * 4, [20] * 4])).shape == x.shape
    with pytest.raises(ValueError, match="unknown insertion point"):
        m.add_temporal_layers(lambda n, c: nn.Identity(), where=["nowhere"])


def test_mlp_shapes_and_gradients():
    m = DiffusionMLP(MLPConfig(hidden=32, depth=2, time_dim=16))
    x, t = torch.randn(5, 2, requires_grad=True), torch.randint(0, 100, (5,))
    out = m(x, t)
    assert out.shape == (5, 2)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    with pytest.raises(ValueError, match=r"x must be"):
        m(torch.randn(5, 3), t)
