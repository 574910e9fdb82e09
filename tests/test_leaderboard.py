"""The course leaderboard (`python -m minivid bench leaderboard`): its entries are found from the chapters' CLI specs,
every own training is scaled by one factor to the budget while upstream models stay as they are, the budget arithmetic
holds on a fake entry with known step times, the plot marks what it should, and the smoke bench runs end to end."""
import json
import os
import warnings
from dataclasses import dataclass, replace

import pytest
import torch

from minivid.bench import leaderboard as lb
from minivid.bench import run_bench
from minivid.cli.chapters import video_chapters
from minivid.pipelines import ch02, ch03, ch04, ch05, ch06, ch08, common
from minivid.utils import cache_dir

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- entries

def test_entries_are_the_video_chapters_and_their_variants():
    got = lb.entries("smoke")
    names = [e.name for e in got]
    assert not {"ch01", "ch02", "ch07"} & set(names), "images and an autoencoder are not text-to-video models"
    assert {"ch03", "ch04", "ch05", "ch06", "ch08", "ch08-pixel"} <= set(names)
    assert {e.chapter for e in got} == set(video_chapters())
    assert len(set(names)) == len(names) and names.index("ch08-pixel") == names.index("ch08") + 1
    by = {e.name: e for e in got}
    assert by["ch08"].preset is ch08.get_preset("smoke") and by["ch03"].preset is ch03.get_preset("smoke")
    pixel = by["ch08-pixel"].preset
    assert pixel.dit.space == "pixel" and by["ch08"].preset.dit.space == "latent"
    assert pixel.name != "smoke" and ch08.checkpoint_path(pixel) != ch08.checkpoint_path("smoke")
    assert pixel.dit.overrides["dim"] == by["ch08"].preset.dit.overrides["dim"], "the variant keeps the preset's net"


def test_entries_follow_the_cli_specs_not_a_list(monkeypatch):
    twin = lambda p: replace(p, name=f"{p.name}-twin")  # noqa: E731
    monkeypatch.setattr(ch03, "CLI", replace(ch03.CLI, variants={"twin": twin}))
    monkeypatch.setattr(ch04, "CLI", replace(ch04.CLI, frames=(1, 1)))           # a generator of single frames
    monkeypatch.setattr(ch02, "CLI", replace(ch02.CLI, generate=ch03.CLI.generate))
    by = {e.name: e for e in lb.entries("smoke")}
    assert by["ch03-twin"].preset.name == "smoke-twin" and by["ch03-twin"].chapter == "ch03"
    assert "ch04" not in by, "a chapter whose clips are one frame long is not an entry"
    assert "ch02" in by, "a chapter is an entry because its CLI generates clips, not because a list names it"


# ----------------------------------------------------------------------------- scaling the steps

def test_scale_steps_scales_every_recipe_and_nothing_else():
    p = ch06.get_preset("full")
    assert common.recipe_fields(p) == ch06.STAGES
    s = lb.scale_steps(p, 0.0371, "full-x")
    for k in ch06.STAGES:
        old, new = getattr(p, k), getattr(s, k)
        assert new.steps == max(1, round(old.steps * 0.0371)) and new.steps != old.steps
        assert replace(new, steps=old.steps) == old, f"{k}: only its steps change"
    assert (s.name, s.guidance, s.eval_samples, s.eval_steps) == ("full-x", p.guidance, p.eval_samples, p.eval_steps)
    assert ch06.checkpoint_path("vae", s) != ch06.checkpoint_path("vae", p), "the scaled models are cached apart"
    assert all(getattr(lb.scale_steps(p, 1e-9, "full-y"), k).steps == 1 for k in ch06.STAGES), "at least one step"

    p5 = ch05.get_preset("full")
    s5 = lb.scale_steps(p5, 0.5, "full-half", only=("tsr",))
    assert s5.tsr.steps == round(p5.tsr.steps / 2) and s5.ssr == p5.ssr and s5.baseline == p5.baseline
    assert s5.base_preset == p5.base_preset and ch05.base_recipe(s5) == ch05.base_recipe(p5), "upstream untouched"
    p8 = ch08.get_preset("full")
    s8 = lb.scale_steps(p8, 2.0, "full-double")
    assert s8.dit.steps == 2 * p8.dit.steps and s8.pixel_steps == p8.pixel_steps
    assert (s8.dit.text_preset, s8.dit.vae_preset) == ("full", "full")

    for bad in (dict(factor=0.0, name="n"), dict(factor=-1.0, name="n"), dict(factor=1.0, name="full"),
                dict(factor=1.0, name="n", only=("guidance",))):
        with pytest.raises(ValueError):
            lb.scale_steps(p, **bad)


