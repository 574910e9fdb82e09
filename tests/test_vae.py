"""Chapter 06 model: the KL-regularised image autoencoder of latent diffusion (LDM, arXiv:2112.10752)."""
import math

import pytest
import torch

from minivid.compare import assert_close
from minivid.models.vae import (
    VAE_PRESETS,
    AutoencoderKL,
    DiagonalGaussian,
    frame_difference_mse,
    latent_scale_factor,
    psnr,
    vae_config,
    vae_loss,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kw):
    torch.manual_seed(0)
    return AutoencoderKL(vae_config("vae-tiny", **kw))


def _gaussian(shape=(3, 4, 5, 6), seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=g, dtype=dtype)
    return DiagonalGaussian(mean, 2 * torch.randn(shape, generator=g, dtype=dtype))


# ----------------------------------------------------------------------------- the posterior
@pytest.mark.exercise("6.1")
def test_kl_matches_closed_form_float64():
    q = _gaussian()
    mu, logvar = q.mean, q.logvar
    # KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2)/2 - 1/2, per dimension, summed per item
    ref = torch.tensor([math.fsum(-0.5 * lv + 0.5 * (math.exp(lv) + m * m) - 0.5
                                  for m, lv in zip(mu[b].flatten().tolist(), logvar[b].flatten().tolist()))
                        for b in range(mu.shape[0])], dtype=F64)
    assert q.kl().shape == (3,)
    assert_close(q.kl(), ref, atol=1e-9, rtol=1e-12, name="KL vs closed form")


@pytest.mark.exercise("6.1")
def test_kl_matches_torch_distributions():
    q = _gaussian(shape=(2, 4, 3, 8, 8), seed=3)   # a video posterior (B, c, T, h, w)
    p = torch.distributions.Normal(q.mean, q.std)
    ref = torch.distributions.kl_divergence(p, torch.distributions.Normal(torch.zeros_like(q.mean), 1.0))
    assert_close(q.kl(), ref.flatten(1).sum(1), atol=1e-9, rtol=1e-10, name="KL vs torch.distributions")
    standard = DiagonalGaussian(torch.zeros(2, 4, 3, 3, dtype=F64), torch.zeros(2, 4, 3, 3, dtype=F64))
    assert torch.equal(standard.kl(), torch.zeros(2, dtype=F64)), "KL(N(0, I) || N(0, I)) must be 0"


def test_sample_is_reparameterised_with_the_generator():
    q = _gaussian(dtype=torch.float32)
    a = q.sample(torch.Generator().manual_seed(7))
    b = q.sample(torch.Generator().manual_seed(7))
    assert torch.equal(a, b), "same generator, same sample"
    assert not torch.equal(a, q.sample(torch.Generator().manual_seed(8)))
    eps = torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(7))
    assert_close(a, q.mean + torch.exp(0.5 * q.logvar) * eps, atol=1e-6, rtol=1e-6, name="mean + std * eps")
    assert torch.equal(q.mode(), q.mean)
    # gradients flow to mean and logvar through the sample
    mean, logvar = q.mean.clone().requires_grad_(), q.logvar.clone().requires_grad_()
    DiagonalGaussian(mean, logvar).sample(torch.Generator().manual_seed(7)).sum().backward()
    assert torch.equal(mean.grad, torch.ones_like(mean)) and logvar.grad.abs().sum() > 0
    # logvar is clamped, like LDM's
    big = DiagonalGaussian(torch.zeros(1, 2), torch.tensor([[-100.0, 100.0]]))
    assert big.logvar.tolist() == [[-30.0, 20.0]]
    with pytest.raises(ValueError, match="mean and logvar"):
        DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- the scale factor
