"""The course leaderboard (issue 16): every text-to-video model of the course trained on the same Shapes World data
for the same wall-clock budget on this machine, judged on the same held-out prompts.

`python -m minivid bench leaderboard --preset full --out chapters/results/leaderboard.json`, then
`python -m minivid.bench.leaderboard` draws quality against training time (chapters/figures/08_leaderboard.png).

* Entries are found, not listed: every chapter whose `CLI` generates clips (`minivid.cli.chapters.video_chapters`,
  `ChapterCLI.frames` longer than one frame) at its preset, then each of its `ChapterCLI.variants` (chapter 08's
  pixel-space DiT). Chapters 01-02 (images) and 07 (an autoencoder) have no text-to-video generator: no entry.
* Equal budget: an entry's *own* trainings are the recipes of its preset dataclass that its `CLI.train` trains
  (`recipe_fields`, matched against what `common.capture_training` records). What it asks the recipe layer for by
  name (`common.record_lookups`) - the chapter-02 text encoder and image U-Net, chapter 03's base model, chapter 07's latents -
  is reused at its full recipe, not counted, and listed ("reuses"). A one-step probe run of `CLI.train` (which also
  trains any missing upstream model) makes every own training loadable; each one's parameters and FLOPs are measured
  here (`perf.measure`) and its seconds per step in the real training loop (`loop_step_s`: the bare step is
  cheaper, the 2026-12-03 trial found), and ONE factor scales all its step counts so that the estimated total is
  the budget (`budget_factor`, `scale_steps`: a renamed preset, so its checkpoints are cached apart). Then it
  trains for real (`CLI.train`) and the minutes it took are read from its checkpoints' training records.
* Judged: the preset's held-out prompts (chapter 03's draw: one list of captions for every entry), each model's clips
  at its own length and size, sampled by its `CLI.generate` with its preset's sampling steps and guidance: colour,
  shape, size, motion direction, temporal consistency, flicker, validity, and the Frechet distance to real held-out
  clips of that shape (the same captions rendered); trained parameters, GFLOPs per training step, training minutes
  (estimated and recorded), sampling seconds per clip (loading the models included).
* `plot(record)`: held-out quality against training minutes, each entry at the equal budget beside its chapter's
  full recipe as recorded in chapters/results/chNN.json (a chapter without a recorded bench has no such point).

The models are training seed 0 - the ones every `CLI.generate` samples - so there is no per-seed headline; `seed`
picks the sampling noise. The full preset gives each of the six entries 15 minutes: 1.5 hours of training, plus
probing, measuring and sampling 256 clips each (roughly an hour), plus the upstream models' full recipes where they
are not cached yet (chapters 02, 03 and 07: about 45 minutes) - 2.5 to 3.5 hours on 2 cores, longer than one
sitting. So it resumes (`run_entry`): an interrupted run, started again with the same command, keeps every entry an
earlier run finished and the plan of the one it was in (its step counts: its checkpoints resume, nothing is measured
again). Each row says whether it was resumed and how long its run took; a new budget, preset or seed starts afresh,
and so does deleting the cache's leaderboard/ folder (after a change to the judge, say).
"""
from __future__ import annotations

import copy
import importlib
import json
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from minivid.bench import judged, recorded_minutes
from minivid.bench.ch03 import heldout_prompts
from minivid.bench.perf import measure
from minivid.cli.chapters import video_chapters
from minivid.eval import Judge
from minivid.pipelines import common
from minivid.pipelines.common import ChapterCLI, TrainingSetup, capture_training, recipe_fields, with_recipe_steps
from minivid.results import RESULTS_DIR, load_record, training_seconds
from minivid.train import train
from minivid.utils import REPO_ROOT, atomic_write, cache_dir

SETTINGS = {"smoke": dict(budget_minutes=0.01, prompts=4, step_reps=1),
            "full": dict(budget_minutes=15.0, prompts=256, step_reps=6)}
