"""A tiny training run used by tests/test_train.py and tests/test_ddp.py, in a subprocess or under torchrun.

usage: python tests/train_worker.py CKPT OUT_PT STEPS [--straight]
CKPT "-" means no checkpoint. Writes to OUT_PT.<rank>: the final parameters, the history, the
number of batches this process drew, its own per-step losses, its first batch, and under DDP the
cross-rank difference; or {"diverged": message} when training stopped on a non-finite value.
--straight: afterwards also train STEPS steps without a checkpoint (the reference run, same launch).

Test hooks (environment):
  MINIVID_TEST_NAN_AT=RANK:STEP   the loss of that rank at that step is NaN (the others stay finite)
  MINIVID_TEST_STARTED=FILE       create FILE when the first batch is drawn ...
  MINIVID_TEST_GO=FILE            ... then wait until FILE exists before going on
  (MINIVID_TEST_CRASH_AT_STEP, read by minivid.train, kills the process at a step)
"""
import os
import sys
import time
from pathlib import Path

import torch

from minivid.ddp import ddp_cleanup, replica_max_difference
from minivid.train import TrainConfig, TrainingDiverged, train


def toy_model() -> torch.nn.Module:
    torch.manual_seed(123)
    return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1))


def batch_fn(step, g):
    x = torch.randn(16, 4, generator=g)
    return {"x": x, "y": (x[:, :1] * x[:, 1:2]).sin()}


def loss_fn(model, batch, g):
    noise = 0.01 * torch.randn(batch["y"].shape, generator=g, device=batch["y"].device)
    return ((model(batch["x"]) - batch["y"] - noise) ** 2).mean()


def config(ckpt, steps, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(steps=steps, batch_size=16, lr=3e-3, warmup_steps=3, ema_decay=0.9, ckpt_path=ckpt,
                                 ckpt_every=5, progress=False, device="cpu", seed=7), **kw})


class Recorder:
    """batch_fn/loss_fn wrappers that record what this process did, with the env test hooks."""

    def __init__(self, rank: int):
        self.rank, self.calls, self.losses, self.first_x = rank, 0, [], None
        nan_at = os.environ.get("MINIVID_TEST_NAN_AT")
        self.nan_at = tuple(int(v) for v in nan_at.split(":")) if nan_at else None

    def batch_fn(self, step, g):
        if self.calls == 0 and os.environ.get("MINIVID_TEST_STARTED"):
            Path(os.environ["MINIVID_TEST_STARTED"]).touch()
            go = Path(os.environ["MINIVID_TEST_GO"])
            t0 = time.monotonic()
            while not go.exists() and time.monotonic() - t0 < 60:
                time.sleep(0.02)
        self.calls += 1
        b = batch_fn(step, g)
        self.first_x = b["x"].clone() if self.first_x is None else self.first_x
        return {**b, "step": step}

    def loss_fn(self, model, batch, g):
        loss = loss_fn(model, batch, g)
        if self.nan_at == (self.rank, batch["step"]):
            loss = loss * float("nan")
        self.losses.append(float(loss.detach()))
        return loss


if __name__ == "__main__":
    ckpt, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    print(f"worker rank {rank} starting", file=sys.stderr, flush=True)
    rec = Recorder(rank)
    try:
        state = train(toy_model(), rec.loss_fn, rec.batch_fn, config(ckpt if ckpt != "-" else None, steps))
        result = {"params": [p.detach().clone() for p in state.model.parameters()],
                  "ema": [p.detach().clone() for p in state.ema.parameters()],
                  "replica_diff": replica_max_difference(state.model), "world": world, "history": state.history,
                  "resumed_from": state.resumed_from, "batch_calls": rec.calls, "local_losses": rec.losses,
                  "first_x": rec.first_x}
        if "--straight" in sys.argv:
            ref = train(toy_model(), loss_fn, batch_fn, config(None, steps))
            result["straight_params"] = [p.detach().clone() for p in ref.model.parameters()]
            result["straight_history"] = ref.history
    except TrainingDiverged as e:
        print(f"rank {rank}: TrainingDiverged: {e}", file=sys.stderr, flush=True)
        result = {"diverged": str(e)}
    torch.save(result, f"{out}.{rank}")
    print(f"worker rank {rank} saved", file=sys.stderr, flush=True)
    ddp_cleanup()
    print(f"worker rank {rank} cleaned up", file=sys.stderr, flush=True)
    code = 3 if "diverged" in result else 0
    if world > 1:
        # Results are on disk and the group is torn down; skip interpreter teardown, where gloo's
        # C++ threads have (rarely) aborted a rank with "terminate called without an active exception".
        os._exit(code)
    sys.exit(code)
