"""`python -m minivid bench perf`: the training runs are found by capturing what the chapters ask for (nothing
trains), and the step's FLOPs are counted right (closed form for a linear model)."""
from dataclasses import dataclass

import torch

from minivid.bench import perf
from minivid.pipelines import common


@dataclass(frozen=True)
class _Recipe:
    steps: int = 5
    lr: float = 1e-2
    batch_size: int = 4
    warmup_steps: int = 0
    ema_decay: float = 0.9


def _setup(B=4, n_in=16, n_out=8):
    model = torch.nn.Sequential(torch.nn.Linear(n_in, n_out, bias=False), torch.nn.Linear(n_out, n_out, bias=False))
    model[1].weight.requires_grad_(False)                                 # frozen: not trained, not in the optimiser

    def batch_fn(step, g):
        return torch.randn(B, n_in, generator=g)

    def loss_fn(net, x, g):
        return net(x).pow(2).mean()
    return model, loss_fn, batch_fn


def test_capture_records_trains_nothing_and_keeps_the_trainable_subset(tmp_path):
    model, loss_fn, batch_fn = _setup()
    before = model[0].weight.detach().clone()
    path = tmp_path / "m.pt"
    with common.capture_training() as got:
        state = common.load_or_train(model, loss_fn, batch_fn, _Recipe(), path, seed=0, desc="toy", progress=False,
                                     params=[model[0].weight])
    assert [s.desc for s in got] == ["toy"] and got[0].trainable == ("0.weight",)
    assert not path.exists() and state.step == 0, "under capture nothing trains and nothing is written"
    assert torch.equal(state.model[0].weight, before)
    state = common.load_or_train(model, loss_fn, batch_fn, _Recipe(), path, seed=0, desc="toy", progress=False)
    assert path.exists() and state.step == 5 and not torch.equal(model[0].weight, before), "outside: trains again"
    with common.capture_training() as got:                    # a finished checkpoint is still loaded (later
        common.load_or_train(model, loss_fn, batch_fn, _Recipe(), path, seed=0, desc="toy", progress=False)
    assert len(got) == 1                                      # stages may need it), and the run is recorded


def test_measure_counts_forward_and_backward_flops_in_closed_form():
    B, n_in, n_out = 4, 16, 8
    model, loss_fn, batch_fn = _setup(B, n_in, n_out)
    s = common.TrainingSetup("toy", model, loss_fn, batch_fn, _Recipe(), ("0.weight",))
    row, ops = perf.measure(s, steps=2, profile_steps=1, top=3)
    fwd = 2 * B * n_in * n_out + 2 * B * n_out * n_out
    # backward: grad of the input of layer 2 (frozen weight: no weight grad), input and weight grads of layer 1
    # (its input is data: torch still counts only what autograd computes - the weight grad)
    bwd = 2 * B * n_out * n_out + 2 * B * n_in * n_out
    assert row["GFLOPs/step"] * 1e9 == fwd + bwd
    assert row["params"] == n_in * n_out + n_out * n_out and row["trainable"] == n_in * n_out
    assert row["step s"] > 0 and len(ops) == 3 and all(0 < o["share of step"] <= 1 for o in ops)
    assert torch.equal(model[0].weight, s.model[0].weight), "measure trains a copy, never the captured model"


def test_perf_smoke_finds_every_chapter_recipe_without_a_list():
    rec = perf.run("smoke")
    names = [r["recipe"] for r in rec["tables"]["steps"]]
    assert any(n.startswith("ch03 video U-Net") for n in names) and len(names) == len(set(names)) >= 4
    assert rec["figures"]["matmul_peak_gflops"] > 0
    assert all(r["GFLOPs/step"] > 0 and 0 < r["% of matmul peak"] for r in rec["tables"]["steps"])