TRAIN_SEED = 0             # the training seed every chapter's CLI.generate samples
ACCURACIES = ("color_acc", "shape_acc", "size_acc", "motion_acc")
QUALITY = (*ACCURACIES, "temporal_consistency", "flicker", "validity")
# the README's table: a board row's columns a reader compares across models (the full rows are in "leaderboard")
SUMMARY = ("model", "clips", "trained params", "GFLOPs/step", "train min", "sample s/clip", *QUALITY, "frechet")
DRAW = SimpleNamespace(size=16, frames=8)      # the captions' draw (they do not depend on the clip shape)


@dataclass(frozen=True)
class Entry:
    """One model on the leaderboard: its name ("ch08-pixel"), its chapter, the chapter's CLI spec, its preset."""
    name: str
    chapter: str
    cli: ChapterCLI
    preset: object


def entries(preset: str = "full") -> list[Entry]:
    """Every text-to-video model of the course at `preset`: each chapter whose CLI generates clips (more than one
    frame), at the chapter's preset of that name, followed by the chapter's `variants` of it."""
    out = []
    for ch in video_chapters():
        module = importlib.import_module(f"minivid.pipelines.{ch}")
        if module.CLI.frames[1] <= 1:
            continue
        base = module.get_preset(preset)
        out.append(Entry(ch, ch, module.CLI, base))
        out += [Entry(f"{ch}-{name}", ch, module.CLI, make(base)) for name, make in (module.CLI.variants or {}).items()]
    return out


# ----------------------------------------------------------------------------- the budget

def scale_steps(preset, factor: float, name: str, only=None):
    """The preset renamed `name` with every recipe's steps (those in `only`; default all of `recipe_fields`) times
    `factor`, rounded, at least 1; every other field (upstream presets, sampling settings) unchanged."""
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    names = recipe_fields(preset) if only is None else tuple(only)
    if unknown := sorted(set(names) - set(recipe_fields(preset))):
        raise ValueError(f"only names {unknown}, which are not recipes of this preset: {recipe_fields(preset)}")
    return with_recipe_steps(preset, name, {k: max(1, round(getattr(preset, k).steps * factor)) for k in names})


def budget_factor(steps: dict[str, int], step_s: dict[str, float], budget_s: float) -> float:
    """The ONE factor by which every training's steps are scaled so that the estimated total,
    sum over k of factor * steps[k] * step_s[k] seconds, is `budget_s`."""
    if not budget_s > 0:
        raise ValueError(f"budget_s must be > 0, got {budget_s}")
    if not steps or set(steps) != set(step_s):
        raise ValueError(f"steps and step_s must name the same trainings, got {sorted(steps)} and {sorted(step_s)}")
    if any(not s > 0 for s in step_s.values()) or any(n < 1 for n in steps.values()):
        raise ValueError(f"every step time must be > 0 and every step count >= 1, got {step_s} and {steps}")
    return budget_s / sum(steps[k] * step_s[k] for k in steps)


def own_trainings(preset, setups: list[TrainingSetup]) -> dict[str, TrainingSetup]:
    """{recipe field: its setup} for the captured training setups that train one of the preset's own recipes (the
    others are upstream models: trained only where they were missing, never counted). Setups are taken in the order
    trained, each by the first field not yet taken whose recipe equals its own; a setup seen before (same label)
    is skipped."""
    own, seen = {}, set()
    for s in setups:
        k = next((f for f in recipe_fields(preset) if f not in own and getattr(preset, f) == s.recipe), None)
        if k is not None and s.desc not in seen:
            own[k] = s
        seen.add(s.desc)
    return own


def captured(entry: Entry, preset) -> list[TrainingSetup]:
    """What `entry.cli.train(preset)` trains or loads, recorded (nothing trains; finished checkpoints load)."""
    with capture_training() as got:
        entry.cli.train(preset=preset, seed=TRAIN_SEED)
    return got


def loop_step_s(setup: TrainingSetup, steps: int) -> float:
    """Seconds per step of the real training loop (`minivid.train.train`: batches, loss, backward, clipping, the
    optimiser and the EMA; no checkpoint) on a copy of the setup's model, over `steps` steps after two warm-up steps
    (which build any lazily made data). `perf.measure` times the bare step, which is cheaper."""
    trainable = set(setup.trainable)

    def run(n: int) -> float:
        model = copy.deepcopy(setup.model).train()
        params = [q for name, q in model.named_parameters() if name in trainable]
        cfg = common.train_config(replace(setup.recipe, steps=n), seed=TRAIN_SEED, path=None, desc="timing",
                                  progress=False)
        t0 = time.perf_counter()
        train(model, setup.loss_fn, setup.batch_fn, cfg, params=params)
        return time.perf_counter() - t0
    run(2)
    return run(steps) / steps


