"""Chapter 01 recipes: train and sample the 2-D toy model and the unconditional Shapes image model.

Used by notebooks/01_diffusion.ipynb, `python -m minivid bench ch01` and the CLI
(`python -m minivid train ch01`). Models follow DDPM (Ho et al. 2020, arXiv:2006.11239) and are
sampled with DDPM or DDIM (Song et al. 2021, arXiv:2010.02502).

    p = get_preset("full")
    model, schedule, state = train_image(p)              # cached under cache_dir("checkpoints")
    x = sample_images(model, schedule, p, n=64, sampler="ddim", steps=50, seed=0)   # (64, 3, 16, 16)

Trained models are cached by preset name plus a hash of the recipe, so the notebook, the bench
and the CLI reuse them, and a changed recipe never loads a stale checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from minivid.data import from_uint8, materialize_split
from minivid.diffusion import Schedule, diffusion_loss, make_schedule, sample
from minivid.models import DiffusionMLP, MLPConfig, UNet2D, unet2d_config
from minivid.pipelines import pick_preset
from minivid.train import TrainConfig, TrainState, train
from minivid.utils import cache_dir, make_generator

TOY_KINDS = ("moons", "eight_gaussians", "spiral")


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


def _key(recipe, seed: int) -> str:
    blob = json.dumps({"recipe": asdict(recipe), "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def checkpoint_path(what: str, preset: str | Ch01Preset, seed: int = 0) -> Path:
    """Where the trained `what` ("toy" | "image") model of a preset lives."""
    p = get_preset(preset)
    recipe = p.toy if what == "toy" else p.image
    return cache_dir("checkpoints") / f"ch01-{what}-{p.name}-seed{seed}-{_key(recipe, seed)}.pt"


# ----------------------------------------------------------------------------- 2-D toy data

def toy_data(n: int, kind: str = "moons", generator: torch.Generator | None = None) -> torch.Tensor:
    """n points of a 2-D toy distribution, roughly zero-mean and unit-scale: (n, 2) float32."""
    u = torch.rand(n, generator=generator)
    z = torch.randn(n, 2, generator=generator)
    if kind == "moons":
        upper = torch.rand(n, generator=generator) < 0.5
        a = math.pi * u
        x = torch.where(upper, torch.cos(a), 1 - torch.cos(a))
        y = torch.where(upper, torch.sin(a), 0.5 - torch.sin(a))
        pts = torch.stack([x - 0.5, y - 0.25], 1) + 0.06 * z
        return (pts / 0.7).float()
    if kind == "eight_gaussians":
        k = (u * 8).long().clamp(max=7).float()
        centers = torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1) * 1.5
        return (centers + 0.1 * z).float()
    if kind == "spiral":
        r = 0.3 + 2.7 * u.sqrt()
        return (torch.stack([r * torch.cos(3 * r), r * torch.sin(3 * r)], 1) / 1.8 + 0.04 * z).float()
    raise ValueError(f"kind must be one of {TOY_KINDS}, got {kind!r}")


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.05, 0.1, 0.2, 0.5, 1.0)) -> float:
    """Unbiased squared MMD (Gretton et al. 2012) with a sum of Gaussian kernels exp(-|a-b|^2 / (2 h^2)).

    x: (N, D), y: (M, D) -> float (about 0 for samples of the same distribution; may dip below 0).
    """
    x, y = x.double(), y.double()
    n, m = len(x), len(y)

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance: mean over random directions of W1 between the 1-D projections.

    x, y: (N, D) with the same N -> float.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    g = make_generator(seed)
    d = torch.randn(x.shape[1], n_proj, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=0, keepdim=True)
    px, _ = (x.double() @ d).sort(0)
    py, _ = (y.double() @ d).sort(0)
    return float((px - py).abs().mean())


# ----------------------------------------------------------------------------- models + training

def schedule_for(recipe) -> Schedule:
    return make_schedule(recipe.schedule, recipe.T)


def build_toy_model(recipe: ToyRecipe) -> DiffusionMLP:
    return DiffusionMLP(MLPConfig(dim=2, hidden=recipe.hidden, depth=recipe.depth))


def build_image_model(recipe: ImageRecipe) -> UNet2D:
    return UNet2D(unet2d_config(recipe.unet, **recipe.unet_overrides))


def training_record(path: Path) -> dict:
    """What the run that wrote checkpoint `path` measured: {"steps", "train_wall_s", "steps_per_s", ...}."""
    meta = path.with_suffix(".json")
    return json.loads(meta.read_text()) if meta.exists() else {}


def _train(model, recipe, batch_fn, path: Path, seed: int, progress: bool, desc: str, retrain: bool) -> TrainState:
    schedule = schedule_for(recipe)
    if retrain and path.exists():
        path.unlink()

    def loss_fn(net, x0, g):
        return diffusion_loss(net, x0, schedule, recipe.objective, generator=g)

    cfg = TrainConfig(steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, ema_decay=recipe.ema_decay,
                      warmup_steps=getattr(recipe, "warmup_steps", 0), seed=seed, ckpt_path=str(path),
                      ckpt_every=500, device="cpu", progress=progress, desc=desc)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    state = train(model, loss_fn, batch_fn, cfg)
    wall = time.perf_counter() - t0
    ran = state.step - (state.resumed_from or 0)
    if ran > 0:       # record this run's cost beside the checkpoint (a resumed run adds to the record)
        rec = training_record(path) if state.resumed_from else {}
        total = rec.get("train_wall_s", 0.0) + wall
        rec.update(steps=state.step, train_wall_s=round(total, 2), steps_per_s=round(state.step / total, 3),
                   threads=torch.get_num_threads(), params=sum(p.numel() for p in state.model.parameters()),
                   final_loss=state.history[-1]["loss"] if state.history else None)
        path.with_suffix(".json").write_text(json.dumps(rec, indent=1))
    return state


def train_toy(preset: str | Ch01Preset = "full", seed: int = 0, progress: bool = True, retrain: bool = False):
    """Train (or load the cached) toy MLP. Returns (EMA model in eval mode, schedule, TrainState)."""
    p = get_preset(preset)
    r = p.toy
    torch.manual_seed(seed)
    model = build_toy_model(r)
    state = _train(model, r, lambda step, g: toy_data(r.batch_size, r.data, g), checkpoint_path("toy", p, seed),
                   seed, progress, f"ch01 toy ({p.name})", retrain)
    return state.sampling_model.eval(), schedule_for(r), state


def image_pool(recipe: ImageRecipe) -> torch.Tensor:
    """The training images: (pool, 3, S, S) uint8, rendered once and cached by minivid.data."""
    from minivid.data import WorldConfig
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
    model = build_image_model(r)
    state = _train(model, r, batch_fn, checkpoint_path("image", p, seed), seed, progress,
                   f"ch01 U-Net ({p.name})", retrain)
    return state.sampling_model.eval(), schedule_for(r), state


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


# ----------------------------------------------------------------------------- chapter figures

def save_figures(preset: str | Ch01Preset = "full", out_dir: str | Path | None = None, seed: int = 0) -> list[Path]:
    """Write the chapter's figures (PNG) from the cached models: schedules, forward process, toy paths, samples."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minivid.data import sample_batch
    from minivid.diffusion import q_sample
    from minivid.utils import REPO_ROOT
    from minivid.viz import show_images

    p = get_preset(preset)
    out = Path(out_dir) if out_dir is not None else REPO_ROOT / "chapters" / "figures"
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name):
        fig.savefig(out / name, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(out / name)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for kind in ("linear", "cosine"):
        for zero in (False, True):
            sc = make_schedule(kind, 1000, zero_snr=zero)
            label, ls = kind + (", zero SNR" if zero else ""), "--" if zero else "-"
            axes[0].plot(sc.alpha_bars, ls, label=label)
            axes[1].plot(torch.log(sc.snr.clamp_min(1e-12)), ls, label=label)
    axes[0].set(title="signal fraction ᾱ_t", xlabel="t")
    axes[1].set(title="log SNR(t) (SNR = 0 drawn at -27.6)", xlabel="t")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save(fig, "01_schedules.png")

    x0 = sample_batch(1, generator=make_generator(3))["x"]
    eps = torch.randn(x0.shape, generator=make_generator(4))
    ts = [0, 50, 100, 200, 300, 500, 700, 999]
    rows = []
    for kind in ("linear", "cosine"):
        sc = make_schedule(kind, 1000)
        rows.append(torch.cat([q_sample(x0, torch.tensor([t]), eps, sc) for t in ts]))
    save(show_images(torch.cat(rows), [f"{k} t={t}" for k in ("linear", "cosine") for t in ts], ncols=len(ts)),
         "01_forward.png")

    toy, sched, _ = train_toy(p, seed=seed, progress=False)
    data = toy_data(2000, p.toy.data, make_generator(0))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, sampler, steps in ((axes[0], "ddpm", sched.T), (axes[1], "ddim", 20)):
        x, tr = sample_toy(toy, sched, p, n=1000, sampler=sampler, steps=steps, seed=1, return_trajectory=True)
        ax.scatter(*data.T, s=1, c="lightgray")
        for i in range(12):
            ax.plot(tr["x"][:, i, 0], tr["x"][:, i, 1], lw=0.6, alpha=0.8)
        ax.scatter(*x.T, s=1.5, c="k")
        ax.set(title=f"{sampler.upper()}-{steps}: 1000 samples, 12 paths", xlim=(-3, 3), ylim=(-3, 3), aspect="equal")
    save(fig, "01_toy_paths.png")

    model, sched, _ = train_image(p, seed=seed, progress=False)
    grids, names = [], []
    for sampler, steps in [("ddpm", sched.T)] + [("ddim", s) for s in p.ddim_steps]:
        grids.append(sample_images(model, sched, p, n=12, sampler=sampler, steps=steps, seed=seed, progress=False))
        names += [f"{sampler.upper()}-{steps}"] + [""] * 11
    save(show_images(torch.cat(grids), names, ncols=12, size=0.9), "01_samples.png")
    return paths


# ----------------------------------------------------------------------------- CLI hook

def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    """`python -m minivid train ch01`: train the unconditional image model; returns its checkpoint."""
    p = get_preset(preset)
    if steps is not None:
        p = replace(p, name=f"{p.name}-steps{steps}", image=replace(p.image, steps=steps))
    train_image(p, seed=seed)
    return checkpoint_path("image", p, seed)


__all__ = ["ToyRecipe", "ImageRecipe", "Ch01Preset", "PRESETS", "get_preset", "checkpoint_path", "toy_data",
           "mmd_rbf", "sliced_wasserstein", "schedule_for", "build_toy_model", "build_image_model", "train_toy",
           "train_image", "image_pool", "sample_toy", "sample_images", "cli_train", "TOY_KINDS", "training_record",
           "save_figures"]