@dataclass(frozen=True)
class _R:
    steps: int = 5
    lr: float = 1e-2
    batch_size: int = 4
    warmup_steps: int = 0
    ema_decay: float = 0.9


@dataclass(frozen=True)
class _P:
    name: str
    a: _R
    b: _R
    base_preset: str = "full"          # an upstream model's preset: not a recipe of this entry
    eval_steps: int = 20


def test_budget_factor_is_one_factor_for_every_training():
    steps, step_s = {"a": 100, "b": 300}, {"a": 0.1, "b": 0.2}                    # 10 s + 60 s
    assert lb.budget_factor(steps, step_s, 35.0) == pytest.approx(0.5)
    assert lb.budget_factor(steps, step_s, 700.0) == pytest.approx(10.0)
    p = _P("full", _R(100), _R(300))
    assert common.recipe_fields(p) == ("a", "b")
    s = lb.scale_steps(p, lb.budget_factor(steps, step_s, 7.0), "full-7s")
    assert (s.a.steps, s.b.steps, s.base_preset) == (10, 30, "full")
    s = lb.scale_steps(p, lb.budget_factor(steps, step_s, 0.07), "full-tiny")
    assert (s.a.steps, s.b.steps) == (1, 1), "0.1 and 0.3 steps round up to the one step every training needs"
    for bad in ((steps, step_s, 0.0), (steps, step_s, -5.0), ({"a": 1}, step_s, 1.0), (steps, {"a": 0.1, "b": 0}, 1.0),
                ({}, {}, 1.0)):
        with pytest.raises(ValueError):
            lb.budget_factor(*bad)


def _fake_cli():
    """A chapter whose CLI.train trains its preset's recipes a and b after an upstream model (tiny linear nets), its
    checkpoints named as `common.checkpoint_path` names them."""
    def batch_fn(step, g):
        return torch.randn(4, 3, generator=g)

    def loss_fn(net, x, g):
        return net(x).pow(2).mean()

    def train(preset, seed=0, steps=None):
        ckpt = cache_dir("checkpoints")
        for what, r, name in (("up", _R(steps=3), "upstream-full"), ("a", preset.a, preset.name),
                              ("b", preset.b, preset.name)):
            common.load_or_train(torch.nn.Linear(3, 1), loss_fn, batch_fn, r,
                                 ckpt / f"chxx-{what}-{name}-seed{seed}-{common.recipe_key(r, seed=seed)}.pt",
                                 seed=seed, desc=f"fake {what}" + ("" if what == "up" else f" ({preset.name})"),
                                 progress=False)
        return ckpt
    return common.ChapterCLI(train=train)


def test_plan_fits_a_fake_entry_with_known_step_times_to_the_budget(monkeypatch):
    known = {"fake a": 0.1, "fake b": 0.2}
    seen = []

    def fake_measure(setup, steps, profile_steps, top):
        seen.append(setup.desc)
        return {"params": 4, "trainable": 4, "GFLOPs/step": 2.0, "step s": 0.5 * known[setup.desc.split(" (")[0]]}, []
    monkeypatch.setattr(lb, "measure", fake_measure)
    monkeypatch.setattr(lb, "loop_step_s", lambda setup, steps: known[setup.desc.split(" (")[0]])
    entry = lb.Entry("chxx", "chxx", _fake_cli(), _P("full", _R(100), _R(300)))
    scaled, rows = lb.plan(entry, 35.0, reps=1)
    assert (scaled.a.steps, scaled.b.steps) == (50, 150) and scaled.name != "full"
    assert sorted(seen) == ["fake a (full-probe)", "fake b (full-probe)"], "the upstream model is not measured"
    assert [r["recipe"] for r in rows] == ["a", "b"] and [r["budget steps"] for r in rows] == [50, 150]
    assert sum(r["est. minutes"] for r in rows) == pytest.approx(35.0 / 60)
    assert all(scaled.name in r["training"] for r in rows)
    assert [r["compute step s"] for r in rows] == [0.05, 0.1], "the budget is the loop's time, not the bare step's"
    probe = cache_dir("checkpoints") / f"chxx-a-full-probe-seed0-{common.recipe_key(_R(1), seed=0)}.json"
    assert json.loads(probe.read_text())["steps"] == 1, "the probe trained one step"

    entry.cli.train(preset=scaled, seed=0)
    got = lb.recorded_trainings("chxx", scaled.name)
    assert sorted(got) == ["chxx-a", "chxx-b"] and all(m is not None for m in got.values()), "own records only"
    stale = cache_dir("checkpoints") / f"chxx-a-{scaled.name}-seed0-0000000000.json"
    stale.write_text(json.dumps({"steps": 1, "train_wall_s": 6000.0}))
    os.utime(stale, (1, 1))                                         # written long ago: an old recipe key's record
    assert lb.recorded_trainings("chxx", scaled.name) == got, "the newest record of each model counts"
    row = lb.board_row(entry, rows, ["chyy.up (full)"], got, {"clips": "8x16x16", "color_acc": 1.0, "shape_acc": 0.5,
                                                     "size_acc": 0.5, "motion_acc": 0.0, "frechet": 1.0,
                                                     "sample s/clip": 0.1})
    assert row["train min"] == pytest.approx(sum(got.values())) and row["mean_acc"] == 0.5
    assert row["GFLOPs/step"] == 2.0 and row["train TFLOPs"] == pytest.approx(200 * 2.0 / 1e3)
    assert row["reuses (full recipe, not counted)"] == "chyy.up (full)"
    assert lb.board_row(entry, rows, [], {"chxx-a": 1.0}, row)["train min"] is None, "a training unrecorded"


