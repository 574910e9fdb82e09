"""The recipe layer every chapter is built on: cache keys, load-or-train, EMA-aware loading, guided sampling,
and earlier chapters' trained models fetched by name.

A chapter's module in `minivid.pipelines` states only what is new in it (its recipe dataclasses, data,
loss, model) and leans on this file for the rest:

    path = checkpoint_path("ch03", "video", preset.name, seed, recipe, upstream, version=MODEL_VERSION)
    state = load_or_train(model, loss_fn, batch_fn, recipe, path, seed=seed, desc="ch03 video U-Net")
    model = load_weights(build(...), path, steps=recipe.steps, command="python -m minivid train ch03")
    clips = guided_ddim(model, schedule, cond, prompts, (3, 8, 16, 16), guidance=3.0, objective="v")

    @provides("ch02.text_encoder", path=lambda preset, seed: ...)     # in ch02.py
    def load_text_encoder(preset="full", seed=0, progress=True): ...
    tok, enc = pretrained("ch02.text_encoder", "full")               # in any later chapter

A recipe is any frozen dataclass with the diffusion fields `T`, `schedule`, `objective` (where it trains a
denoiser) and the optimisation fields `steps`, `batch_size`, `lr`, `warmup_steps`, `ema_decay`. A preset holds a
chapter's recipes; presets by name and their variants (`--steps`, the leaderboard's budgets) live in
`minivid.pipelines.presets`, re-exported here.

A cached checkpoint's key hashes everything that changes the model: the recipe(s), the seed, the upstream
models' keys, the data version (`minivid.data.DATA_VERSION`) and the chapter's `MODEL_VERSION`, which a
chapter bumps when its architecture or loss changes. A stale checkpoint is never silently reused.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from minivid.data import DATA_VERSION
from minivid.diffusion import Schedule, ddim_sample, make_schedule, mixed_noise
from minivid.diffusion.flow import flow_sample
from minivid.pipelines.presets import (added_field, key_parts, pick_preset, recipe_fields, with_recipe_steps,
                                      with_steps)
from minivid.train import TrainConfig, TrainState, count_params, train
from minivid.utils import (
    REPO_ROOT,
    CheckpointError,
    atomic_write,
    cache_dir,
    file_lock,
    install_release,
    load_checkpoint,
    make_generator,
    unfinished_checkpoint_error,
)


# ----------------------------------------------------------------------------- keys and paths

def recipe_key(*parts, seed: int, version: int = 1) -> str:
    """10 hex digits hashing the recipe parts (dataclasses, strings, numbers), seed, data and model version."""
    blob = json.dumps({"parts": [key_parts(p) for p in parts], "seed": seed,
                       "data_version": DATA_VERSION, "model_version": version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def checkpoint_path(chapter: str, what: str, preset_name: str, seed: int, *parts, version: int = 1) -> Path:
    """cache_dir("checkpoints") / "<chapter>-<what>-<preset>-seed<seed>-<key>.pt".

    Where the repository ships that very checkpoint as a release (`RELEASE_DIR`, see `minivid.release`) and the
    cache has none yet, the release is copied into the cache first: a fresh clone loads it instead of training
    (unless the environment sets MINIVID_NO_RELEASES, as `demo --train` does).
    """
    key = recipe_key(*parts, seed=seed, version=version)
    path = cache_dir("checkpoints") / f"{chapter}-{what}-{preset_name}-seed{seed}-{key}.pt"
    released = RELEASE_DIR / path.name
    if released.exists() and not path.exists() and not os.environ.get("MINIVID_NO_RELEASES"):
        with file_lock(path, f"installing the released {path.name}"):
            if not path.exists():
                install_release(released, path)
    return path

RELEASE_DIR = REPO_ROOT / "weights"      # released checkpoints (`minivid.release`), named as the cache names them


def schedule_for(recipe) -> Schedule:
    """The noise schedule a recipe trains and samples with (`schedule_shift`, where a recipe has one)."""
    return make_schedule(recipe.schedule, recipe.T, shift=getattr(recipe, "schedule_shift", 1.0))


def train_config(recipe, *, seed: int, path: Path | None, desc: str, progress: bool = True,
                 ckpt_every: int = 500, command: str | None = None) -> TrainConfig:
    """The TrainConfig of a recipe (steps, batch, lr, warm-up and `lr_decay` where it has them, EMA), checkpointing
    to `path`.

    command: the shell command that runs this training, named in error messages.
    """
    return TrainConfig(steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, ema_decay=recipe.ema_decay,
                       warmup_steps=getattr(recipe, "warmup_steps", 0),
                       lr_decay=getattr(recipe, "lr_decay", "constant"), seed=seed,
                       ckpt_path=None if path is None else str(path), ckpt_every=ckpt_every, device="cpu",
                       progress=progress, desc=desc, command=command)


# ----------------------------------------------------------------------------- train, or load what is cached

def training_record(path: Path) -> dict:
    """What the run that wrote checkpoint `path` measured: {"steps", "train_wall_s", "steps_per_s", ...}."""
    meta = Path(path).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.exists() else {}


def write_training_record(path: Path, rec: dict) -> None:
    """Write checkpoint `path`'s training record (atomically, beside it: `training_record` reads it back)."""
    atomic_write(Path(path).with_suffix(".json"), lambda f: f.write(json.dumps(rec, indent=1)), binary=False)


