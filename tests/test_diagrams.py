"""Architecture diagrams are drawn from the real models: shapes, skips and temporal marks match a real forward."""
import io

import pytest
import torch
from matplotlib.figure import Figure

from minivid import diagrams
from minivid.models import UNet2D, UNet3D, unet2d_config, unet3d_config
from minivid.models.blocks import AttentionBlock, Downsample, ResBlock, Upsample
from minivid.models.pseudo3d import Pseudo3DConfig, inflate
from minivid.models.temporal import TemporalAttention

HOOKED = (ResBlock, AttentionBlock, TemporalAttention, Downsample, Upsample)


def tiny2d():
    return UNet2D(unet2d_config("unet2d-tiny", context_dim=8, pooled_dim=8))


def tiny3d():
    return UNet3D(unet3d_config("unet3d-tiny", context_dim=8, pooled_dim=8, temporal_attn_levels=(0, 1),
                                channel_mult=(1, 2, 2),
                                attn_levels=(2,)))


def real_forward(model, x, **kw):
    """Shapes of every block/resampler/stem output, in call order, and the number of skip concatenations."""
    seen, cats = [], []
    mods = [model.stem] + [m for m in model.modules() if isinstance(m, HOOKED)]
    hooks = [m.register_forward_hook(lambda mod, a, out: seen.append((mod, tuple(out.shape)))) for m in mods]
    real_cat = torch.cat

    def counting_cat(tensors, dim=0, **k):
        cats.append(dim)
        return real_cat(tensors, dim=dim, **k)

    torch.cat = counting_cat
    try:
        with torch.no_grad():
            out = model(x, torch.zeros(x.shape[0], dtype=torch.long), **kw)
    finally:
        torch.cat = real_cat
        for h in hooks:
            h.remove()
    return seen, cats, out


def patches(fig: Figure, prefix: str):
    return [p for p in fig.axes[0].patches if (p.get_gid() or "").startswith(prefix)]


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


@pytest.mark.parametrize("make, x_shape", [(tiny2d, (2, 3, 16, 16)), (tiny3d, (1, 3, 4, 16, 16))],
                         ids=["unet2d", "unet3d"])
