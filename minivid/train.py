"""The one training loop every chapter uses.

AdamW + warmup, gradient clipping, EMA weights, a tqdm bar with the loss, an optional
evaluation hook, atomic and locked checkpoints, exact resume, a NaN/inf guard, and DDP under
`torchrun` (https://pytorch.org/docs/stable/notes/ddp.html; AdamW: arXiv:1711.05101).

Exact resume rests on one rule: **a training step is a pure function of (state, step)**.
The batch and the diffusion noise of step `s` come from generators seeded with
`(seed, s, rank)`, and the global torch RNG (dropout) is reseeded the same way, so a run that
is killed and resumed from its last checkpoint replays exactly the steps it would have taken.
Resuming therefore refuses a checkpoint trained with another recipe (`RESULT_FIELDS`).

Nothing non-finite reaches the weights: the loss and gradient norm are checked before each
optimiser step (under DDP, all ranks agree in one all-reduce) and training stops with
`TrainingDiverged` naming the step; the checkpoint on disk stays the last finite one. A run holds
`<ckpt>.lock`, so a second run of the same checkpoint waits, then resumes or returns at once.

    cfg = TrainConfig(steps=2000, batch_size=64, lr=2e-4, ckpt_path="checkpoints/ch01.pt")
    state = train(model, loss_fn, batch_fn, cfg)
    # loss_fn(model, batch, generator) -> loss  (or (loss, {"metric": value}))
    # batch_fn(step, generator)        -> batch (tensors, or dicts/lists of them)
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from minivid.ddp import ddp_context, local_cuda_device, sync_device
from minivid.utils import (
    CheckpointError,
    atomic_save,
    check_finite_state,
    check_same_config,
    default_device,
    file_lock,
    load_checkpoint,
    make_generator,
    nonfinite_entries,
    to_plain,
)

# The TrainConfig fields that change what a step computes: a resume must match them. Not `steps`
# (a finished run may be continued), nor progress/desc/ckpt_every/log_every/device/command.
# lr_decay is one of them; note a cosine schedule also depends on `steps`, so continuing a finished cosine run
# with more steps follows the longer schedule from where it stands.
RESULT_FIELDS = ("lr", "betas", "weight_decay", "warmup_steps", "lr_decay", "grad_clip", "ema_decay", "seed",
                 "batch_size")
LR_DECAYS = ("constant", "cosine")


class TrainingDiverged(RuntimeError):
    """The loss, the gradients or the weights became NaN or infinite; training stopped at a named step."""


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_decay: str = "constant"         # after warm-up: "constant" | "cosine" (half a cosine down to 0 at `steps`)
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
    command: str | None = None         # the command that runs this training, named in error messages

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"TrainConfig: need steps >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"TrainConfig.lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")


@dataclass
class TrainState:
    model: torch.nn.Module          # the trained (unwrapped) model
    ema: torch.nn.Module | None     # its EMA copy (use this one for sampling)
    step: int
    history: list[dict] = field(default_factory=list)   # [{"step", "loss", "grad_norm", ...metrics}]
    evals: list[dict] = field(default_factory=list)     # [{"step", ...eval_fn output}]
    resumed_from: int | None = None
    saved_step: int | None = None   # the step of the checkpoint on disk (written or resumed), if any
    wall_s: float | None = 0.0      # wall seconds of the training loop so far, kept across resumes (None: a checkpoint
                                    # written before it was kept)

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
    """Linear warm-up to cfg.lr, then constant, or (lr_decay="cosine") half a cosine from cfg.lr at the end of the
    warm-up to 0 at step cfg.steps (Loshchilov & Hutter 2016, arXiv:1608.03983, eq. 5, one cycle, eta_min = 0)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_decay == "cosine":
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
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