class TrainingSetup(NamedTuple):
    """What one `load_or_train` call trains: its label, the model as built, its loss and batches, the recipe,
    and the names of the parameters it optimises."""
    desc: str
    model: torch.nn.Module
    loss_fn: Callable
    batch_fn: Callable
    recipe: object
    trainable: tuple[str, ...]


_CAPTURED: list[TrainingSetup] | None = None


@contextlib.contextmanager
def capture_training():
    """Record every training run the code inside asks for, and train nothing: yields the list of `TrainingSetup`s.

    Inside the block `load_or_train` appends what it was given, then loads a finished checkpoint as usual (later
    stages may need it) or, where none is cached, returns the model untrained instead of training it. So calling
    a chapter's `CLI.train` collects that chapter's real training steps, upstream models included, without a list
    of recipes to keep (`python -m minivid bench perf` times them). Not for sampling: models may be untrained.
    """
    global _CAPTURED
    outer, _CAPTURED = _CAPTURED, []
    try:
        yield _CAPTURED
    finally:
        _CAPTURED = outer


def load_or_train(model: torch.nn.Module, loss_fn, batch_fn, recipe, path: Path, *, seed: int, desc: str,
                  progress: bool = True, retrain: bool = False, params=None, ckpt_every: int = 500,
                  command: str | None = None) -> TrainState:
    """train() with the checkpoint as the cache: a finished checkpoint is loaded, an unfinished one resumes.

    retrain=True deletes the cached checkpoint first. params: the parameters to train (default: all that
    require grad). command: the shell command that runs this training (named in errors). The run's cost (wall time, steps/s, parameters) is
    recorded beside the checkpoint as JSON (a resumed run adds to the record): see `training_record`.
    """
    path = Path(path)
    if _CAPTURED is not None:                                          # under capture_training(): record only
        wanted = {id(q) for q in params} if params is not None else None
        names = tuple(n for n, q in model.named_parameters()
                      if q.requires_grad and (wanted is None or id(q) in wanted))
        _CAPTURED.append(TrainingSetup(desc, copy.deepcopy(model), loss_fn, batch_fn, recipe, names))
        if not is_finished(path, recipe.steps):
            return TrainState(model=model.eval(), ema=None, step=0)
        retrain = False
    if retrain and path.exists():
        path.unlink()
    cfg = train_config(recipe, seed=seed, path=path, desc=desc, progress=progress, ckpt_every=ckpt_every,
                       command=command)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    state = train(model, loss_fn, batch_fn, cfg, params=params)
    wall = time.perf_counter() - t0
    if state.step - (state.resumed_from or 0) > 0:
        rec = training_record(path) if state.resumed_from else {}
        # the loop's own clock, kept in the checkpoint across a kill; a checkpoint from before it: add up the records
        total = state.wall_s if state.wall_s is not None else rec.get("train_wall_s", 0.0) + wall
        rec.update(steps=state.step, train_wall_s=round(total, 2), steps_per_s=round(state.step / total, 3),
                   threads=torch.get_num_threads(), params=count_params(state.model),
                   trainable_params=count_params(state.model, trainable_only=True),
                   final_loss=state.history[-1]["loss"] if state.history else None)
        write_training_record(path, rec)
    return state


def lazy_batches(make: Callable) -> Callable:
    """A batch_fn that builds its data (`make()` -> the real batch_fn: rendering, encoding a pool) on its first call,
    so loading a finished checkpoint never pays for it."""
    fn = None

    def batch_fn(step, g):
        nonlocal fn
        fn = fn or make()
        return fn(step, g)
    return batch_fn


def is_finished(path: Path, steps: int) -> bool:
    """Does `path` hold a readable checkpoint trained for at least `steps` steps?"""
    if not Path(path).exists():
        return False
    try:
        return int(load_checkpoint(path).get("step", -1)) >= steps
    except Exception:  # a corrupt file: let train() or load_weights() report it
        return False


