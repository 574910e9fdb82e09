"""Chapter 07 model: the 3-D causal video VAE of CogVideoX (arXiv:2408.06072): 1 + 4k frames, conv cache, chunks."""
import pytest
import torch

from minivid.compare import assert_close
from minivid.models.video_vae import (
    VIDEO_VAE_PRESETS,
    CachedCausalConv,
    CausalVideoVAE,
    ChunkState,
    chunk_spans,
    largest_activation,
    latent_frames,
    video_frames,
    video_vae_config,
)
from tiny_models import randomize

F64 = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kw):
    """A narrow float64 model: exact comparisons are cheap."""
    torch.manual_seed(0)
    return randomize(CausalVideoVAE(video_vae_config("video-vae-tiny", channels=8, groups=4, **kw)).double(), scale=0.2)


def _clip(T=9, B=1, H=8, seed=0):
    return torch.rand(B, 3, T, H, H, generator=torch.Generator().manual_seed(seed), dtype=F64) * 2 - 1


@pytest.fixture(scope="module")
def model():
    return _model()


# ----------------------------------------------------------------------------- frame bookkeeping
@pytest.mark.exercise("7.1")
def test_latent_frames_1_plus_4k():
    assert [latent_frames(T) for T in (1, 5, 9, 13, 17, 49)] == [1, 2, 3, 4, 5, 13]
    assert latent_frames(7, factor=2) == 4 and latent_frames(6, factor=1) == 6
    for n in range(1, 8):
        assert latent_frames(video_frames(n)) == n
    with pytest.raises(ValueError, match="got 16 frames.*1 \\+ 4k frames: use 13 or 17"):
        latent_frames(16)
    for T, lo, hi in ((2, 1, 5), (4, 1, 5), (8, 5, 9), (18, 17, 21), (20, 17, 21)):
        with pytest.raises(ValueError, match=f"use {lo} or {hi}"):
            latent_frames(T)
    with pytest.raises(ValueError, match="got 6 frames.*1 \\+ 2k frames: use 5 or 7"):
        latent_frames(6, factor=2)
    with pytest.raises(ValueError, match="positive int"):
        latent_frames(0)


@pytest.mark.exercise("7.3")
def test_chunk_spans_first_1_plus_4a_then_4b():
    assert chunk_spans(17, 8) == [(0, 1), (1, 9), (9, 17)]
    assert chunk_spans(17, 12) == [(0, 5), (5, 17)]
    assert chunk_spans(17, 4) == [(0, 1), (1, 5), (5, 9), (9, 13), (13, 17)]
    assert chunk_spans(13, 16) == [(0, 13)]
    assert chunk_spans(1, 4) == [(0, 1)]
    assert chunk_spans(5, 2, factor=1) == [(0, 1), (1, 3), (3, 5)]     # latent frames for decoding
    assert chunk_spans(4, 3, factor=1) == [(0, 1), (1, 4)]
    for T in (1, 5, 9, 21, 33):
        for c in (4, 8, 12, 20):
            spans = chunk_spans(T, c)
            assert spans[0][0] == 0 and spans[-1][1] == T and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert (spans[0][1] - 1) % 4 == 0 and spans[0][1] <= 1 + c, spans
            assert all(b - a == c for a, b in spans[1:]), spans


def test_chunk_spans_errors():
    with pytest.raises(ValueError, match="chunk_frames must be a positive multiple of 4"):
        chunk_spans(17, 6)
    with pytest.raises(ValueError, match="use 13 or 17"):
        chunk_spans(16, 4)