def plan(entry: Entry, budget_s: float, reps: int) -> tuple[object, list[dict]]:
    """Measure an entry's own trainings and fit them to the budget: (its budget preset, one row per own training)."""
    p = entry.preset
    probe = with_recipe_steps(p, f"{p.name}-probe", dict.fromkeys(recipe_fields(p), 1))
    entry.cli.train(preset=probe, seed=TRAIN_SEED)          # one step each; missing upstream models train in full
    own = own_trainings(probe, captured(entry, probe))
    if not own:
        raise RuntimeError(f"{entry.name}: CLI.train trained none of its preset's recipes {recipe_fields(p)}")
    cost = {k: measure(s, reps, profile_steps=1, top=1)[0] for k, s in own.items()}
    # the budget is wall time: time the real loop, at least 5 s of it
    loop = {k: loop_step_s(s, max(reps, min(100, round(5 / cost[k]["step s"])))) for k, s in own.items()}
    steps = {k: getattr(p, k).steps for k in own}
    factor = budget_factor(steps, loop, budget_s)
    scaled = scale_steps(p, factor, f"{p.name}-budget{budget_s / 60:g}m", only=own)
    rows = [{"model": entry.name, "training": own[k].desc.replace(probe.name, scaled.name), "recipe": k,
             "recipe steps": steps[k], "budget steps": getattr(scaled, k).steps, "params": c["params"],
             "trained params": c["trainable"], "GFLOPs/step": c["GFLOPs/step"], "step s": loop[k],
             "compute step s": c["step s"],
             "est. minutes": getattr(scaled, k).steps * loop[k] / 60} for k, c in cost.items()]
    return scaled, rows


def recorded_trainings(chapter: str, preset_name: str, seed: int = TRAIN_SEED) -> dict[str, float | None]:
    """{model: training minutes} recorded beside the checkpoints `chapter` trained under preset `preset_name` (the
    newest record of each model: an older one belongs to a recipe key that has changed since)."""
    tag = f"-{preset_name}-seed{seed}-"
    newest = {}
    for meta in sorted(cache_dir("checkpoints").glob(f"{chapter}-*{tag}*.json"), key=lambda q: q.stat().st_mtime):
        newest[meta.name.split(tag)[0]] = meta
    return {what: recorded_minutes(meta.with_suffix(".pt")) for what, meta in newest.items()}


# ----------------------------------------------------------------------------- the judge

def judge_entry(entry: Entry, preset, prompts: dict, judge: Judge, seed: int) -> dict:
    """Clips of every prompt at the model's own shape, judged: {"clips": "TxHxW", the judge's figures, "frechet"
    (to real clips of the same captions and shape), "sample s/clip"}."""
    caps = prompts["captions"]
    t0 = time.perf_counter()
    x = entry.cli.generate(caps, preset=preset, seed=seed, steps=getattr(preset, "eval_steps", 20))
    sample_s = (time.perf_counter() - t0) / len(caps)
    _, _, T, H, W = x.shape                                                          # (B, 3, T, H, W)
    real = heldout_prompts(len(caps), SimpleNamespace(size=H, frames=T))
    if real["captions"] != caps:
        raise RuntimeError(f"the held-out draw at {T}x{H}x{W} has other captions than the leaderboard's")
    return {"clips": f"{T}x{H}x{W}", **judged(judge, x, prompts["labels"], QUALITY),
            "frechet": judge.frechet(real["x"], x), "sample s/clip": sample_s}