def load_weights(model: torch.nn.Module, path: Path, *, steps: int | None = None, command: str | None = None,
                 strict: bool = True) -> torch.nn.Module:
    """Load a training checkpoint's EMA weights (its raw weights when it has no EMA) into `model`, in eval mode.

    steps: refuse a checkpoint trained for fewer steps (unfinished), saying how to finish it. command: the
    shell command that (re)trains it. Errors are CheckpointError saying what to do: missing, corrupt,
    non-finite weights, unfinished, or not fitting the model.
    """
    ck = load_checkpoint(path, retrain_cmd=command)
    got = int(ck.get("step", -1))
    if steps is not None and got < steps:
        raise unfinished_checkpoint_error(path, got, steps, command or "the chapter's training command")
    try:
        model.load_state_dict(ck["ema"] if ck.get("ema") is not None else ck["model"], strict=strict)
    except (RuntimeError, KeyError) as e:
        redo = f"`{command}`" if command else "the chapter's training command"
        raise CheckpointError(f"checkpoint {path} does not fit this model ({type(e).__name__}); "
                              f"delete it and run {redo}") from None
    return model.eval()


# ----------------------------------------------------------------------------- sampling

@torch.no_grad()
def guided_ddim(model, schedule: Schedule, cond, prompts, item_shape: tuple[int, ...], *, guidance: float = 1.0,
                objective: str = "v", steps: int = 50, seed: int = 0, batch_size: int = 64, progress: bool = True,
                clip: float | None = 1.0, extra: dict | None = None, noise_alpha: float = 0.0) -> torch.Tensor:
    """One sample per prompt with DDIM and classifier-free guidance: (B, *item_shape), x0 clipped to [-clip, clip].

    cond: a `TextConditioner` (prompts -> model kwargs; "" is the unconditional prompt). The initial noise
    depends only on `seed` and the position in the batch, so guidance scales or step counts compared on
    the same seed start from the same noise. extra: more per-item model kwargs (B, ...) given to both
    branches (e.g. a conditioning clip). noise_alpha: clips start from noise partly shared across frames
    (`mixed_noise`; for models trained that way).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    g = make_generator(seed)
    noise = mixed_noise((len(prompts), *item_shape), noise_alpha, g)
    outs = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i:i + batch_size])
        b = len(chunk)
        more = {k: v[i:i + b] for k, v in (extra or {}).items()}
        x = ddim_sample(model, (b, *item_shape), schedule, objective, steps=steps, cond={**cond(chunk), **more},
                        uncond={**cond.null(b), **more}, guidance_scale=guidance, clip=clip, noise=noise[i:i + b],
                        generator=g, progress=progress, desc=f"DDIM-{steps} w={guidance:g} [{i + b}/{len(prompts)}]")
        outs.append(x)
    x = torch.cat(outs)
    return x if clip is None else x.clamp(-clip, clip)


@torch.no_grad()
def guided_flow(model, cond, prompts, item_shape: tuple[int, ...], *, guidance: float = 1.0, steps: int = 50,
                method: str = "euler", shift: float = 1.0, seed: int = 0, batch_size: int = 64,
                progress: bool = True) -> torch.Tensor:
    """`guided_ddim` for a flow-matching (velocity) model: one sample per prompt, integrated from t = 1 (noise) to
    t = 0 with Euler or Heun (`minivid.diffusion.flow.flow_sample`) and classifier-free guidance: (B, *item_shape).

    The initial noise depends only on `seed` and the position in the batch, as guided_ddim's, so a flow model and
    a DDIM model sampled on the same seed start from the same noise. Nothing is clipped.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    g = make_generator(seed)
    noise = torch.randn((len(prompts), *item_shape), generator=g)
    outs = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i:i + batch_size])
        b = len(chunk)
        outs.append(flow_sample(model, (b, *item_shape), steps, method, cond=cond(chunk), uncond=cond.null(b),
                                guidance_scale=guidance, shift=shift, noise=noise[i:i + b], progress=progress,
                                desc=f"{method}-{steps} w={guidance:g} [{i + b}/{len(prompts)}]"))
    return torch.cat(outs)


# ----------------------------------------------------------------------------- earlier chapters' models by name

class Denoiser(NamedTuple):
    """A trained text-conditioned denoiser and what sampling it needs (what `pretrained` gives for models)."""
    model: torch.nn.Module
    schedule: Schedule
    cond: object                        # TextConditioner: prompts -> model kwargs
    objective: str                      # "eps" | "x0" | "v"
    size: int                           # frame side it was trained at