def test_recorded_shapes_are_those_of_the_real_forward(make, x_shape):
    model = make()
    recs = diagrams.record_unet(model, x_shape)
    kw = {"context": torch.zeros(x_shape[0], 2, 8), "pooled": torch.zeros(x_shape[0], 8)}
    seen, cats, out = real_forward(model, torch.zeros(x_shape), **kw)
    assert [(id(r.module), r.shape) for r in recs] == [(id(m), s) for m, s in seen]
    # and by arithmetic: N = B*T, the stem keeps H, W; the middle is at H / 2^(levels-1) with the widest channels
    cfg, N = model.cfg, x_shape[0] * (x_shape[2] if len(x_shape) == 5 else 1)
    H, f = x_shape[-1], 2 ** (len(cfg.channel_mult) - 1)
    assert recs[0].shape == (N, cfg.channels, H, H)
    assert {r.shape for r in recs if r.part == "mid"} == {(N, cfg.channels * cfg.channel_mult[-1], H // f, H // f)}
    assert recs[-1].shape == (N, cfg.channels * cfg.channel_mult[0], H, H) and out.shape == x_shape
    assert [r.kind for r in recs].count("attn+xattn") == sum(isinstance(m, AttentionBlock) for m in model.modules())


@pytest.mark.parametrize("make, x_shape", [(tiny2d, (2, 3, 16, 16)), (tiny3d, (1, 3, 4, 16, 16))],
                         ids=["unet2d", "unet3d"])
def test_one_skip_arrow_per_real_skip_connection(make, x_shape):
    model = make()
    _, cats, _ = real_forward(model, torch.zeros(x_shape), context=torch.zeros(x_shape[0], 2, 8),
                              pooled=torch.zeros(x_shape[0], 8))
    recs = diagrams.record_unet(model, x_shape)
    skips = diagrams.skip_connections(model, recs)
    assert len(skips) == cats.count(1) > 0
    for s, d in skips:                       # a skip joins an encoder output to a decoder block at its resolution
        assert recs[s].part in ("stem", "down") and recs[d].part == "up"
        assert recs[s].shape[-2:] == recs[d].shape[-2:]
    fig = diagrams.unet_diagram(model, x_shape)
    assert len(patches(fig, "skip")) == len(skips)
    assert len(patches(fig, "block:")) + len(patches(fig, "temporal:")) == len(recs)


def test_inflating_adds_the_temporal_marks():
    image = tiny2d()
    fig = diagrams.unet_diagram(image, (2, 3, 16, 16))
    assert patches(fig, "temporal:") == [] and patches(fig, "block:attn+xattn")
    video = inflate(tiny2d(), Pseudo3DConfig(head_dim=16))
    recs = diagrams.record_unet(video, (1, 3, 4, 16, 16))
    n_res = sum(isinstance(m, ResBlock) for m in video.modules())
    assert len(video.temporal) > 0
    assert [r.kind for r in recs].count("tattn") == len(video.temporal)
    assert [r.kind for r in recs].count("res+tconv") == n_res
    fig = diagrams.unet_diagram(video, (1, 3, 4, 16, 16))
    assert len(patches(fig, "temporal:")) == len(video.temporal) + n_res
    assert len(patches(fig, "skip")) == len(diagrams.skip_connections(video, recs))
    assert png_bytes(fig).startswith(b"\x89PNG")


def test_unet3d_marks_its_temporal_layers_and_renders():
    model = tiny3d()
    fig = diagrams.unet_diagram(model, (1, 3, 4, 16, 16))
    n_t = sum(isinstance(m, TemporalAttention) for m in model.modules())
    n_res = sum(isinstance(m, ResBlock) for m in model.modules())
    assert len(patches(fig, "temporal:tattn")) == n_t and len(patches(fig, "temporal:res+tconv")) == n_res
    spatial = UNet3D(unet3d_config("unet3d-tiny", conv="spatial", temporal_attn_levels=()))
    assert patches(diagrams.unet_diagram(spatial, (1, 3, 4, 16, 16)), "temporal:") == []
    assert png_bytes(fig).startswith(b"\x89PNG")


def test_factorized_block_shapes_are_measured():
    steps = dict(diagrams.factorized_block_shapes())
    assert steps["fold_frames"] == "(B*T, C, H, W)" and steps["unfold_frames"] == "(B, C, T, H, W)"
    assert steps["pixel sequences"] == "(B*H*W, T, C)"
    assert steps["spatial conv (1, 3, 3)"] == steps["temporal conv (3, 1, 1)"] == "(B, C, T, H, W)"
    fig = diagrams.factorized_block_diagram()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "(B*T, C, H, W) -> (B*H*W, T, C)" in texts and "(B, C, T, H, W)" in texts
    assert png_bytes(fig).startswith(b"\x89PNG")


def test_pipeline_diagram_puts_a_shape_on_every_arrow():
    stages = [("text encoder", "(B, L, D)"), ("base", "(B, 3, 8, 16, 16)"), ("SSR", "(B, 3, 8, 32, 32)")]
    for vertical in (False, True):
        fig = diagrams.pipeline_diagram(stages, title="cascade", input_shape="prompt", vertical=vertical)
        assert len(patches(fig, "stage")) == 3 and len(patches(fig, "flow")) == 4
        texts = {t.get_text() for t in fig.axes[0].texts}
        assert {"(B, L, D)", "(B, 3, 8, 32, 32)", "prompt"} <= texts
        assert png_bytes(fig).startswith(b"\x89PNG")
    assert len(patches(diagrams.pipeline_diagram([("a", "x"), ("b", None)]), "flow")) == 1
    with pytest.raises(ValueError, match="stages must be"):
        diagrams.pipeline_diagram([])
    with pytest.raises(ValueError, match="is not a product"):
        diagrams._symbols((4,), {"B": 2, "C": 3})
