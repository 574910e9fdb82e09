"""DDP under `torchrun --standalone --nproc_per_node 2` (gloo, CPU): identical replicas, exact resume after a
hard kill on both ranks, the logged loss is the mean over ranks, and a NaN on one rank stops every rank."""
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from minivid.compare import assert_close
from minivid.train import train
from minivid.utils import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import train_worker as W  # noqa: E402

WORKER = str(Path(__file__).parent / "train_worker.py")


def _torchrun(args, env=None, timeout=90):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", WORKER, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _tail(proc) -> str:
    return proc.stdout[-2000:] + proc.stderr[-3000:]


def test_ddp_interrupted_run_resumes_to_identical_weights_on_both_ranks(tmp_path):
    ckpt, out = str(tmp_path / "ddp.pt"), str(tmp_path / "out")
    crashed = _torchrun([ckpt, out, "12"], env={"MINIVID_TEST_CRASH_AT_STEP": "8"})
    assert crashed.returncode != 0 and not Path(f"{out}.0").exists(), _tail(crashed)
    assert load_checkpoint(ckpt)["step"] == 5                      # rank 0's save at step 5 survived the kill
    proc = _torchrun([ckpt, out, "12", "--straight"])              # resume, then a straight run as reference
    assert proc.returncode == 0, _tail(proc)
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert r0["world"] == 2 and r0["resumed_from"] == 5 and r1["resumed_from"] == 5
    assert r0["batch_calls"] == r1["batch_calls"] == 7             # steps 5..11 only
    assert r0["replica_diff"] == 0.0 and r1["replica_diff"] == 0.0
    for a, b, c in zip(r0["params"], r1["params"], r0["straight_params"]):
        assert torch.equal(a, b) and torch.equal(a, c)             # both ranks, bit-exact vs never interrupted
    assert r0["history"] == r0["straight_history"] == r1["history"]
    # the ranks drew different batches, and the logged loss is their mean (not rank 0's alone)
    assert not torch.equal(r0["first_x"], r1["first_x"])
    for rec in r0["history"]:
        k = rec["step"] - 1 - 5
        assert abs(rec["loss"] - 0.5 * (r0["local_losses"][k] + r1["local_losses"][k])) < 1e-6
        assert rec["loss"] != r0["local_losses"][k]
    single = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(None, 12))
    assert any(not torch.equal(a, b) for a, b in zip(r0["params"], single.model.parameters()))
    assert_close(r0["params"][0].norm(), single.model[0].weight.norm(), rtol=0.2, name="same scale as 1 process")


def test_ddp_nan_on_one_rank_stops_all_ranks_with_a_clear_message(tmp_path):
    ckpt, out = str(tmp_path / "nan.pt"), str(tmp_path / "out")
    t0 = time.monotonic()
    proc = _torchrun([ckpt, out, "12"], env={"MINIVID_TEST_NAN_AT": "1:7"}, timeout=60)   # no hang
    assert proc.returncode != 0, _tail(proc)
    assert time.monotonic() - t0 < 60
    for rank in (0, 1):
        msg = torch.load(f"{out}.{rank}")["diverged"]
        assert "step 7" in msg and "the loss is nan on rank 1 (of 2)" in msg, msg
        assert "nan.pt is kept (step 5)" in msg, msg
    ck = load_checkpoint(ckpt)                                     # refuses non-finite weights itself
    assert ck["step"] == 5 and all(torch.isfinite(v).all() for v in ck["model"].values())
