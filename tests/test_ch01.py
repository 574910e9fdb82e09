"""Chapter 01 recipes and benchmark: toy data, distances, cached training, the smoke bench."""
import math

import pytest
import torch

from minivid.eval import mmd_rbf, sliced_wasserstein
from minivid.pipelines import ch01


def _g(s):
    return torch.Generator().manual_seed(s)


@pytest.mark.parametrize("kind", ch01.TOY_KINDS)
def test_toy_data_shape_scale_and_determinism(kind):
    x = ch01.toy_data(4000, kind, _g(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert float(x.mean(0).abs().max()) < 0.5 and 0.3 < float(x.std(0).min()) and float(x.abs().max()) < 4
    assert torch.equal(x, ch01.toy_data(4000, kind, _g(0)))
    with pytest.raises(ValueError, match="kind"):
        ch01.toy_data(10, "circles")


def test_distances_separate_distributions():
    a, b = ch01.toy_data(800, "moons", _g(1)), ch01.toy_data(800, "moons", _g(2))
    c = ch01.toy_data(800, "eight_gaussians", _g(3))
    assert abs(mmd_rbf(a, b)) < 0.01 < mmd_rbf(a, c)
    assert sliced_wasserstein(a, b) < 0.1 < sliced_wasserstein(a, c)
    # reference: for a pure shift by d in 1-D, W1 = |d|; sliced over unit directions in 2-D: mean |cos| * d = 2d/pi
    shift = torch.tensor([1.0, 0.0])
    assert math.isclose(sliced_wasserstein(a, a + shift, n_proj=2000), 2 / math.pi, rel_tol=0.05)


def test_smoke_training_is_cached_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVID_HOME", str(tmp_path))
    m1, s, st = ch01.train_toy("smoke", progress=False)
    path = ch01.checkpoint_path("toy", "smoke")
    assert path.exists() and st.step == ch01.PRESETS["smoke"].toy.steps
    assert ch01.training_record(path)["steps"] == st.step
    m2, _, st2 = ch01.train_toy("smoke", progress=False)
    assert st2.resumed_from == st.step                      # loaded, not retrained
    x = torch.randn(7, 2)
    t = torch.randint(0, s.T, (7,))
    assert torch.equal(m1(x, t), m2(x, t))
    pts = ch01.sample_toy(m2, s, "smoke", n=50, sampler="ddim", steps=5)
    assert pts.shape == (50, 2) and torch.isfinite(pts).all()


def test_smoke_bench_runs_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVID_HOME", str(tmp_path))
    from minivid.bench import run_bench
    rec = run_bench("ch01", "smoke", out=tmp_path / "ch01.json", seeds=2)
    f = rec["figures"]
    # two training seeds: each headline figure per seed, with its mean and worst, from two different models
    rows = rec["tables"]["seeds"]
    assert [r["seed"] for r in rows] == [0, 1] and f["seeds"] == [0, 1]
    assert rows[0]["toy_mmd_ddpm"] == f["toy_mmd_ddpm"] and rows[0]["toy_sw_ddpm"] != rows[1]["toy_sw_ddpm"]
    for k in ("toy_mmd_ddpm", "toy_sw_ddpm"):
        assert f[f"{k}_min"] == min(r[k] for r in rows) and f[f"{k}_max"] == max(r[k] for r in rows)
        assert abs(f[f"{k}_mean"] - (rows[0][k] + rows[1][k]) / 2) < 1e-12
    for k in ("toy_mmd_ddpm", "toy_mmd_ddim10", "toy_mmd_data_vs_data", "image_validity_ddpm50",
              "image_validity_ddim5", "image_frechet_ddim10", "image_train_steps_per_s"):
        assert k in f and isinstance(f[k], (int, float)), k
    assert 0.0 <= f["image_validity_ddim5"] <= 1.0
    assert rec["tables"]["images"][0]["validity"] > 0.9        # real images are valid to the judge
    assert abs(f["toy_mmd_data_vs_data"]) < 0.05
    assert (tmp_path / "ch01.json").exists()
