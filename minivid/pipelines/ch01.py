"""Chapter 01 recipes: train and sample the 2-D toy model and the unconditional Shapes image model.

Used by notebooks/01_diffusion.ipynb, `python -m minivid bench ch01` and the CLI
(`python -m minivid train ch01`). Models follow DDPM (Ho et al. 2020, arXiv:2006.11239) and are
sampled with DDPM or DDIM (Song et al. 2021, arXiv:2010.02502).

    p = get_preset("full")
    model, schedule, state = train_image(p)              # cached under cache_dir("checkpoints")
    x = sample_images(model, schedule, p, n=64, sampler="ddim", steps=50, seed=0)   # (64, 3, 16, 16)

Caching, keys and the training loop come from the shared recipe layer (`minivid.pipelines.common`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from minivid.data import TOY_KINDS, WorldConfig, from_uint8, materialize_split, toy_data
from minivid.diffusion import Schedule, diffusion_loss, sample
from minivid.models import DiffusionMLP, MLPConfig, UNet2D, unet2d_config
from minivid.pipelines import common
from minivid.pipelines.common import ChapterCLI, load_or_train, pick_preset, schedule_for, training_record, with_steps
from minivid.utils import make_generator

MODEL_VERSION = 1          # bump when an architecture or loss of this chapter changes (stale caches retrain)


@dataclass(frozen=True)
class ToyRecipe:
    data: str = "moons"
    T: int = 1000
    schedule: str = "linear"
    objective: str = "eps"
    hidden: int = 128
    depth: int = 3
    steps: int = 4000
    batch_size: int = 256
    lr: float = 2e-3
    ema_decay: float = 0.995


@dataclass(frozen=True)
class ImageRecipe:
    unet: str = "unet2d-tiny"
    unet_overrides: dict = field(default_factory=dict)
    size: int = 16
    T: int = 1000
    schedule: str = "linear"
    objective: str = "eps"
    steps: int = 6000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    pool: int = 20000          # training images rendered once (cached) and sampled from


@dataclass(frozen=True)
class Ch01Preset:
    name: str
    toy: ToyRecipe
    image: ImageRecipe
    toy_samples: int = 2000                      # points per sampler in the toy comparison
    image_samples: int = 256                     # images per sampler in the image comparison
    ddim_steps: tuple[int, ...] = (100, 50, 20, 10)
    ddpm_image_samples: int = 256                # DDPM-1000 is the slow one


PRESETS = {
    "smoke": Ch01Preset(
        name="smoke",
        toy=ToyRecipe(T=50, hidden=32, depth=2, steps=40, batch_size=128),
        image=ImageRecipe(unet="unet2d-tiny", T=50, steps=4, batch_size=8, warmup_steps=0, pool=256),
        toy_samples=200, image_samples=8, ddim_steps=(10, 5), ddpm_image_samples=4,
    ),
    "full": Ch01Preset(name="full", toy=ToyRecipe(), image=ImageRecipe()),
}


def get_preset(name: str | Ch01Preset) -> Ch01Preset:
    return pick_preset(name, PRESETS, "ch01")


def checkpoint_path(what: str, preset: str | Ch01Preset, seed: int = 0) -> Path:
    """Where the trained `what` ("toy" | "image") model of a preset lives."""
    if what not in ("toy", "image"):
        raise ValueError(f"what must be 'toy' or 'image', got {what!r}")
    p = get_preset(preset)
    return common.checkpoint_path("ch01", what, p.name, seed, getattr(p, what), version=MODEL_VERSION)


# ----------------------------------------------------------------------------- models + training

def build_toy_model(recipe: ToyRecipe) -> DiffusionMLP:
    return DiffusionMLP(MLPConfig(dim=2, hidden=recipe.hidden, depth=recipe.depth))


def build_image_model(recipe: ImageRecipe) -> UNet2D:
    return UNet2D(unet2d_config(recipe.unet, **recipe.unet_overrides))


def _train(model, recipe, batch_fn, path: Path, seed: int, progress: bool, desc: str, retrain: bool):
    schedule = schedule_for(recipe)

    def loss_fn(net, x0, g):
        return diffusion_loss(net, x0, schedule, recipe.objective, generator=g)

    state = load_or_train(model, loss_fn, batch_fn, recipe, path, seed=seed, desc=desc, progress=progress,
                          retrain=retrain, command="python -m minivid train ch01")
    return state.sampling_model.eval(), schedule, state


def train_toy(preset: str | Ch01Preset = "full", seed: int = 0, progress: bool = True, retrain: bool = False):
    """Train (or load the cached) toy MLP. Returns (EMA model in eval mode, schedule, TrainState)."""
    p = get_preset(preset)
    r = p.toy
    torch.manual_seed(seed)
    return _train(build_toy_model(r), r, lambda step, g: toy_data(r.batch_size, r.data, g),
                  checkpoint_path("toy", p, seed), seed, progress, f"ch01 toy ({p.name})", retrain)


def image_pool(recipe: ImageRecipe) -> torch.Tensor:
    """The training images: (pool, 3, S, S) uint8, rendered once and cached by minivid.data."""
    return materialize_split("image", "train", recipe.pool, seed=0, world=WorldConfig(size=recipe.size),
                             cache=True, verbose=False)["x"]


def train_image(preset: str | Ch01Preset = "full", seed: int = 0, progress: bool = True, retrain: bool = False):
    """Train (or load the cached) unconditional U-Net. Returns (EMA model in eval mode, schedule, TrainState)."""
    p = get_preset(preset)
    r = p.image
    pool = image_pool(r)

    def batch_fn(step, g):
        idx = torch.randint(0, len(pool), (r.batch_size,), generator=g)
        return from_uint8(pool[idx])

    torch.manual_seed(seed)
    return _train(build_image_model(r), r, batch_fn, checkpoint_path("image", p, seed), seed, progress,
                  f"ch01 U-Net ({p.name})", retrain)


# ----------------------------------------------------------------------------- sampling

@torch.no_grad()
def sample_toy(model, schedule: Schedule, preset: str | Ch01Preset = "full", n: int = 2000, sampler: str = "ddim",
               steps: int = 20, eta: float = 0.0, seed: int = 0, progress: bool = False,
               return_trajectory: bool = False):
    """n toy points (n, 2); with return_trajectory also the sampler's trajectory dict."""
    r = get_preset(preset).toy
    kw = {} if sampler == "ddpm" else {"steps": steps, "eta": eta}
    return sample(model, (n, 2), schedule, r.objective, sampler=sampler, generator=make_generator(seed),
                  progress=progress, return_trajectory=return_trajectory, **kw)