@dataclass(frozen=True)
class Provider:
    load: Callable                      # load(preset, seed=0, progress=True) -> the trained thing (trains if absent)
    path: Callable | None = None        # path(preset, seed=0) -> its checkpoint (for cache keys downstream)


_PROVIDERS: dict[str, Provider] = {}


def provides(name: str, path: Callable | None = None):
    """Decorator: register `fn(preset, seed=0, progress=True)` as the trained model called `name` ("ch02.t2i")."""
    def register(fn):
        _PROVIDERS[name] = Provider(fn, path)
        return fn
    return register


def _provider(name: str) -> Provider:
    chapter = name.split(".")[0]
    if name not in _PROVIDERS:
        try:
            importlib.import_module(f"minivid.pipelines.{chapter}")     # its @provides lines register it
        except ModuleNotFoundError:
            pass
    if name not in _PROVIDERS:
        have = sorted(k for k in _PROVIDERS if k.startswith(chapter + ".")) or sorted(_PROVIDERS)
        raise KeyError(f"no trained model called {name!r}; known: {', '.join(have) or 'none'}")
    return _PROVIDERS[name]


_LOOKUPS: list[tuple[set, bool]] = []     # the open `record_lookups` blocks' sets (and whether they note seeds)


@contextlib.contextmanager
def record_lookups(seeds: bool = False):
    """Yield a set of the earlier chapters' models asked for by name inside: {"ch02.text_encoder (full)", ...};
    with seeds, as (name, preset, seed) tuples: {("ch02.text_encoder", "full", 0), ...}."""
    _LOOKUPS.append(entry := (set(), seeds))
    try:
        yield entry[0]
    finally:
        _LOOKUPS.remove(entry)


def _noted(name: str, preset, seed: int) -> None:
    preset = getattr(preset, "name", preset)
    for asked, seeds in _LOOKUPS:
        asked.add((name, preset, seed) if seeds else f"{name} ({preset})")


def pretrained(name: str, preset="full", seed: int = 0, progress: bool = True):
    """An earlier chapter's trained model by name, e.g. `pretrained("ch02.text_encoder", "full")`.

    Loads it from the cache, training it first (with a progress bar) when absent.
    """
    _noted(name, preset, seed)
    return _provider(name).load(preset, seed=seed, progress=progress)


def pretrained_path(name: str, preset="full", seed: int = 0) -> Path:
    """Where `pretrained(name, preset, seed)` is cached: later chapters put its name into their own keys."""
    _noted(name, preset, seed)
    p = _provider(name)
    if p.path is None:
        raise KeyError(f"{name!r} has no checkpoint path")
    return p.path(preset, seed=seed)


# ----------------------------------------------------------------------------- the command line's view of a chapter

@dataclass(frozen=True)
class ChapterCLI:
    """What `python -m minivid` can do with a chapter; a chapter module exposes one as `CLI`.

    train(preset, seed, steps) -> checkpoint path. generate(prompts, *, preset, seed, steps, guidance, frames,
    **options) -> clips (B, 3, T, H, W) in [-1, 1], where `seed` picks the sampling noise only (the model is
    the preset's trained one). check(preset=, frames=, **options): raises ValueError on options the chapter
    cannot honour, before any work (e.g. ch05's stages). frames: the (min, max) clip lengths generate
    supports. demo_rank: the demo runs the chapter with the highest rank (0 = never). models: the names (`provides`)
    of the models generate loads; the demo chapter's, with every model their keys name, are what `minivid.release`
    ships. variants: {name: preset -> preset}, other models of the chapter that train and generate through the same
    train/generate and are ranked on their own by the course leaderboard (`minivid.bench.leaderboard`), e.g. chapter
    08's pixel-space DiT.
    """
    train: Callable
    generate: Callable | None = None
    check: Callable | None = None
    frames: tuple[int, int] = (1, 32)
    demo_rank: int = 0
    models: tuple[str, ...] = ()
    summary: str = ""
    variants: dict[str, Callable] | None = None


__all__ = ["added_field", "pick_preset", "with_steps", "with_recipe_steps", "recipe_fields", "recipe_key",
           "checkpoint_path", "schedule_for", "train_config", "training_record", "TrainingSetup", "capture_training",
           "record_lookups", "lazy_batches", "load_or_train", "is_finished", "load_weights", "guided_ddim", "guided_flow",
           "provides", "pretrained", "pretrained_path", "ChapterCLI", "Denoiser"]
