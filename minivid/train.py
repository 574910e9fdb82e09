"""The one training loop every chapter uses.

AdamW + warmup, gradient clipping, EMA weights, a tqdm bar with the loss, an optional
evaluation hook, atomic checkpoints, exact resume, NaN detection, and DDP under `torchrun`.

Exact resume rests on one rule: **a training step is a pure function of (state, step)**.
The batch and the diffusion noise of step `s` come from generators seeded with
`(seed, s, rank)`, and the global torch RNG (dropout) is reseeded the same way, so a run that
is killed and resumed from its last checkpoint replays exactly the steps it would have taken.

    cfg = TrainConfig(steps=2000, batch_size=64, lr=2e-4, ckpt_path="checkpoints/ch01.pt")
    state = train(model, loss_fn, batch_fn, cfg)
    # loss_fn(model, batch, generator) -> loss  (or (loss, {"metric": value}))
    # batch_fn(step, generator)        -> batch (tensors, or dicts/lists of them)
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from minivid.utils import CheckpointError, atomic_save, default_device, load_checkpoint, make_generator


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float | None = 1.0      # max global grad norm; None = no clipping
    ema_decay: float | None = 0.999    # None = no EMA copy
    seed: int = 0
    ckpt_path: str | None = None       # where to write (and resume from) the checkpoint
    ckpt_every: int = 0                # 0: only at the end
    resume: bool = True                # pick up ckpt_path if it exists
    eval_every: int = 0                # call eval_fn every N steps (0: never)
    log_every: int = 10                # history + progress bar refresh
    device: str | None = None          # None: CUDA when present, else CPU
    progress: bool = True
    desc: str = "train"

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"TrainConfig: need steps >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in (0, 1) or None, got {self.ema_decay}")


@dataclass
class TrainState:
    model: torch.nn.Module          # the trained (unwrapped) model
    ema: torch.nn.Module | None     # its EMA copy (use this one for sampling)
    step: int
    history: list[dict] = field(default_factory=list)   # [{"step", "loss", ...metrics}]
    evals: list[dict] = field(default_factory=list)     # [{"step", ...eval_fn output}]
    resumed_from: int | None = None

    @property
    def sampling_model(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.model


# ----------------------------------------------------------------------------- helpers

def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) dicts/lists/tuples to `device`; leave the rest alone."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A distinct, reproducible 63-bit seed for (seed, step, rank)."""
    x = (seed * 1_000_003 + step) * 1_000_033 + rank * 7919 + 0x9E3779B97F4A7C15
    return x % (2**63 - 1)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameters and float buffers."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm) if not be.dtype.is_floating_point else be.lerp_(bm, 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA warmup: average uniformly early on, so short runs aren't dominated by the init."""
    return min(decay, (1.0 + step) / (10.0 + step))


