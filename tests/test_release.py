"""Released weights (weights/, `minivid.release`): each release is the very checkpoint today's recipe would train,
installs itself into an empty cache, loads without training, and a changed recipe is caught here."""
import json

import pytest
import torch

from minivid import release, utils
from minivid.cli.chapters import chapter_cli, demo_chapter
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
    assert got == release.demo_models(), "the demo's models changed: run `python -m minivid.release`"
    for e in m["models"]:
        assert e["figures"], f"{e['name']}: the judged figures of the released model are recorded"
        assert e["command"].startswith(f"python -m minivid train {e['name'].split('.')[0]} --preset {e['preset']}")


def test_the_demo_chapter_declares_every_model_its_generate_loads():
    """`ChapterCLI.models` is what gets released: the demo chapter's generate (smoke preset) loads nothing else."""
    spec = chapter_cli(demo_chapter(), "generate")
    with common.record_lookups(seeds=True) as asked:
        spec.generate(["a big red circle moving to the left"], preset="smoke", seed=0, steps=2, guidance=None,
                      frames=None)
    declared = {pretrained_path(*m).name for m in release.demo_models("smoke")}
    assert {pretrained_path(*m).name for m in asked} <= declared, (asked, declared)


def test_a_release_stores_a_tensor_another_release_holds_once_and_installs_whole(tmp_path):
    base = {"w": torch.randn(3, 2), "b": torch.zeros(2)}
    grown = {"w": base["w"].clone(), "b": torch.ones(2), "t": torch.zeros(2)}   # w: a frozen copy; t equals base's b
    seen = {}
    kept, shared = utils.shared_weights(base, seen, "base.pt")
    assert kept.keys() == base.keys() and not shared
    kept, shared = utils.shared_weights(grown, seen, "grown.pt")
    assert kept.keys() == {"b"} and shared == {"w": ["base.pt", "w"], "t": ["base.pt", "b"]}
    head = {"format": "minivid-train-v1", "step": 1, "released": True}
    torch.save({**head, "model": base, "ema": base}, tmp_path / "base.pt")
    torch.save({**head, "model": kept, "ema": kept, "shared": shared}, tmp_path / "grown.pt")
    utils.install_release(tmp_path / "grown.pt", tmp_path / "cache" / "grown.pt")
    ck = load_checkpoint(tmp_path / "cache" / "grown.pt")
    assert "shared" not in ck and ck["released"] and ck["model"].keys() == grown.keys()
    assert all(torch.equal(ck["model"][k], grown[k]) and torch.equal(ck["ema"][k], grown[k]) for k in grown)


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
    real_train = common.train

    def load_only(model, loss_fn, batch_fn, cfg, **k):            # train() loads a finished checkpoint, trains nothing
        if not common.is_finished(cfg.ckpt_path, cfg.steps):
            raise AssertionError("a released model was trained instead of loaded")
        return real_train(model, loss_fn, batch_fn, cfg, **k)
    monkeypatch.setattr(common, "train", load_only)
    assert not release.stale()
    for name, preset, seed in release.demo_models():
        path = pretrained_path(name, preset, seed)
        assert path.parent == empty_cache and path.exists(), "installed into the (empty) cache on first use"
        installed, shipped = load_checkpoint(path), load_checkpoint(common.RELEASE_DIR / path.name)
        for key, (file, there) in shipped.get("shared", {}).items():    # stored once, in the release it names
            shipped["model"][key] = load_checkpoint(common.RELEASE_DIR / file)["model"][there]
        assert installed["model"].keys() == shipped["model"].keys() and installed["step"] == shipped["step"]
        assert all(torch.equal(installed["model"][k], t) for k, t in shipped["model"].items())
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
    models = release.demo_models()
    paths = [pretrained_path(*m) for m in models]                   # installed
    assert all(p.exists() for p in paths)
    ck = load_checkpoint(paths[0])
    ck["released"] = False                                          # as if trained here: kept
    torch.save(ck, paths[0])
    gone = release.forget_installed()
    assert sorted(gone) == sorted(paths[1:]) and paths[0].exists() and not any(p.exists() for p in paths[1:])
    assert not pretrained_path(*models[1]).exists(), "no longer installed: the model trains here"


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
