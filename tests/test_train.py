"""The training loop: exact resume after a hard kill, NaN stop, corrupt checkpoints, DDP."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minivid.testing import assert_close
from minivid.train import TrainConfig, TrainingDiverged, ema_decay_at, lr_at, train
from minivid.utils import CheckpointError, atomic_save, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import train_worker as W  # noqa: E402

WORKER = str(Path(__file__).parent / "train_worker.py")


def _run(args, env=None):
    return subprocess.run([sys.executable, WORKER, *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_resume_after_hard_kill_is_exact(tmp_path):
    ckpt = str(tmp_path / "run.pt")
    proc = _run([ckpt, str(tmp_path / "unused"), "20"], env={"MINIVID_TEST_CRASH_AT_STEP": "13"})
    assert proc.returncode == 137, proc.stderr
    assert load_checkpoint(ckpt)["step"] == 10          # last periodic checkpoint before the kill
    resumed = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(ckpt, 20))
    assert resumed.resumed_from == 10 and resumed.step == 20
    straight = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(None, 20))
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)                          # bit-exact, dropout included
    for a, b in zip(resumed.ema.parameters(), straight.ema.parameters()):
        assert torch.equal(a, b)
    assert resumed.history == straight.history


def test_training_reduces_loss_and_is_seeded():
    a = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(None, 60))
    b = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(None, 60))
    assert a.history[-1]["loss"] < 0.5 * a.history[0]["loss"]
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "nan.pt"

    def loss_fn(model, batch, g):
        loss = W.loss_fn(model, batch, g)
        return loss * float("nan") if batch["step"] == 7 else loss

    def batch_fn(step, g):
        return {**W.batch_fn(step, g), "step": step}

    with pytest.raises(TrainingDiverged, match=r"step 7.*last good checkpoint .*nan\.pt is kept"):
        train(W.toy_model(), loss_fn, batch_fn, W.config(str(ckpt), 20))
    ck = load_checkpoint(ckpt)
    assert ck["step"] == 5 and all(torch.isfinite(v).all() for v in ck["model"].values())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_gives_clear_error(tmp_path, damage):
    ckpt = tmp_path / "run.pt"
    train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 5))
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"run\.pt is corrupt or truncated.*(delete|retrain)"):
        train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 10))


def test_checkpoint_of_another_model_is_rejected_clearly(tmp_path):
    ckpt = tmp_path / "run.pt"
    train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 5))
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    with pytest.raises(CheckpointError, match="does not match this model"):
        train(other, W.loss_fn, W.batch_fn, W.config(str(ckpt), 10))


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    atomic_save({"v": torch.ones(3)}, path)

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"v": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]      # no temp file left behind


def test_missing_checkpoint_error_says_how_to_retrain(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*python -m minivid train ch01"):
        load_checkpoint(tmp_path / "nope.pt", how_to_retrain="python -m minivid train ch01")


def test_schedules_of_lr_and_ema():
    cfg = TrainConfig(lr=1e-3, warmup_steps=4)
    assert [lr_at(s, cfg) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.999) == 0.999
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)


def test_ddp_two_processes_keep_replicas_identical(tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           WORKER, "-", out, "12"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert r0["world"] == 2 and r0["replica_diff"] == 0.0 and r1["replica_diff"] == 0.0
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)
    # the two ranks saw different batches (otherwise DDP would be trivially identical)
    assert r0["history"][0]["loss"] != r1["history"][0]["loss"]
    single = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(None, 12))
    assert any(not torch.equal(a, b) for a, b in zip(r0["params"], single.model.parameters()))
    assert_close(r0["params"][0].norm(), single.model[0].weight.norm(), rtol=0.2, name="same scale as 1 process")
