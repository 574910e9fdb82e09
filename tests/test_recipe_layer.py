"""The shared recipe layer (minivid.pipelines.common) and the command line built on it: cache keys that
never reuse a stale model, earlier chapters' models by name, sampling seeds that never train, and bad
arguments refused before any work starts."""
import warnings
from dataclasses import dataclass, replace

import pytest
import torch

from minivid.cli import main
from minivid.cli.chapters import chapter_names, demo_chapter, video_chapters
from minivid.pipelines import ch02, ch03, common


def test_cache_key_covers_recipe_seed_data_and_model_version(monkeypatch):
    r = ch03.get_preset("smoke").video
    base = common.checkpoint_path("chXX", "m", "smoke", 0, r, version=1)
    assert base.name.startswith("chXX-m-smoke-seed0-") and base.suffix == ".pt"
    assert common.checkpoint_path("chXX", "m", "smoke", 0, r, version=1) == base, "the key is deterministic"
    assert common.checkpoint_path("chXX", "m", "smoke", 1, r, version=1) != base
    assert common.checkpoint_path("chXX", "m", "smoke", 0, r, version=2) != base, "a code bump retrains"
    from dataclasses import replace
    assert common.checkpoint_path("chXX", "m", "smoke", 0, replace(r, lr=r.lr * 2), version=1) != base
    monkeypatch.setattr(common, "DATA_VERSION", common.DATA_VERSION + 1)
    assert common.checkpoint_path("chXX", "m", "smoke", 0, r, version=1) != base, "new data retrains"


def test_an_added_field_at_its_default_leaves_the_key_alone_and_set_keys_like_any_field():
    """`added_field`: a recipe gaining an option must not orphan every checkpoint trained before it. The key of a
    recipe with the field at its default is the key the recipe had without it, nested or not; set, it differs."""
    from dataclasses import dataclass, field, replace

    @dataclass(frozen=True)
    class Old:
        lr: float = 1e-3
        levels: tuple = (0, 1)
        extra: dict = field(default_factory=lambda: {"a": (1, 2)})

    @dataclass(frozen=True)
    class New(Old):
        motion: bool = common.added_field(False)

    @dataclass(frozen=True)
    class Preset:
        name: str
        recipe: object

    key = lambda *parts: common.recipe_key(*parts, seed=3)                    # noqa: E731
    assert key(New()) == key(Old()) and key(Preset("x", New())) == key(Preset("x", Old()))
    assert key(New(motion=True)) != key(Old()) and key(Preset("x", New(motion=True))) != key(Preset("x", Old()))
    assert key(replace(New(), lr=2e-3)) != key(New()), "every other field still keys"
    assert key(Old()) == common.recipe_key(Old(), seed=3) != common.recipe_key(Old(), seed=4)


def test_a_stale_data_version_never_loads_the_old_checkpoint(monkeypatch):
    old = ch02.checkpoint_path("clip", "smoke")
    old_video = ch03.checkpoint_path("smoke")
    monkeypatch.setattr(common, "DATA_VERSION", common.DATA_VERSION + 1)
    assert ch02.checkpoint_path("clip", "smoke") != old
    assert ch03.checkpoint_path("smoke") != old_video, "downstream keys follow the upstream model's key too"


def test_preset_variants_train_apart_and_change_only_their_steps():
    p = ch03.get_preset("full")
    assert common.recipe_fields(p) == ("video",), "the recipes are the fields holding a dataclass with steps"
    q = common.with_steps(p, "video", 7)
    assert (q.name, q.video.steps) == ("full-steps7", 7) and q.video == replace(p.video, steps=7)
    assert common.with_steps(p, "video", None) is p
    assert ch03.checkpoint_path(q) != ch03.checkpoint_path(p), "a variant never shares the preset's checkpoints"
    two = common.with_recipe_steps(_Two("full", _Steps(5), _Steps(9)), "x", {"b": 2})
    assert (two.name, two.a.steps, two.b.steps) == ("x", 5, 2)
    assert common.with_steps(_Two("full", _Steps(5), _Steps(9)), ("a", "b"), 3) == _Two("full-steps3", _Steps(3),
                                                                                      _Steps(3))
    for bad, msg in [(lambda: common.with_steps(p, "video", 0), "--steps must be >= 1"),
                     (lambda: common.with_recipe_steps(p, "full", {"video": 2}), "must differ"),
                     (lambda: common.with_recipe_steps(p, "y", {"text": 2}), "not recipes of this preset"),
                     (lambda: common.with_recipe_steps(p, "y", {"video": 1.5}), "ints >= 1")]:
        with pytest.raises(ValueError, match=msg):
            bad()


@dataclass(frozen=True)
class _Steps:
    steps: int


@dataclass(frozen=True)
class _Two:
    name: str
    a: _Steps
    b: _Steps


def test_pretrained_by_name_and_unknown_names():
    tok, enc = common.pretrained("ch02.text_encoder", "smoke", progress=False)
    assert not any(p.requires_grad for p in enc.parameters())
    cond = common.pretrained("ch02.conditioner", "smoke", progress=False)
    assert cond.dim == enc.cfg.dim
    assert common.pretrained_path("ch02.text_encoder", "smoke") == ch02.checkpoint_path("clip", "smoke")
    with pytest.raises(KeyError, match="no trained model called 'ch02.nope'"):
        common.pretrained("ch02.nope")


def test_chapters_are_found_without_a_list():
    names = chapter_names()
    assert names[:3] == ["ch01", "ch02", "ch03"] and names == sorted(names)
    assert "ch03" in video_chapters() and "ch01" not in video_chapters()
    assert demo_chapter() in video_chapters()


