"""The training loop: exact resume after a hard kill, the NaN/inf guard, checkpoints that are never
non-finite, corrupt, clobbered or of another recipe, file locks and permissions. DDP: tests/test_ddp.py."""
import math
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from minivid.train import TrainConfig, TrainingDiverged, count_params, ema_decay_at, lr_at, train
from minivid.utils import CheckpointError, atomic_save, check_finite_state, load_checkpoint, unfinished_checkpoint_error

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
    killed_s = load_checkpoint(ckpt)["wall_s"]
    resumed = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(ckpt, 20))
    assert resumed.resumed_from == 10 and resumed.step == 20
    assert 0 < killed_s < resumed.wall_s == load_checkpoint(ckpt)["wall_s"], "the killed run's minutes are kept"
    straight = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(None, 20))
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)                          # bit-exact, dropout included
    for a, b in zip(resumed.ema.parameters(), straight.ema.parameters()):
        assert torch.equal(a, b)
    assert resumed.history == straight.history


def test_progress_bar_shows_training_not_loading(tmp_path, capsys):
    """A run that trains shows its bar; loading the finished checkpoint again shows none (a "100% 20/20" line
    would read as if it had trained), and extending it to more steps shows the bar again from where it was."""
    ckpt = str(tmp_path / "run.pt")
    train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(ckpt, 20, progress=True, desc="toy"))
    assert "20/20" in capsys.readouterr().err
    again = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(ckpt, 20, progress=True, desc="toy"))
    assert again.step == 20 and "toy" not in capsys.readouterr().err
    more = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(ckpt, 25, progress=True, desc="toy"))
    assert more.step == 25 and "25/25" in capsys.readouterr().err


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

    with pytest.raises(TrainingDiverged, match=r"step 7 .*the loss is nan;.*last good checkpoint .*nan\.pt is kept "
                                               r"\(step 5\).*lr=0\.003"):
        train(W.toy_model(), loss_fn, batch_fn, W.config(str(ckpt), 20))
    ck = load_checkpoint(ckpt)
    assert ck["step"] == 5 and all(torch.isfinite(v).all() for v in ck["model"].values())