def test_loop_step_s_times_the_real_loop_on_a_copy():
    setups = []
    with common.capture_training() as setups:
        _fake_cli().train(_P("full", _R(3), _R(3)), seed=0)
    s = setups[1]
    before = [q.clone() for q in s.model.parameters()]
    assert lb.loop_step_s(s, 5) > 0
    assert all(torch.equal(a, b) for a, b in zip(before, s.model.parameters())), "the setup's model is not trained"


def test_run_entry_resumes_what_an_earlier_run_finished(monkeypatch):
    calls, judged_steps = {"measure": 0, "judge": 0}, []

    def fake_measure(setup, steps, profile_steps, top):
        calls["measure"] += 1
        return {"params": 4, "trainable": 4, "GFLOPs/step": 2.0, "step s": 0.1}, []

    def fake_judge(entry, preset, prompts, judge, seed):
        calls["judge"] += 1
        judged_steps.append((preset.a.steps, preset.b.steps))
        return {"clips": "8x16x16", "color_acc": 1.0, "shape_acc": 1.0, "size_acc": 1.0, "motion_acc": 0.5,
                "frechet": 1.0, "sample s/clip": 0.1}
    monkeypatch.setattr(lb, "measure", fake_measure)
    monkeypatch.setattr(lb, "loop_step_s", lambda setup, steps: 0.1)
    monkeypatch.setattr(lb, "judge_entry", fake_judge)
    entry = lb.Entry("chxx", "chxx", _fake_cli(), _P("full", _R(100), _R(300)))
    prompts = {"captions": ["a"] * 3}
    row, rows = lb.run_entry(entry, 6.0, 1, prompts, None, seed=0)
    assert calls == {"measure": 2, "judge": 1} and row["resumed"] is False and row["entry wall s"] > 0
    assert [r["budget steps"] for r in rows] == [15, 45]
    path = lb.progress_path(entry, 6.0, 3, seed=0)
    assert json.loads(path.read_text())["row"]["motion_acc"] == 0.5

    again = lb.run_entry(entry, 6.0, 1, prompts, None, seed=0)
    assert calls == {"measure": 2, "judge": 1} and again == (row, rows), "a finished entry is kept, not redone"

    state = json.loads(path.read_text())
    del state["row"]                                                       # interrupted after its plan was kept
    state["steps"] = {"a": 7, "b": 9}                                      # (as a slower machine would have planned)
    path.write_text(json.dumps(state))
    row2, _ = lb.run_entry(entry, 6.0, 1, prompts, None, seed=0)
    assert calls == {"measure": 2, "judge": 2}, "the kept plan is used: nothing is measured again"
    assert row2["resumed"] is True and judged_steps == [(15, 45), (7, 9)], "the kept step counts are trained"

    for other in (lb.progress_path(entry, 7.0, 3, seed=0), lb.progress_path(entry, 6.0, 4, seed=0),
                  lb.progress_path(entry, 6.0, 3, seed=1),
                  lb.progress_path(replace(entry, preset=_P("full", _R(100), _R(301))), 6.0, 3, seed=0)):
        assert other != path, "another budget, prompt count, seed or recipe starts afresh"


# ----------------------------------------------------------------------------- the plot