# ----------------------------------------------------------------------------- the model
def test_shapes_presets_and_errors(model):
    m = CausalVideoVAE(video_vae_config("video-vae-tiny"))
    x = torch.rand(2, 3, 17, 32, 32) * 2 - 1
    q = m.encode(x)
    assert q.shape == (2, 4, 5, 8, 8)
    recon, post = m(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and post.shape == (2, 4, 5, 8, 8)
    assert model.decode(torch.zeros(1, 4, 3, 2, 2, dtype=F64)).shape == (1, 3, 9, 8, 8)
    for name in VIDEO_VAE_PRESETS:
        cfg = video_vae_config(name)
        assert cfg.extra["preset"] == name and (cfg.time_factor, cfg.spatial_factor) == (4, 4)
    m2 = _model(temporal_down=(True, False))
    assert m2.cfg.time_factor == 2 and m2.encode(_clip(T=7)).shape == (1, 4, 4, 2, 2)
    with pytest.raises(ValueError, match="got 16 frames; a causal video needs 1 \\+ 4k frames: use 13 or 17"):
        m.encode(torch.zeros(1, 3, 16, 32, 32))
    with pytest.raises(ValueError, match=r"x must be \(B, 3, T, H, W\)"):
        m.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multiples of 4"):
        m.encode(torch.zeros(1, 3, 5, 30, 32))
    with pytest.raises(ValueError, match=r"z must be \(B, 4, T, H, W\)"):
        m.decode(torch.zeros(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="unknown video VAE preset"):
        video_vae_config("video-vae-huge")
    with pytest.raises(ValueError, match="temporal_down"):
        video_vae_config("video-vae-tiny", temporal_down=(True,))
    with pytest.raises(ValueError, match="groups"):
        video_vae_config("video-vae-tiny", channels=12)


def test_first_frame_is_encoded_and_decoded_as_an_image(model):
    x = _clip(T=9)
    q = model.encode(x)
    alone = model.encode(x[:, :, :1])
    assert alone.shape[2] == 1
    assert_close(alone.mean, q.mean[:, :, :1], **TOL, name="first latent, frame alone vs whole clip")
    assert_close(alone.logvar, q.logvar[:, :, :1], **TOL, name="first logvar")
    assert_close(model.decode(q.mean[:, :, :1]), model.decode(q.mean)[:, :, :1], **TOL, name="first decoded frame")


def test_causality_latents_never_see_later_frames(model):
    x = _clip(T=13)
    z = model.encode(x).mean
    for t in range(1, 13):
        x2 = x.clone()
        x2[:, :, t] = torch.rand_like(x2[:, :, t])
        z2 = model.encode(x2).mean
        n = -(-t // 4)                       # frame t lives in latent ceil(t / 4): latents before it are fixed
        assert_close(z2[:, :, :n], z[:, :, :n], **TOL, name=f"latents before frame {t}'s")
        assert (z2[:, :, n] - z[:, :, n]).abs().max() > 1e-6, f"latent {n} must see frame {t}"
    zc = model.encode_chunked(x2, 4).mean    # chunked: an edit in the last chunk leaves earlier chunks alone
    assert_close(zc[:, :, :3], z[:, :, :3], **TOL, name="chunked, earlier chunks")


def test_kl_of_the_video_posterior(model):
    q = model.encode(_clip(T=5, B=2))
    ref = 0.5 * (q.mean ** 2 + q.logvar.exp() - 1 - q.logvar).sum(dim=(1, 2, 3, 4))
    assert_close(q.kl(), ref, atol=1e-9, rtol=1e-12, name="KL per clip")


def _run_chunks(stack, x, spans):
    state, outs = ChunkState(), []
    for i, (a, b) in enumerate(spans):
        state.first_chunk = i == 0
        outs.append(stack(x[:, :, a:b], state))
    return torch.cat(outs, dim=2)


@pytest.mark.exercise("7.2")
def test_conv_cache_is_handed_from_chunk_to_chunk(model):
    conv = randomize(CachedCausalConv(3, 4), scale=0.2).double()
    x = _clip(T=7)
    assert_close(_run_chunks(conv, x, [(0, 1), (1, 3), (3, 4), (4, 7)]), conv(x), **TOL, name="one conv, chunked")
    # the whole encoder / decoder, with spans written out by hand (independent of chunk_spans)
    x = _clip(T=17)
    for spans in ([(0, 1), (1, 9), (9, 17)], [(0, 5), (5, 9), (9, 13), (13, 17)], [(0, 13), (13, 17)]):
        assert_close(_run_chunks(model.encoder, x, spans), model.encoder(x), **TOL, name=f"encoder, chunks {spans}")
    z = model.encode(x).mean
    for spans in ([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)], [(0, 2), (2, 5)], [(0, 4), (4, 5)]):
        assert_close(_run_chunks(model.decoder, z, spans), model.decoder(z), **TOL, name=f"decoder, chunks {spans}")


@pytest.mark.exercise("7.2")
@pytest.mark.exercise("7.3")
@pytest.mark.parametrize("chunk", [4, 8, 12, 16])
def test_chunked_equals_whole(model, chunk):
    x = _clip(T=17, B=2)
    q, qc = model.encode(x), model.encode_chunked(x, chunk)
    assert_close(qc.mean, q.mean, **TOL, name=f"chunked mean, {chunk} frames a chunk")
    assert_close(qc.logvar, q.logvar, **TOL, name="chunked logvar")
    cl = chunk // 4
    assert_close(model.decode_chunked(q.mean, cl), model.decode(q.mean), **TOL, name=f"decode, {cl} latents a chunk")


@pytest.mark.exercise("7.2")
@pytest.mark.exercise("7.3")
def test_chunked_decoding_memory_does_not_grow_with_clip_length(model):
    peaks = {}
    for n in (3, 9):
        z = torch.randn(1, 4, n, 4, 4, dtype=F64)
        out, peaks["chunked", n] = largest_activation(model, model.decode_chunked, z, 2)
        assert out.shape == (1, 3, video_frames(n), 16, 16)
        _, peaks["whole", n] = largest_activation(model, model.decode, z)
        x = model.decode(z)
        _, peaks["enc chunked", n] = largest_activation(model, model.encode_chunked, x, 8)
    assert peaks["chunked", 9] == peaks["chunked", 3], peaks
    assert peaks["enc chunked", 9] == peaks["enc chunked", 3], peaks
    assert peaks["whole", 9] > 3 * peaks["chunked", 9], peaks   # the whole clip's activations: 33 frames at once
    # the largest tensor of chunked decoding is one chunk's: the last upsampler's output, 2 latents -> 8 frames
    # of 16 channels at 16x16 (whole: 33 frames)
    assert peaks["chunked", 9] == 1 * 16 * 8 * 16 * 16 and peaks["whole", 9] == 1 * 16 * 33 * 16 * 16, peaks