def test_load_weights_messages(tmp_path):
    m = torch.nn.Linear(2, 2)
    path = tmp_path / "m.pt"
    torch.save({"step": 3, "model": m.state_dict(), "ema": None}, path)
    with pytest.raises(common.CheckpointError, match=r"unfinished \(step 3 of 10\).*resumes from step 3"):
        common.load_weights(m, path, steps=10, command="python -m minivid train ch03")
    with pytest.raises(common.CheckpointError, match="does not fit.*delete it and run `python -m minivid"):
        common.load_weights(torch.nn.Linear(3, 2), path, command="python -m minivid train ch03")
    assert common.load_weights(torch.nn.Linear(2, 2), path, steps=3) is not None


def test_generate_seed_picks_the_noise_and_never_trains(tmp_path, monkeypatch, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ch03.load_video_model("smoke", progress=False)                  # the cached smoke model (trained once)

    def no_training(*a, **k):
        raise AssertionError("generate --seed must not train anything")
    monkeypatch.setattr(common, "train", no_training)
    outs = []
    for seed in (0, 7):
        out = tmp_path / f"s{seed}.gif"
        assert main(["generate", "a big red circle moving to the right", "--model", "ch03", "--preset", "smoke",
                     "--steps", "2", "--seed", str(seed), "--out", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] != outs[1], "another seed, another sample from the same model"


class _Boom(Exception):
    pass


@pytest.mark.parametrize("argv,msg", [
    (["generate", "a red circle", "--out", "clip.txt"], "must end in .gif or .mp4"),
    (["generate", "a red circle", "--out", "/proc/nope/clip.gif"], "cannot write"),
    (["generate", "a red circle", "--model", "ch03", "--frames", "99"], "1 to 32 frames"),
    (["generate", "", "--out", "x.gif"], "prompt is empty"),
    (["generate", "a red circle", "--model", "ch01"], "no text-to-video generator"),
    (["generate", "a red circle", "--model", "chapter-three"], "is not a chapter"),
    (["demo", "--out", "demo.png"], "must end in .gif or .mp4"),
    (["train", "ch42"], "no chapter 'ch42'"),
    (["eval", "missing.gif", "--prompt", "a red circle"], "no such file"),
    (["eval", "x.gif", "--prompt", "  "], "prompt is empty"),
    (["data", "--size", "4", "--out", "d.gif"], "8 to 64 px"),
    (["data", "--frames", "40", "--out", "d.gif"], "1 to 32 frames"),
    (["exercises", "check", "two"], "is not a chapter"),
    (["generate", "a red circle", "--model", "ch05", "--stages", "tsr"], "starts at the base stage"),
    (["generate", "a red circle", "--model", "ch05", "--stages", "base,base"], "stages must be"),
    (["generate", "a red circle", "--model", "ch05", "--stages", "base", "--frames", "16"], "makes 8-frame clips"),
    (["generate", "a red circle", "--model", "ch03", "--stages", "base"], "has no stages"),
])
def test_bad_arguments_are_one_line_before_any_work(argv, msg, monkeypatch, capsys, tmp_path):
    def boom(*a, **k):
        raise _Boom("work started")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, "train", boom)
    monkeypatch.setattr(ch03, "load_video_model", boom)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and err.startswith("error:"), err


@pytest.mark.parametrize("argv", [["generate", "a", "--steps", "0"], ["generate", "a", "--guidance", "inf"],
                                  ["generate", "a", "--frames", "-3"], ["data", "-n", "-1"],
                                  ["train", "ch03", "--seed", "x"]])
def test_malformed_numbers_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and "--help" in err, err


def _files(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    (tmp_path / "text.gif").write_text("not a picture\n")
    iio.imwrite(tmp_path / "gray.png", np.zeros((16, 16), np.uint8))
    iio.imwrite(tmp_path / "tiny.gif", np.zeros((4, 4, 4, 3), np.uint8), extension=".gif")
    iio.imwrite(tmp_path / "long.gif", (np.arange(40)[:, None, None, None] * np.ones((1, 16, 16, 3))).astype(np.uint8),
                extension=".gif")
    (tmp_path / "afile").write_text("x")


@pytest.mark.parametrize("argv,msg", [
    (["eval", "text.gif", "--prompt", "a red circle"], "not a readable GIF/MP4"),
    (["eval", "gray.png", "--prompt", "a red circle"], "grayscale"),
    (["eval", "tiny.gif", "--prompt", "a red circle"], "8..64 px"),
    (["eval", "long.gif", "--prompt", "a red circle"], "1 to 32 frames"),
    (["data", "--out", "afile/x.gif"], "cannot write"),
    (["exercises", "export"], "needs a directory"),
    (["exercises", "export", "afile"], "is a file, not a folder"),
])
def test_bad_files_are_one_line(argv, msg, tmp_path, monkeypatch, capsys):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1, err


def test_a_checkpoint_with_non_finite_weights_is_refused_by_generate(tmp_path, monkeypatch, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ch03.load_video_model("smoke", progress=False)
    path = ch03.checkpoint_path("smoke")
    ck = torch.load(path, weights_only=True)
    bad = dict(ck, ema={k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in ck["ema"].items()})
    saved = path.read_bytes()
    try:
        torch.save(bad, path)
        assert main(["generate", "a red circle", "--model", "ch03", "--preset", "smoke", "--steps", "1",
                     "--out", str(tmp_path / "x.gif")]) == 1
        err = capsys.readouterr().err
        assert "non-finite weights" in err and not (tmp_path / "x.gif").exists()
    finally:
        path.write_bytes(saved)