def board_row(entry: Entry, rows: list[dict], reuses: list[str], minutes: dict, quality: dict) -> dict:
    """The leaderboard's row of an entry from its training rows, the models it reuses, its recorded minutes, its
    judged clips. "train min" is None unless every own training has a record (one trained elsewhere has none)."""
    steps = sum(r["budget steps"] for r in rows)
    gflops = sum(r["budget steps"] * r["GFLOPs/step"] for r in rows)
    done = [m for m in minutes.values() if m is not None]
    return {"model": entry.name, "clips": quality["clips"], "trainings": len(rows),
            "reuses (full recipe, not counted)": ", ".join(reuses) or "nothing",
            "trained params": sum(r["trained params"] for r in rows),
            "largest net params": max(r["params"] for r in rows),
            "GFLOPs/step": gflops / steps, "train TFLOPs": gflops / 1e3,
            "est. train min": sum(r["est. minutes"] for r in rows),
            "train min": sum(done) if len(done) == len(rows) else None,
            "sample s/clip": quality["sample s/clip"], **{k: quality[k] for k in QUALITY if k in quality},
            "mean_acc": sum(quality[k] for k in ACCURACIES) / len(ACCURACIES), "frechet": quality["frechet"]}


def progress_path(entry: Entry, budget_s: float, prompts: int, seed: int) -> Path:
    """Where an entry's finished steps are kept between runs (cache_dir("leaderboard")), keyed by everything they
    depend on: its preset (recipes, upstream presets, sampling settings), the budget, the prompts and the seed."""
    key = common.recipe_key(entry.preset, {"budget_s": budget_s, "prompts": prompts}, seed=seed)
    return cache_dir("leaderboard") / f"{entry.preset.name}-{entry.name}-{key}.json"


def _save(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(state, indent=1, default=float)), binary=False)


def run_entry(e: Entry, budget_s: float, reps: int, prompts: dict, judge: Judge, seed: int) -> tuple[dict, list]:
    """One entry's (board row, training rows), resuming what an earlier run of the same settings finished.

    The full leaderboard is longer than one sitting, so each entry's progress is kept: its plan (the measured step
    times and the budget's step counts) once measured, so a rerun trains exactly the same recipes (its checkpoints
    resume) instead of measuring again; its row once judged, so a rerun skips it. "entry wall s" is the wall time of
    the run that finished the entry; "resumed" says whether its plan came from an earlier run."""
    path = progress_path(e, budget_s, len(prompts["captions"]), seed)
    state = json.loads(path.read_text()) if path.exists() else {}
    if "row" in state:
        print(f"leaderboard: {e.name} finished by an earlier run ({path.name}); kept", file=sys.stderr)
        return state["row"], state["rows"]
    t0, resumed = time.perf_counter(), "steps" in state
    with common.record_lookups() as asked:
        if resumed:
            scaled = with_recipe_steps(e.preset, state["name"], state["steps"])
            rows = state["rows"]
        else:
            scaled, rows = plan(e, budget_s, reps)
            state = {"name": scaled.name, "steps": {r["recipe"]: r["budget steps"] for r in rows}, "rows": rows}
            _save(path, state)
        e.cli.train(preset=scaled, seed=TRAIN_SEED)
        quality = judge_entry(e, scaled, prompts, judge, seed)
    reuses = sorted(a for a in asked if not a.startswith(f"{e.chapter}."))
    row = board_row(e, rows, reuses, recorded_trainings(e.chapter, scaled.name), quality)
    row.update({"entry wall s": time.perf_counter() - t0, "resumed": resumed})
    _save(path, {**state, "row": row})
    return row, rows


def run(preset: str = "smoke", seed: int = 0) -> dict:
    cfg = SETTINGS[preset]
    budget_s = 60 * cfg["budget_minutes"]
    judge = Judge()
    prompts = heldout_prompts(cfg["prompts"], DRAW)
    board, trainings = [], []
    figures = {"budget_minutes": cfg["budget_minutes"], "prompts": cfg["prompts"]}
    for e in entries(preset):
        row, rows = run_entry(e, budget_s, cfg["step_reps"], prompts, judge, seed)
        board.append(row)
        trainings += rows
        key = e.name.replace("-", "_")
        figures.update({f"{key}_{k}": row[k] for k in ("motion_acc", "mean_acc", "validity", "frechet")})
        if row["train min"] is not None:
            figures[f"{key}_train_minutes"] = row["train min"]
    minutes = [r["train min"] for r in board]
    figures.update({"entries": len(board), "entries_wall_s": sum(r["entry wall s"] for r in board),
                    "train_minutes_total": None if None in minutes else sum(minutes)})
    summary = [{k: r[k] for k in SUMMARY} for r in board]
    return {"figures": figures, "tables": {"summary": summary, "leaderboard": board, "trainings": trainings}}


