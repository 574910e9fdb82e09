"""A tiny training run used by tests/test_train.py, in a subprocess or under torchrun.

usage: python tests/train_worker.py CKPT OUT_PT STEPS
Writes the final parameters (and, under DDP, the cross-rank difference) to OUT_PT.<rank>.
"""
import os
import sys

import torch

from minivid.train import TrainConfig, ddp_cleanup, replica_max_difference, train


def toy_model() -> torch.nn.Module:
    torch.manual_seed(123)
    return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1))


def batch_fn(step, g):
    x = torch.randn(16, 4, generator=g)
    return {"x": x, "y": (x[:, :1] * x[:, 1:2]).sin()}


def loss_fn(model, batch, g):
    noise = 0.01 * torch.randn(batch["y"].shape, generator=g, device=batch["y"].device)
    return ((model(batch["x"]) - batch["y"] - noise) ** 2).mean()


def config(ckpt, steps) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=16, lr=3e-3, warmup_steps=3, ema_decay=0.9, ckpt_path=ckpt,
                       ckpt_every=5, progress=False, device="cpu", seed=7)


if __name__ == "__main__":
    ckpt, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(f"worker rank {os.environ.get('RANK', '0')} starting", file=sys.stderr, flush=True)
    state = train(toy_model(), loss_fn, batch_fn, config(ckpt if ckpt != "-" else None, steps))
    rank = int(os.environ.get("RANK", "0"))
    torch.save({"params": [p.detach().clone() for p in state.model.parameters()],
                "replica_diff": replica_max_difference(state.model),
                "world": int(os.environ.get("WORLD_SIZE", "1")),
                "history": state.history}, f"{out}.{rank}")
    print(f"worker rank {rank} saved", file=sys.stderr, flush=True)
    ddp_cleanup()
    print(f"worker rank {rank} cleaned up", file=sys.stderr, flush=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Results are on disk and the group is torn down; skip interpreter teardown, where gloo's
        # C++ threads have (rarely) aborted a rank with "terminate called without an active exception".
        os._exit(0)