def grad_norm(params: list[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """The global L2 norm of the gradients (before clipping), clipping them to max_norm if given."""
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def _split_loss(out) -> tuple[torch.Tensor, dict]:
    if isinstance(out, tuple):
        loss, metrics = out
        return loss, {k: float(v) for k, v in metrics.items()}
    return out, {}


def _health(loss: torch.Tensor, gnorm: torch.Tensor, rank: int, world: int, device: torch.device):
    """(mean loss over ranks, grad norm, [(rank, loss) non-finite]): one all-reduce, so all ranks agree."""
    if world == 1:
        lv, gv = float(loss.detach()), float(gnorm)
        return lv, gv, ([] if math.isfinite(lv) else [(0, lv)])
    vec = torch.zeros(2 * world, dtype=torch.float64, device=sync_device(device))
    vec[rank] = loss.detach().double().reshape(())
    vec[world + rank] = gnorm.detach().double().reshape(())
    dist.all_reduce(vec)                      # each slot holds one rank's value (others add 0)
    losses, gnorms = vec[:world].tolist(), vec[world:].tolist()
    gv = next((g for g in gnorms if not math.isfinite(g)), max(gnorms))
    return sum(losses) / world, gv, [(r, v) for r, v in enumerate(losses) if not math.isfinite(v)]


def _diverged(step: int, lv: float, gv: float, bad: list, world: int, cfg: TrainConfig,
              ckpt: Path | None, state: TrainState) -> TrainingDiverged:
    if bad:
        where = "" if world == 1 else " on rank " + ", ".join(str(r) for r, _ in bad) + f" (of {world})"
        what = f"the loss is {bad[0][1]}{where}"
    else:
        what = f"the gradient norm is {gv} (the loss, {lv:.4g}, is finite)"
    kept = (f"the last good checkpoint {ckpt} is kept (step {state.saved_step})" if state.saved_step is not None
            else "no checkpoint was written" + (f"; {ckpt} was left as it was" if ckpt and ckpt.exists() else ""))
    fix = f"lower the learning rate (lr={cfg.lr:g}) or clip gradients (grad_clip={cfg.grad_clip})"
    fix = (f"Resuming would replay the same steps: {fix}, then delete {ckpt} and run "
           f"{f'`{cfg.command}`' if cfg.command else 'again'}" if ckpt else f"To fix it, {fix} and run again")
    return TrainingDiverged(f"training diverged at step {step} ({cfg.desc}): {what}; stopped before the optimiser "
                            f"step, so no non-finite value reached the weights, and {kept}. {fix}.")


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
    Raises TrainingDiverged (non-finite loss/gradients/weights), CheckpointError (a checkpoint
    that is unreadable, non-finite, of another model, or trained with another recipe).
    """
    device = torch.device(cfg.device) if cfg.device else default_device()
    rank, world = ddp_context(device)
    if world > 1 and device.type == "cuda":
        device = local_cuda_device()
    ckpt = Path(cfg.ckpt_path) if cfg.ckpt_path else None
    # rank 0 holds the checkpoint's lock for the whole run; the other ranks wait for it at the barrier
    lock = file_lock(ckpt, cfg.desc) if ckpt is not None and rank == 0 else contextlib.nullcontext()
    with lock:
        if world > 1:
            dist.barrier()
        return _train(model, loss_fn, batch_fn, cfg, eval_fn, params, device, rank, world, ckpt)


def _train(model, loss_fn, batch_fn, cfg, eval_fn, params, device, rank, world, ckpt) -> TrainState:
    model = model.to(device)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("train(): no trainable parameters (every parameter has requires_grad=False)")
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema_decay is not None:
        ema = copy.deepcopy(model).requires_grad_(False).eval()

    state = TrainState(model=model, ema=ema, step=0)
    if ckpt is not None and cfg.resume and ckpt.exists():
        _restore(ckpt, state, opt, cfg)
        state.resumed_from = state.saved_step = state.step

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    # no bar for a finished checkpoint that is only being loaded: a "100% 2000/2000" line reads as if it had trained
    bar = tqdm(total=cfg.steps, initial=min(state.step, cfg.steps), desc=cfg.desc, dynamic_ncols=True, leave=True,
               disable=not cfg.progress or rank != 0 or state.step >= cfg.steps)
    model.train()
    running = None
    before, t_loop = state.wall_s, time.perf_counter()

    def clock() -> None:                     # the time of the steps done so far: what a killed run would lose
        state.wall_s = None if before is None else before + time.perf_counter() - t_loop
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
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = grad_norm(params, cfg.grad_clip)
            lv, gv, bad = _health(loss, gnorm, rank, world, device)    # the loss is the mean over ranks
            if bad or not math.isfinite(gv):
                raise _diverged(step, lv, gv, bad, world, cfg, ckpt, state)
            opt.step()
            if ema is not None:
                ema_update(ema, model, ema_decay_at(step, cfg.ema_decay))
            state.step = step + 1

            running = lv if running is None else 0.9 * running + 0.1 * lv
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                state.history.append({"step": state.step, "loss": lv, **metrics, "grad_norm": gv})
                bar.set_postfix(loss=f"{running:.4f}")
            bar.update(1)
            if eval_fn is not None and cfg.eval_every and state.step % cfg.eval_every == 0:
                res = eval_fn(state.sampling_model, state.step)
                state.evals.append({"step": state.step, **(res or {})})
                model.train()
            if ckpt is not None and cfg.ckpt_every and state.step % cfg.ckpt_every == 0:
                clock()
                _save_synced(ckpt, state, opt, cfg, rank, world, device)
    finally:
        bar.close()
    if state.saved_step != state.step:                             # not already on disk (else the clock stopped there)
        clock()
        if ckpt is not None:
            _save_synced(ckpt, state, opt, cfg, rank, world, device)
    model.eval()
    return state


def save_train_checkpoint(path: Path, state: TrainState, opt, cfg: TrainConfig, rank: int = 0) -> None:
    """Everything needed to resume exactly, written atomically (rank 0 only); never non-finite weights."""
    if rank != 0:
        return
    weights = {"model": state.model.state_dict(), "ema": state.ema.state_dict() if state.ema is not None else {}}
    if bad := nonfinite_entries(weights):
        kept = f"; the last good one (step {state.saved_step}) is kept" if state.saved_step is not None else ""
        raise TrainingDiverged(f"the weights are non-finite after step {state.step} ({cfg.desc}: {', '.join(bad[:3])})"
                               f"; {path} was not written{kept}. Lower the learning rate (lr={cfg.lr:g}).")
    obj = {"format": "minivid-train-v1", "step": state.step, "model": weights["model"],
           "ema": weights["ema"] if state.ema is not None else None, "opt": opt.state_dict(),
           "history": state.history, "evals": state.evals, "train_config": to_plain(asdict(cfg)),
           "wall_s": state.wall_s}
    atomic_save(obj, path)
    state.saved_step = state.step


def _save_synced(path: Path, state: TrainState, opt, cfg: TrainConfig, rank: int, world: int,
                 device: torch.device) -> None:
    """Rank 0 saves; under DDP every rank then waits for it (and all raise if the save failed)."""
    err = None
    try:
        save_train_checkpoint(path, state, opt, cfg, rank)
    except Exception as e:  # re-raised below, once the other ranks know
        err = e
    if world > 1:                             # 0: saved, 1: non-finite weights, 2: another error
        flag = torch.tensor([0.0 if err is None else 1.0 if isinstance(err, TrainingDiverged) else 2.0],
                            device=sync_device(device))
        dist.all_reduce(flag)                 # the barrier: no rank runs ahead of the save
        if flag.item() and err is None:
            kind = TrainingDiverged if flag.item() == 1 else CheckpointError
            err = kind(f"rank 0 could not write {path} at step {state.step} (its message says why)")
        if err is None:
            state.saved_step = state.step
    if err is not None:
        raise err


def _restore(path: Path, state: TrainState, opt, cfg: TrainConfig) -> None:
    redo = f"delete {path} and run the training again"
    ck = load_checkpoint(path, redo, retrain_cmd=cfg.command, check_finite=False)
    if ck.get("format") != "minivid-train-v1":
        raise CheckpointError(f"checkpoint {path} is not a minivid training checkpoint; delete it and retrain.")
    for key in ("model", "ema", "opt"):          # never resume from (or into) NaN/inf weights
        if isinstance(ck.get(key), dict):
            check_finite_state(ck[key], path, cfg.command, redo)
    check_same_config(path, ck.get("train_config"), to_plain(asdict(cfg)), RESULT_FIELDS, cfg.command)
    try:
        state.model.load_state_dict(ck["model"])
        if state.ema is not None and ck.get("ema") is not None:
            state.ema.load_state_dict(ck["ema"])
        if ck.get("opt") is not None:
            opt.load_state_dict(ck["opt"])
        elif int(ck["step"]) < cfg.steps:          # a released checkpoint (weights only) is finished, never resumed
            raise CheckpointError(f"checkpoint {path} holds weights only (a release, no optimiser state) and stops at "
                                  f"step {ck['step']} of {cfg.steps}; it cannot be resumed: {redo}")
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not match this model/config ({str(e).splitlines()[0][:200]}); "
            "delete it to start over.") from None
    state.step = int(ck["step"])
    state.wall_s = ck.get("wall_s")
    state.history = list(ck.get("history", []))
    state.evals = list(ck.get("evals", []))


def _maybe_crash_for_tests(step: int) -> None:
    """Tests simulate a hard kill (no cleanup, no final checkpoint) at a given step."""
    at = os.environ.get("MINIVID_TEST_CRASH_AT_STEP")
    if at is not None and step == int(at):
        os._exit(137)


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of `model` (only those with requires_grad when trainable_only)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["TrainConfig", "TrainState", "TrainingDiverged", "RESULT_FIELDS", "train", "to_device", "step_seed",
           "save_train_checkpoint", "count_params", "ema_update", "lr_at", "grad_norm"]
