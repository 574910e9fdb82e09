"""Released weights (weights/, `minivid.release`): each release is the very checkpoint today's recipe would train,
installs itself into an empty cache, loads without training, and a changed recipe is caught here."""
import json

import pytest
import torch

from minivid import release
from minivid.pipelines import common
from minivid.pipelines.common import pretrained, pretrained_path
from minivid.train import TrainConfig, train
from minivid.utils import load_checkpoint


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVID_HOME", str(tmp_path))
    return tmp_path / "checkpoints"


def test_the_manifest_lists_what_the_demo_loads():
    m = release.manifest()
    got = [(e["name"], e["preset"], e["seed"]) for e in m["models"]]
    assert got == list(release.RELEASED), "run `python -m minivid.release` after changing RELEASED"
    for e in m["models"]:
        assert e["figures"], f"{e['name']}: the judged figures of the released model are recorded"


@pytest.mark.parametrize("entry", release.manifest()["models"], ids=lambda e: e["name"])
def test_each_release_is_todays_recipe(entry):
    now = pretrained_path(entry["name"], entry["preset"], entry["seed"]).name
    assert entry["file"] == now, (f"{entry['name']}'s recipe changed since its release ({entry['file']} -> {now}); "
                                  "retrain and run `python -m minivid.release`, or the demo trains from scratch")
    path = common.RELEASE_DIR / entry["file"]
    assert path.exists() and release.sha256(path) == entry["sha256"], "the release file is the one recorded"
    ck = load_checkpoint(path)
    assert ck["released"] and ck.get("opt") is None and ck["step"] == entry["steps"]
    assert ck["model"] is ck["ema"] or all(torch.equal(a, b) for a, b in zip(ck["model"].values(), ck["ema"].values()))


def test_a_fresh_cache_installs_and_loads_the_releases_without_training(empty_cache, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("a released model was trained instead of loaded")
    monkeypatch.setattr(common, "train", no_training)
    assert not release.stale()
    for name, preset, seed in release.RELEASED:
        path = pretrained_path(name, preset, seed)
        assert path.parent == empty_cache and path.exists(), "installed into the (empty) cache on first use"
        assert path.read_bytes() == (common.RELEASE_DIR / path.name).read_bytes()
        pretrained(name, preset, seed, progress=False)                 # loads; never reaches train()
    tok, enc = pretrained("ch02.text_encoder", "full", progress=False)
    assert enc(*tok.encode(["a big red circle"]))[1].shape[0] == 1


def test_a_changed_recipe_is_reported_stale(tmp_path, monkeypatch):
    m = release.manifest()
    m["models"][0]["file"] = "ch02-clip-full-seed0-0000000000.pt"
    fake = tmp_path / "RELEASED.json"
    fake.write_text(json.dumps(m))
    monkeypatch.setattr(release, "MANIFEST", fake)
    lines = release.stale()
    assert len(lines) == 1 and "another recipe" in lines[0] and "python -m minivid.release" in lines[0]


def test_a_release_cannot_be_resumed_short_of_its_steps(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "released.pt"
    torch.save({"format": "minivid-train-v1", "step": 3, "model": model.state_dict(), "ema": model.state_dict(),
                "released": True}, path)
    cfg = TrainConfig(steps=5, batch_size=1, ckpt_path=str(path), progress=False)
    with pytest.raises(Exception, match="weights only"):
        train(model, lambda m, b, g: m(b).sum(), lambda s, g: torch.zeros(1, 2), cfg)
    done = train(model, lambda m, b, g: m(b).sum(), lambda s, g: torch.zeros(1, 2),
                 TrainConfig(steps=3, batch_size=1, ckpt_path=str(path), progress=False))
    assert done.step == 3, "a finished release loads as a finished run"


def test_demo_train_removes_installed_releases_and_stops_installing(empty_cache, monkeypatch):
    monkeypatch.delenv("MINIVID_NO_RELEASES", raising=False)          # restored (absent) after the test
    paths = [pretrained_path(n, p, s) for n, p, s in release.RELEASED]  # installed
    assert all(p.exists() for p in paths)
    gone = release.forget_installed()
    assert sorted(gone) == sorted(paths) and not any(p.exists() for p in paths)
    assert not pretrained_path(*release.RELEASED[0]).exists(), "no longer installed: the model trains here"


def test_a_release_carries_no_figures_measured_on_another_recipe(tmp_path, monkeypatch):
    (tmp_path / "ch02.json").write_text(json.dumps({"seed": 0, "figures": {"clip_steps": 800},
                                                    "tables": {"seeds": [{"seed": 0, "heldout_color_acc": 1.0}]}}))
    monkeypatch.setattr(release, "RESULTS_DIR", tmp_path)
    assert release.recorded_figures("ch02.text_encoder", 0, 800) == {"heldout_color_acc": 1.0}
    assert release.recorded_figures("ch02.text_encoder", 0, 1200) == {}, "a record of 800 steps is not a 1,200-step model's"
    ck = tmp_path / "ch02-clip-full-seed0-x.pt"
    common.write_training_record(ck, {"steps": 1200, "heldout_direction_i2t": 0.99, "train_wall_s": 200.0})
    assert release.released_figures("ch02.text_encoder", 0, ck, 1200) == {"heldout_direction_i2t": 0.99}
    assert release.released_figures("ch02.text_encoder", 0, ck, 800) == {"heldout_direction_i2t": 0.99,
                                                                        "heldout_color_acc": 1.0}
