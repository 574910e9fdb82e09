"""Inflating chapter 06's image VAE into chapter 07's causal video VAE (tail init): the first frame, and every frame
of a still clip, encode and decode exactly as the image VAE does; moving clips do not (time is still to learn)."""
from pathlib import Path

import pytest
import torch

from minivid.compare import assert_close
from minivid.models.inflate import inflate, inflated_config
from minivid.models.vae import AutoencoderKL, vae_config
from minivid.models.video_vae import CausalVideoVAE, video_vae_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _image_vae(**overrides):
    torch.manual_seed(0)
    vae = AutoencoderKL(vae_config("vae-tiny", **{"channels": 8, "groups": 4, **overrides})).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in vae.parameters():                                   # every weight random, biases included
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return vae


@pytest.mark.parametrize("blocks", [1, 2])
def test_the_first_frame_and_a_still_clip_are_the_image_vae_exactly(blocks):
    image = _image_vae(num_res_blocks=blocks)
    video = inflate(image).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 9, 16, 16, generator=g) * 2 - 1
    still = x[:, :, :1].expand(-1, -1, 9, -1, -1)
    with torch.no_grad():
        q_img = image.encode(x[:, :, 0])
        q = video.encode(x)
        assert_close(q.mean[:, :, 0], q_img.mean, atol=1e-5, rtol=1e-5, name="first latent frame: the image's mean")
        assert_close(q.logvar[:, :, 0], q_img.logvar, atol=1e-5, rtol=1e-5, name="and its log-variance")
        qs = video.encode(still)
        assert_close(qs.mean, q_img.mean[:, :, None].expand_as(qs.mean), atol=1e-5, rtol=1e-5, name="still clip")
        rec = video.decode(qs.mean)
        assert_close(rec, image.decode(q_img.mean)[:, :, None].expand_as(rec), atol=1e-5, rtol=1e-5,
                     name="decoded still clip: the image VAE's reconstruction on every frame")
        assert (q.mean[:, :, 1:] - qs.mean[:, :, 1:]).abs().amax() > 1e-3, "a moving clip's later latents differ"


def test_the_config_follows_the_image_vae_and_mismatches_are_refused():
    image = _image_vae()
    cfg = inflated_config(image)
    assert (cfg.channels, cfg.channel_mult, cfg.num_res_blocks, cfg.latent_channels, cfg.groups) == (8, (1, 2, 2), 1,
                                                                                                      4, 4)
    assert cfg.spatial_factor == image.cfg.downsample_factor and cfg.time_factor == 4
    ref = CausalVideoVAE(video_vae_config("video-vae-tiny"))
    assert sum(p.numel() for p in inflate(_image_vae(channels=16, groups=8)).parameters()) == sum(
        p.numel() for p in ref.parameters()), "chapter 06's vae-tiny inflates to chapter 07's video-vae-tiny"
    with pytest.raises(ValueError, match="temporal_down needs one bool per downsampling stage"):
        inflate(image, temporal_down=(True,))


def test_a_ch07_recipe_can_start_from_chapter_06s_image_vae(monkeypatch):
    from dataclasses import replace

    from minivid.pipelines import ch07
    from minivid.pipelines.common import pretrained
    p = ch07.get_preset("smoke")
    r = replace(p.vae, init="ch06")
    image = pretrained("ch06.vae", "smoke", 0, progress=False).vae
    video = ch07.initial_vae(r, "smoke", 0).eval()
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        assert_close(video.encode(x).mean[:, :, 0], image.encode(x[:, :, 0]).mean, atol=1e-5, rtol=1e-5,
                     name="starts as chapter 06's image VAE on the first frame")
    r0 = replace(r, init="scratch")
    path, scratch = ch07.checkpoint_path("vae", p, 0, r), ch07.checkpoint_path("vae", p, 0, r0)
    monkeypatch.setattr(ch07, "pretrained_path", lambda *a, **k: Path("ch06-vae-retrained.pt"))
    assert ch07.checkpoint_path("vae", p, 0, r) != path, "its checkpoint is keyed by the image VAE it started from"
    assert ch07.checkpoint_path("vae", p, 0, r0) == scratch, "from scratch: no upstream in the key"
    monkeypatch.undo()
    with pytest.raises(ValueError, match="init='ch06' inflates chapter 06's image VAE, whose widths"):
        ch07.initial_vae(replace(r, overrides={"channels": 16, "groups": 4}), "smoke", 0)
    with pytest.raises(ValueError, match="init must be one of"):
        replace(p.frame_vae, init="ch06")