def ddp_context() -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def ddp_cleanup() -> None:
    """End a torchrun job cleanly: wait for every rank, then tear the process group down.

    Without it, gloo's background threads can still be running when the interpreter exits,
    and a rank aborts ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _split_loss(out) -> tuple[torch.Tensor, dict]:
    if isinstance(out, tuple):
        loss, metrics = out
        return loss, {k: float(v) for k, v in metrics.items()}
    return out, {}


# ----------------------------------------------------------------------------- loop

def train(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any, torch.Generator], Any],
    batch_fn: Callable[[int, torch.Generator], Any],
    cfg: TrainConfig,
    eval_fn: Callable[[torch.nn.Module, int], dict] | None = None,
    params: list[torch.nn.Parameter] | None = None,
) -> TrainState:
    """Train `model` for cfg.steps steps; see the module docstring for the contract.

    params: the parameters to optimise (default: all with requires_grad). Chapters that
    freeze a pretrained model and train inserted layers pass just the new ones.
    """
    device = torch.device(cfg.device) if cfg.device else default_device()
    rank, world = ddp_context()
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    model = model.to(device)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("train(): no trainable parameters (every parameter has requires_grad=False)")
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema_decay is not None:
        ema = copy.deepcopy(model).requires_grad_(False).eval()

    state = TrainState(model=model, ema=ema, step=0)
    ckpt = Path(cfg.ckpt_path) if cfg.ckpt_path else None
    if ckpt is not None and cfg.resume and ckpt.exists():
        _restore(ckpt, state, opt)
        state.resumed_from = state.step

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    bar = tqdm(total=cfg.steps, initial=state.step, desc=cfg.desc, disable=not cfg.progress or rank != 0,
               dynamic_ncols=True, leave=True)
    model.train()
    running = None
    try:
        while state.step < cfg.steps:
            step = state.step
            _maybe_crash_for_tests(step)
            s = step_seed(cfg.seed, step, rank)
            torch.manual_seed(s)                                  # dropout etc.
            batch = to_device(batch_fn(step, make_generator(s, "cpu")), device)
            gen = make_generator(s + 1, device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            loss, metrics = _split_loss(loss_fn(net, batch, gen))
            if not torch.isfinite(loss.detach()).all():
                last = f"the last good checkpoint {ckpt} is kept" if ckpt and ckpt.exists() else "no checkpoint was written"
                raise TrainingDiverged(
                    f"loss is {loss.item()} at step {step} ({cfg.desc}); stopped, {last}. "
                    f"Try a lower learning rate (lr={cfg.lr:g}) or gradient clipping (grad_clip={cfg.grad_clip}).")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = None
            if cfg.grad_clip is not None:
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            opt.step()
            if ema is not None:
                ema_update(ema, model, ema_decay_at(step, cfg.ema_decay))
            state.step = step + 1

            lv = float(loss.detach())
            running = lv if running is None else 0.9 * running + 0.1 * lv
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                rec = {"step": state.step, "loss": lv, **metrics}
                if gnorm is not None:
                    rec["grad_norm"] = gnorm
                state.history.append(rec)
                bar.set_postfix(loss=f"{running:.4f}")
            bar.update(1)
            if eval_fn is not None and cfg.eval_every and state.step % cfg.eval_every == 0:
                res = eval_fn(state.sampling_model, state.step)
                state.evals.append({"step": state.step, **(res or {})})
                model.train()
            if ckpt is not None and cfg.ckpt_every and state.step % cfg.ckpt_every == 0:
                save_train_checkpoint(ckpt, state, opt, cfg, rank)
    finally:
        bar.close()
    if ckpt is not None and (state.resumed_from != cfg.steps):
        save_train_checkpoint(ckpt, state, opt, cfg, rank)
    model.eval()
    return state


def save_train_checkpoint(path: Path, state: TrainState, opt, cfg: TrainConfig, rank: int = 0) -> None:
    """Everything needed to resume exactly, written atomically (rank 0 only)."""
    if rank != 0:
        return
    obj = {
        "format": "minivid-train-v1",
        "step": state.step,
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "opt": opt.state_dict(),
        "history": state.history,
        "evals": state.evals,
        "train_config": _plain(asdict(cfg)),
    }
    atomic_save(obj, path)


def _restore(path: Path, state: TrainState, opt) -> None:
    ck = load_checkpoint(path, how_to_retrain=f"delete {path} and run the training again")
    if ck.get("format") != "minivid-train-v1":
        raise CheckpointError(f"checkpoint {path} is not a minivid training checkpoint; delete it and retrain.")
    try:
        state.model.load_state_dict(ck["model"])
        if state.ema is not None and ck.get("ema") is not None:
            state.ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not match this model/config ({e}); delete it to start over.") from None
    state.step = int(ck["step"])
    state.history = list(ck.get("history", []))
    state.evals = list(ck.get("evals", []))


def _plain(x):
    """Config dicts -> only types torch.load(weights_only=True) accepts."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    return str(x)


def _maybe_crash_for_tests(step: int) -> None:
    """Tests simulate a hard kill (no cleanup, no final checkpoint) at a given step."""
    at = os.environ.get("MINIVID_TEST_CRASH_AT_STEP")
    if at is not None and step == int(at):
        os._exit(137)


def replica_max_difference(model: torch.nn.Module) -> float:
    """Under DDP: max abs difference of parameters across ranks (0.0 means identical)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    flat = torch.cat([p.detach().flatten().float() for p in model.parameters()]).cpu()
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return max(float((g - flat).abs().max()) for g in gathered)


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["TrainConfig", "TrainState", "TrainingDiverged", "train", "to_device", "step_seed",
           "save_train_checkpoint", "count_params", "ema_update", "lr_at", "replica_max_difference", "ddp_cleanup"]