def _record(rows):
    return {"bench": "leaderboard", "figures": {"budget_minutes": 15.0, "prompts": 256},
            "tables": {"leaderboard": rows}}


def _row(model, minutes, motion, mean):
    return {"model": model, "train min": minutes, "est. train min": 15.0, "motion_acc": motion, "mean_acc": mean}


def test_plot_marks_equal_budget_points_and_recorded_full_recipes(tmp_path):
    figs = {"train_minutes": 11.0, "train_minutes_mean": 12.0, "heldout_color_acc_mean": 1.0,
            "heldout_shape_acc_mean": 0.9, "heldout_size_acc": 1.0, "heldout_motion_acc": 0.2,
            "heldout_motion_acc_mean": 0.6}
    (tmp_path / "ch03.json").write_text(json.dumps({"bench": "ch03", "preset": "full", "seed": 0, "wall_time_s": 1,
                                                    "date": "2026-12-02", "machine": {}, "figures": figs,
                                                    "tables": {}}))
    assert lb.full_recipe_point("ch03", tmp_path) == pytest.approx((11.0, 0.6, 0.875))
    assert lb.full_recipe_point("ch04", tmp_path) is None and lb.full_recipe_point("ch08-pixel", tmp_path) is None
    fig = lb.plot(_record([_row("ch03", 14.0, 0.5, 0.7), _row("ch04", None, 0.25, 0.5), _row("ch08-pixel", 16.0, 0.1,
                                                                                             0.3)]), tmp_path)
    left, right = fig.axes[:2]
    pts = {ln.get_gid(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in left.lines if ln.get_gid()}
    assert set(pts) == {"ch03:budget", "ch03:full", "ch04:budget", "ch08-pixel:budget"}
    assert pts["ch03:budget"] == ([14.0], [0.5]) and pts["ch03:full"] == ([11.0], [0.6])
    assert pts["ch04:budget"] == ([15.0], [0.25]), "no recorded minutes: the estimate"
    right_pts = {ln.get_gid(): list(ln.get_ydata()) for ln in right.lines if ln.get_gid()}
    assert right_pts["ch03:full"] == [pytest.approx(0.875)] and right_pts["ch08-pixel:budget"] == [0.3]
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["ch03", "ch04", "ch08-pixel"], "entries named"


# ----------------------------------------------------------------------------- the smoke bench

def test_bench_leaderboard_smoke_runs_every_entry():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = run_bench("leaderboard", "smoke")
    board, trainings, f = rec["tables"]["leaderboard"], rec["tables"]["trainings"], rec["figures"]
    assert [r["model"] for r in board] == [e.name for e in lb.entries("smoke")] and f["entries"] == len(board)
    assert rec["tables"]["summary"] == [{k: r[k] for k in lb.SUMMARY} for r in board]
    assert f["train_minutes_total"] == pytest.approx(sum(r["train min"] for r in board))
    assert f["entries_wall_s"] == pytest.approx(sum(r["entry wall s"] for r in board))
    by = {r["model"]: r for r in board}
    for r in board:
        for k in (*lb.ACCURACIES, "temporal_consistency", "validity", "mean_acc"):
            assert 0 <= r[k] <= 1, (r["model"], k, r[k])
        assert r["frechet"] >= 0 and r["flicker"] >= 0 and r["sample s/clip"] > 0 and r["train min"] > 0
        assert "ch02." in r["reuses (full recipe, not counted)"], "every entry reads the frozen chapter-02 text"
    assert by["ch03"]["clips"] == "4x16x16" and by["ch05"]["clips"] == "8x32x32" and by["ch08"]["clips"] == "9x32x32"
    reuses = {m: r["reuses (full recipe, not counted)"].split(", ") for m, r in by.items()}
    assert "ch04.video (smoke)" in reuses["ch05"], "the cascade's base is chapter 04's model"
    assert "ch02.t2i (smoke)" in reuses["ch04"], "Make-A-Video grows chapter 02's image model"
    assert "ch07.latents (smoke)" in reuses["ch08"] and not any("ch07" in u for u in reuses["ch08-pixel"])
    assert not any(u.startswith(m[:4] + ".") for m, us in reuses.items() for u in us), "a chapter's own: not reused"
    own = {m: sorted(r["recipe"] for r in trainings if r["model"] == m) for m in by}
    assert own["ch06"] == sorted(ch06.STAGES) and own["ch05"] == ["ssr", "tsr"] and own["ch08-pixel"] == ["dit"]
    assert all(r["budget steps"] >= 1 and r["step s"] > 0 and r["GFLOPs/step"] > 0 for r in trainings)