@pytest.mark.exercise("6.2")
def test_latent_scale_factor_closed_form():
    # +-a alternating over n elements: mean 0, unbiased std = a * sqrt(n / (n - 1))
    n, a = 2 * 4 * 8 * 8, 2.5
    z = a * torch.tensor([1.0, -1.0]).repeat(n // 2).reshape(2, 4, 8, 8)
    assert latent_scale_factor(z) == pytest.approx(1 / (a * math.sqrt(n / (n - 1))), rel=1e-12)
    # channel 0 all +1, channel 1 all -1: every per-channel std is 0, the std over ALL elements ~ 1
    z = torch.cat([torch.ones(3, 1, 4, 4), -torch.ones(3, 1, 4, 4)], dim=1)
    m = z.numel()
    assert latent_scale_factor(z) == pytest.approx(math.sqrt((m - 1) / m), rel=1e-12)
    # scale-equivariant: twice the latents, half the factor; and the scaled latents have unit std
    z = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1
    s = latent_scale_factor(z)
    assert latent_scale_factor(2 * z) == pytest.approx(s / 2, rel=1e-9)
    assert float((z.double() * s).std()) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.exercise("6.2")
def test_latent_scale_factor_samples_the_posterior():
    # q with mean 0 and std 2: samples have std ~ 2 -> factor ~ 0.5 (the mean alone has std 0)
    q = DiagonalGaussian(torch.zeros(64, 4, 8, 8), torch.full((64, 4, 8, 8), math.log(4.0)))
    s = latent_scale_factor(q, generator=torch.Generator().manual_seed(0))
    assert s == pytest.approx(0.5, rel=0.01)
    assert s == latent_scale_factor(q.sample(torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="latents"):
        latent_scale_factor(torch.zeros(2, 4))


# ----------------------------------------------------------------------------- the autoencoder
def test_shapes_presets_and_errors():
    m = _tiny()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    q = m.encode(x)
    assert q.shape == (2, 4, 8, 8) and m.decode(q.mean).shape == x.shape
    recon, post = m(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and post.shape == (2, 4, 8, 8)
    v = torch.rand(2, 3, 5, 16, 24) * 2 - 1
    assert m.encode(v).shape == (2, 4, 5, 4, 6) and m(v)[0].shape == v.shape
    for name in VAE_PRESETS:
        cfg = vae_config(name)
        assert cfg.extra["preset"] == name and cfg.downsample_factor == 4
    assert vae_config("vae-tiny", channel_mult=(1, 2)).downsample_factor == 2
    with pytest.raises(ValueError, match="unknown VAE preset"):
        vae_config("vae-huge")
    with pytest.raises(ValueError, match="groups"):
        vae_config("vae-tiny", channels=12)
    with pytest.raises(ValueError, match="channel_mult"):
        vae_config("vae-tiny", channel_mult=())
    with pytest.raises(ValueError, match="latent_channels"):
        vae_config("vae-tiny", latent_channels=0)
    with pytest.raises(ValueError, match=r"x must be \(B, 3, H, W\)"):
        m.encode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="multiples of 4"):
        m.encode(torch.zeros(2, 3, 30, 32))
    with pytest.raises(ValueError, match=r"z must be \(B, 4, H, W\)"):
        m.decode(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="recon"):
        vae_loss(m, x, recon="l2")


def test_video_is_encoded_and_decoded_frame_by_frame():
    m = _tiny().double()
    v = torch.rand(2, 3, 4, 16, 16, dtype=F64) * 2 - 1
    q = m.encode(v)
    z = q.sample(torch.Generator().manual_seed(0))
    rec = m.decode(z)
    for t in range(4):
        qt = m.encode(v[:, :, t])
        assert_close(q.mean[:, :, t], qt.mean, atol=1e-12, rtol=1e-12, name=f"mean of frame {t}")
        assert_close(q.logvar[:, :, t], qt.logvar, atol=1e-12, rtol=1e-12, name=f"logvar of frame {t}")
        assert_close(rec[:, :, t], m.decode(z[:, :, t]), atol=1e-12, rtol=1e-12, name=f"decode of frame {t}")
    assert_close(q.kl(), sum(m.encode(v[:, :, t]).kl() for t in range(4)), atol=1e-9, rtol=1e-12,
                 name="a clip's KL is the sum of its frames'")


def test_psnr():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] += 0.2                                  # MSE 0.04 -> 10 log10(4 / 0.04) = 20 dB
    y[1, 0, 0, 0] = 2.0                          # MSE 4/48 -> 10 log10(48)
    assert_close(psnr(y, x), torch.tensor([20.0, 10 * math.log10(48)]), atol=1e-4, rtol=0, name="psnr")
    assert psnr(x, x).isinf().all()
    assert psnr(y, x, data_range=1.0)[0] == pytest.approx(20 - 20 * math.log10(2), abs=1e-4)
    with pytest.raises(ValueError, match="one shape"):
        psnr(x, x[:1])


def test_loss_weights_kl_per_element_like_ldm():
    m = _tiny()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    loss0, met0 = vae_loss(m, x, kl_weight=0.0, generator=g())
    loss1, met1 = vae_loss(m, x, kl_weight=1e-2, generator=g())
    assert loss0.item() == pytest.approx(met0["rec"]) and met0["kl"] == pytest.approx(met1["kl"])
    recon, post = m(x, generator=g())
    assert met0["rec"] == pytest.approx((recon - x).pow(2).mean().item(), rel=1e-6)
    assert loss1.item() == pytest.approx(met1["rec"] + 1e-2 * post.kl().mean().item() / (3 * 16 * 16), rel=1e-6)
    _, met_l1 = vae_loss(m, x, kl_weight=0.0, generator=g(), recon="l1")
    assert met_l1["rec"] == pytest.approx((recon - x).abs().mean().item(), rel=1e-6)
    assert met0["psnr"] == pytest.approx(psnr(recon.clamp(-1, 1), x).mean().item(), rel=1e-5)


def test_the_temporal_weight_adds_the_frame_difference_error_of_clips():
    m = _tiny()
    x = torch.rand(2, 3, 4, 16, 16) * 2 - 1                          # clips, encoded frame by frame
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    loss0, _ = vae_loss(m, x, kl_weight=1e-6, generator=g())
    loss1, _ = vae_loss(m, x, kl_weight=1e-6, generator=g(), temporal_weight=2.0)
    recon, _ = m(x, generator=g())
    r, xx = recon.detach().double(), x.double()                       # the oracle: frame-to-frame changes, float64
    want = sum(((r[:, :, t + 1] - r[:, :, t]) - (xx[:, :, t + 1] - xx[:, :, t])).pow(2).sum() for t in range(3))
    want = want / (2 * 3 * 3 * 16 * 16)
    assert frame_difference_mse(recon, x).item() == pytest.approx(want.item(), rel=1e-5)
    assert (loss1 - loss0).item() == pytest.approx(2.0 * want.item(), rel=1e-4)
    steady = x + 0.1                                                  # the same error on every frame: no flicker
    assert frame_difference_mse(steady, x).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="T >= 2"):
        frame_difference_mse(x[:, :, :1], x[:, :, :1])


def test_a_few_steps_on_four_images_reduce_the_loss():
    from minivid.data import sample_batch
    m = _tiny(channels=8, groups=4)
    x = sample_batch(4, kind="image", size=16, generator=torch.Generator().manual_seed(0))["x"]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for i in range(8):
        loss, _ = vae_loss(m, x, kl_weight=1e-6, generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