# ----------------------------------------------------------------------------- the plot

def full_recipe_point(chapter: str, results_dir=RESULTS_DIR) -> tuple[float, float, float] | None:
    """(training minutes, held-out motion accuracy, mean judged accuracy) of a chapter's full recipe as its bench
    recorded them (`chNN.json`; the mean over seeds where it has one); None without a complete record."""
    if not re.fullmatch(r"ch\d\d", chapter) or not (Path(results_dir) / f"{chapter}.json").exists():
        return None
    f = load_record(chapter, Path(results_dir))["figures"]
    acc = {k: f.get(f"heldout_{k}_mean", f.get(f"heldout_{k}")) for k in ACCURACIES}
    seconds = training_seconds(f)
    if seconds is None or None in acc.values():
        return None
    return seconds[0] / 60, acc["motion_acc"], sum(acc.values()) / len(acc)


def plot(record: dict, results_dir=RESULTS_DIR) -> Figure:
    """Held-out quality against training minutes, one colour per entry: filled markers at the equal budget (its
    recorded minutes, else the estimate), hollow ones at its chapter's full recipe, joined by a dotted line.
    Left: motion-direction accuracy; right: the mean of the colour, shape, size and motion accuracies."""
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    names = []                                   # a legend, not labels by the points: near 1.0 they overlap
    for i, row in enumerate(record["tables"]["leaderboard"]):
        colour, name = f"C{i % 10}", row["model"]
        budget = (row["train min"] if row["train min"] is not None else row["est. train min"],
                  row["motion_acc"], row["mean_acc"])
        full = full_recipe_point(name, results_dir)
        for ax, k in zip(axes, (1, 2)):
            ax.plot([budget[0]], [budget[k]], "o", color=colour, ms=8, gid=f"{name}:budget")
            if full is not None:
                ax.plot([full[0]], [full[k]], "o", color=colour, mfc="none", ms=8, gid=f"{name}:full")
                ax.plot([budget[0], full[0]], [budget[k], full[k]], ":", color=colour, lw=1)
        names.append(Line2D([], [], marker="o", ls="", color=colour, label=name))
    budget_min = record["figures"].get("budget_minutes")
    for ax, label in zip(axes, ("held-out motion accuracy", "mean of colour, shape, size, motion accuracy")):
        ax.set_xlabel("training minutes (own trainings; upstream models not counted)")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    marks = [Line2D([], [], marker="o", ls="", color="k", label=f"equal budget ({budget_min:g} min)"),
             Line2D([], [], marker="o", ls="", color="k", mfc="none", label="the chapter's full recipe")]
    axes[0].legend(handles=names, fontsize=8, loc="lower right")
    axes[1].legend(handles=marks, fontsize=8, loc="lower right")
    fig.suptitle(f"The course leaderboard: {len(record['tables']['leaderboard'])} text-to-video models, "
                 f"{record['figures'].get('prompts')} held-out prompts")
    fig.tight_layout()
    return fig


def main(argv=None) -> Path:
    """`python -m minivid.bench.leaderboard [RECORD.json [OUT.png]]`: draw a recorded leaderboard's plot."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 2:
        raise SystemExit("usage: python -m minivid.bench.leaderboard [RECORD.json [OUT.png]]")
    src = Path(args[0]) if args else RESULTS_DIR / "leaderboard.json"
    out = Path(args[1]) if len(args) > 1 else REPO_ROOT / "chapters" / "figures" / "08_leaderboard.png"
    plot(load_record(src.stem, src.parent)).savefig(out, dpi=110)
    print(out)
    return out


__all__ = ["SETTINGS", "Entry", "entries", "scale_steps", "budget_factor",
           "own_trainings", "captured", "loop_step_s", "plan", "recorded_trainings", "judge_entry", "board_row",
           "progress_path", "run_entry", "run", "full_recipe_point", "plot", "main"]

if __name__ == "__main__":
    main()