@torch.no_grad()
def sample_images(model, schedule: Schedule, preset: str | Ch01Preset = "full", n: int = 64, sampler: str = "ddim",
                  steps: int = 50, eta: float = 0.0, seed: int = 0, batch_size: int = 256, progress: bool = True,
                  return_trajectory: bool = False):
    """n images (n, 3, S, S) in [-1, 1], sampled in batches of `batch_size` (x0 clipped to [-1, 1])."""
    r = get_preset(preset).image
    kw = {} if sampler == "ddpm" else {"steps": steps, "eta": eta}
    g = make_generator(seed)
    outs, trajs = [], []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        res = sample(model, (b, 3, r.size, r.size), schedule, r.objective, sampler=sampler, clip=1.0, generator=g,
                     progress=progress, return_trajectory=return_trajectory,
                     desc=f"{sampler.upper()}-{schedule.T if sampler == 'ddpm' else steps} [{i + b}/{n}]", **kw)
        if return_trajectory:
            outs.append(res[0])
            trajs.append(res[1])
        else:
            outs.append(res)
    x = torch.cat(outs).clamp(-1, 1)
    if return_trajectory:
        return x, {"t": trajs[0]["t"], "x": torch.cat([t["x"] for t in trajs], 1),
                   "x0": torch.cat([t["x0"] for t in trajs], 1)}
    return x


# ----------------------------------------------------------------------------- command line

def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    """`python -m minivid train ch01`: train the unconditional image model; returns its checkpoint."""
    p = with_steps(get_preset(preset), "image", steps)
    train_image(p, seed=seed)
    return checkpoint_path("image", p, seed)


CLI = ChapterCLI(train=cli_train, summary="DDPM/DDIM: a 2-D toy model and an unconditional image U-Net")

__all__ = ["ToyRecipe", "ImageRecipe", "Ch01Preset", "PRESETS", "get_preset", "checkpoint_path", "toy_data",
           "schedule_for", "build_toy_model", "build_image_model", "train_toy", "train_image", "image_pool",
           "sample_toy", "sample_images", "cli_train", "CLI", "TOY_KINDS", "training_record"]