class _InfGrad(torch.autograd.Function):
    """Identity forward (the loss stays finite); backward multiplies the gradient by inf."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_infinite_gradient_stops_before_the_step_and_keeps_the_last_finite_checkpoint(tmp_path, grad_clip):
    ckpt = tmp_path / "inf.pt"

    def loss_fn(model, batch, g):
        loss = W.loss_fn(model, batch, g)
        return _InfGrad.apply(loss) if batch["step"] == 4 else loss

    def batch_fn(step, g):
        return {**W.batch_fn(step, g), "step": step}

    with pytest.raises(TrainingDiverged, match=r"step 4 .*gradient norm is (inf|nan) \(the loss, [0-9.]+, is finite\)"
                                               r".*inf\.pt is kept \(step 4\)"):
        train(W.toy_model(), loss_fn, batch_fn, W.config(str(ckpt), 10, ckpt_every=1, grad_clip=grad_clip))
    ck = load_checkpoint(ckpt)
    four = train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(None, 4, grad_clip=grad_clip))
    assert ck["step"] == 4                                   # the state before step 4, not after it
    for name, p in four.model.state_dict().items():
        assert torch.isfinite(ck["model"][name]).all() and torch.equal(ck["model"][name], p), name
    for name, p in four.ema.state_dict().items():
        assert torch.equal(ck["ema"][name], p), name


def test_non_finite_weights_are_never_saved(tmp_path):
    ckpt = tmp_path / "w.pt"
    atomic_save({"sentinel": torch.ones(1)}, ckpt)
    with pytest.raises(TrainingDiverged, match=r"weights are non-finite after step 1 .*w\.pt was not written"):
        train(W.toy_model(), W.loss_fn, W.batch_fn,      # lr=inf: finite loss and grads, then inf/NaN weights
              W.config(str(ckpt), 5, ckpt_every=1, lr=float("inf"), resume=False, warmup_steps=0))
    assert torch.equal(torch.load(ckpt)["sentinel"], torch.ones(1))


def test_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    ckpt = tmp_path / "run.pt"
    train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 5))
    ck = torch.load(ckpt)
    ck["ema"]["0.weight"][1, 2] = float("nan")
    torch.save(ck, ckpt)
    with pytest.raises(CheckpointError, match=r"run\.pt holds non-finite weights \(NaN or inf in 0\.weight\).*"
                                              r"Delete it and run `python -m minivid train ch09`"):
        load_checkpoint(ckpt, retrain_cmd="python -m minivid train ch09")
    with pytest.raises(CheckpointError, match="non-finite weights"):
        train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 10))
    assert load_checkpoint(ckpt, check_finite=False)["step"] == 5
    with pytest.raises(CheckpointError, match=r"and 2 more"):
        check_finite_state({f"w{i}": torch.tensor([float("inf")]) for i in range(5)}, ckpt)
    check_finite_state({"w": torch.ones(2), "n": torch.tensor(3)}, ckpt)        # finite: no error


def test_resume_refuses_a_changed_recipe_but_allows_more_steps(tmp_path):
    ckpt = tmp_path / "run.pt"
    train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 5))
    with pytest.raises(CheckpointError, match=r"cannot resume .*run\.pt.*lr=0\.003 in the checkpoint but 0\.001 now; "
                                              r"seed=7 in the checkpoint but 8 now\).*delete it and run `train x`"):
        train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 10, lr=1e-3, seed=8, command="train x"))
    for field, value in [("betas", (0.8, 0.999)), ("weight_decay", 0.1), ("warmup_steps", 0), ("grad_clip", None),
                         ("ema_decay", 0.99), ("batch_size", 8)]:
        with pytest.raises(CheckpointError, match=f"{field}="):
            train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 10, **{field: value}))
    # more steps, and the fields that do not change a step, resume
    state = train(W.toy_model(), W.loss_fn, W.batch_fn,
                  W.config(str(ckpt), 8, ckpt_every=2, log_every=3, desc="other", command="c"))
    assert state.resumed_from == 5 and state.step == 8
    ck = torch.load(ckpt)                                   # a checkpoint from before train_config: still resumes
    del ck["train_config"]
    torch.save(ck, ckpt)
    assert train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 9, lr=1e-3)).resumed_from == 8


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_gives_clear_error(tmp_path, damage):
    ckpt = tmp_path / "run.pt"
    train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 5))
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"run\.pt is corrupt or truncated.*(delete|retrain)"):
        train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 10))
    with pytest.raises(CheckpointError, match=r"run\.pt is corrupt or truncated .*\. Delete it and run `train y`\.$"):
        train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(ckpt), 10, command="train y"))


def test_messages_never_say_delete_for_an_unfinished_checkpoint(tmp_path):
    e = unfinished_checkpoint_error(Path("checkpoints/c.pt"), 250, 1000, "python -m minivid train ch03")
    assert str(e).endswith("is unfinished (step 250 of 1000); run `python -m minivid train ch03` to finish it "
                           "(it resumes from step 250)") and "delete" not in str(e).lower()
    with pytest.raises(CheckpointError, match=r"not found: .*c\.pt\. Run `python -m minivid train ch03` to create it"):
        load_checkpoint(tmp_path / "c.pt", retrain_cmd="python -m minivid train ch03")


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt", "x.pt.lock"]      # no temp file left behind


def test_files_get_the_users_normal_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_save({"v": torch.ones(1)}, tmp_path / "a.pt")              # mkstemp alone would give 0600
        os.umask(0o002)
        train(W.toy_model(), W.loss_fn, W.batch_fn, W.config(str(tmp_path / "b.pt"), 2))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o664
    os.chmod(tmp_path / "a.pt", 0o600)                 # as older versions wrote it: the next save heals it
    atomic_save({"v": torch.zeros(1)}, tmp_path / "a.pt")
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o666 & ~old


def test_permission_errors_are_reported_as_permission_problems(tmp_path, monkeypatch):
    path = tmp_path / "p.pt"
    atomic_save({"model": {}}, path)
    if os.geteuid() == 0:           # root reads any file: simulate what a normal user gets
        def denied(*a, **k):
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(torch, "load", denied)
        monkeypatch.setattr(tempfile, "mkstemp", denied)
    else:
        path.chmod(0)
        tmp_path.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*p\.pt: permission denied") as e:
            load_checkpoint(path)
        assert "corrupt" in str(e.value) and "not corrupt" in str(e.value)
        with pytest.raises(CheckpointError, match=r"cannot write .*q\.pt: permission denied"):
            atomic_save({"v": 1}, tmp_path / "q.pt")
    finally:
        tmp_path.chmod(0o700)
        path.chmod(0o600)


def test_a_second_run_of_the_same_checkpoint_waits_then_reuses_it(tmp_path, capsys):
    """Two processes, one checkpoint: the second (this one) waits for the first's lock, then trains nothing."""
    ckpt, started, go = tmp_path / "run.pt", tmp_path / "started", tmp_path / "go"
    a = subprocess.Popen([sys.executable, WORKER, str(ckpt), str(tmp_path / "a"), "20"], stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MINIVID_TEST_STARTED": str(started),
                                         "MINIVID_TEST_GO": str(go)})
    seen = []

    def release_a_once_we_wait():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30 and "another process is training or reading" not in "".join(seen):
            seen.append(capsys.readouterr().err)
            time.sleep(0.02)
        go.touch()

    try:
        t0 = time.monotonic()
        while not started.exists() and time.monotonic() - t0 < 60:     # a holds the lock, stopped at step 0
            time.sleep(0.02)
        releaser = threading.Thread(target=release_a_once_we_wait)
        releaser.start()
        rec = W.Recorder(0)
        b = train(W.toy_model(), rec.loss_fn, rec.batch_fn, W.config(str(ckpt), 20))
        releaser.join()
    finally:
        go.touch()
        assert a.wait(60) == 0, a.stderr.read()
    assert "another process is training or reading" in "".join(seen)
    ra = torch.load(tmp_path / "a.0")
    assert ra["batch_calls"] == 20 and ra["resumed_from"] is None
    assert rec.calls == 0 and b.resumed_from == 20                     # the second run trained nothing
    assert all(torch.equal(p, q) for p, q in zip(ra["params"], b.model.parameters()))
    ck = load_checkpoint(ckpt)                                          # intact, and a's
    assert ck["step"] == 20 and all(torch.equal(v, p) for v, p in zip(ck["model"].values(), ra["params"]))


def test_count_params():
    m = W.toy_model()
    assert count_params(m) == 4 * 32 + 32 + 32 + 1
    m[0].requires_grad_(False)
    assert count_params(m, trainable_only=True) == 32 + 1 and count_params(m) == 4 * 32 + 32 + 32 + 1


def test_missing_checkpoint_error_says_how_to_retrain(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*python -m minivid train ch01"):
        load_checkpoint(tmp_path / "nope.pt", how_to_retrain="python -m minivid train ch01")


def test_schedules_of_lr_and_ema():
    cfg = TrainConfig(lr=1e-3, warmup_steps=4)
    assert [lr_at(s, cfg) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    cos = TrainConfig(lr=1e-3, warmup_steps=2, steps=10, lr_decay="cosine")
    want = [5e-4, 1e-3] + [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 11)]
    assert [lr_at(s, cos) for s in range(11)] == pytest.approx(want)
    assert lr_at(6, cos) == pytest.approx(5e-4) and lr_at(10, cos) == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay="linear")
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.999) == 0.999
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)
