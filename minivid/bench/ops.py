"""Benchmark of minivid.ops: each fast op against its reference and the best PyTorch built-in.

Measured side by side in one process, on the same inputs:

* attention forward+backward (B=1, 8 heads, head dim 64) at N = 256, 1024, 4096:
  tiled (FlashAttention-style, this package) vs naive (materialised scores) vs torch SDPA;
* factorized space-time conv (two Conv3d, (1,3,3) then (3,1,1)) vs its reshape-based reference
  (Conv2d per frame + Conv1d per pixel) vs a full 3x3x3 Conv3d, on (B=8, C=64, T=16, 32x32);
* causal Conv3d on a long clip: whole vs in chunks with the conv cache.

Time: each variant runs in interleaved rounds (variant A, B, C, A, B, C, ...) so that a noisy,
shared CPU slows all of them alike; we report the fastest round (the least-disturbed run).
Peak memory: the peak of *extra* live bytes during one call. On CUDA that is
torch.cuda.max_memory_allocated minus the bytes allocated before the call. On CPU there is no
such counter, so we record every allocation and free of PyTorch's CPU allocator with
torch.profiler(profile_memory=True) and take the maximum of the running sum: real allocator
traffic, including kernel temporaries and autograd's saved tensors.
"""
from __future__ import annotations

import copy
import os
import time

import torch
import torch.nn as nn

from minivid.ops import (
    CausalConv3d,
    FactorizedConv3d,
    attention,
    conv3d_flops,
    factorized_conv3d_flops,
)
from minivid.utils import make_generator

MiB = 2.0**20
PRESETS = {
    "smoke": dict(attn_N=(64, 128), heads=2, head_dim=16, blocks=(16, 32), attn_rounds=2,
                  conv_shape=(1, 8, 4, 8, 8), conv_rounds=2, causal_shape=(1, 4, 9, 8, 8), chunks=(2, 4)),
    "full": dict(attn_N=(256, 1024, 4096), heads=8, head_dim=64, blocks=(64, 128, 256, 512), attn_rounds=3,
                 conv_shape=(8, 64, 16, 32, 32), conv_rounds=3, causal_shape=(1, 64, 33, 32, 32), chunks=(4, 8, 16)),
}


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_side_by_side(fns: dict, rounds: int, device="cpu") -> dict:
    """{name: fn} -> {name: fastest seconds}, running the fns interleaved after one warm-up each."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def peak_extra_bytes(fn, device="cpu") -> int:
    """Peak of live bytes allocated by `fn()` beyond those live before it (see module docstring)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return int(peak)


# ----------------------------------------------------------------------------- attention
def _attention_case(N, heads, D, impl, block, device, gen):
    q, k, v = (torch.randn(1, heads, N, D, generator=gen, device=device).requires_grad_() for _ in range(3))
    dout = torch.randn(1, heads, N, D, generator=gen, device=device)

    def step():
        for t in (q, k, v):
            t.grad = None
        attention(q, k, v, impl=impl, block_size=block).backward(dout)

    return step


def bench_attention(cfg, device, gen) -> tuple[list, list, dict]:
    """Rows (N x impl), the block-size sweep at the largest N, and the headline figures."""
    heads, D, rounds = cfg["heads"], cfg["head_dim"], cfg["attn_rounds"]
    N_max = max(cfg["attn_N"])
    rows, tune, figs = [], [], {}

    def measure(N, variants):  # {name: (impl, block)} -> {name: (seconds, peak bytes)}
        steps = {name: _attention_case(N, heads, D, impl, b, device, gen) for name, (impl, b) in variants.items()}
        t = time_side_by_side(steps, rounds, device)
        return {name: (t[name], peak_extra_bytes(step, device)) for name, step in steps.items()}

    # 1) at the largest N: naive, sdpa and the tiled op at every block size, side by side
    variants = {"naive": ("naive", 0), "sdpa": ("sdpa", 0)}
    variants.update({f"tiled-{b}": ("tiled", b) for b in cfg["blocks"]})
    res = measure(N_max, variants)
    t_sdpa, m_naive = res["sdpa"][0], res["naive"][1]
    for b in cfg["blocks"]:
        t, m = res[f"tiled-{b}"]
        tune.append({"N": N_max, "block": b, "fwd_bwd_ms": 1e3 * t, "time_vs_sdpa": t / t_sdpa,
                     "peak_extra_MiB": m / MiB, "mem_vs_naive": m / m_naive})
    # the block size: the fastest one whose memory meets the target (<= 1/8 of naive), else the leanest
    fits = [r for r in tune if r["mem_vs_naive"] <= 1 / 8]
    block = min(fits, key=lambda r: r["fwd_bwd_ms"])["block"] if fits else min(tune, key=lambda r: r["peak_extra_MiB"])["block"]
    figs["attn_block_size"] = block
    # 2) every N: tiled (chosen block) vs naive vs sdpa
    for N in cfg["attn_N"]:
        if N == N_max:
            res_n = {"naive": res["naive"], "tiled": res[f"tiled-{block}"], "sdpa": res["sdpa"]}
        else:
            res_n = measure(N, {"naive": ("naive", 0), "tiled": ("tiled", block), "sdpa": ("sdpa", 0)})
        (t_n, m_n), t_s = res_n["naive"], res_n["sdpa"][0]
        for impl in ("tiled", "naive", "sdpa"):
            t, m = res_n[impl]
            rows.append({"N": N, "impl": impl, "block": block if impl == "tiled" else "", "fwd_bwd_ms": 1e3 * t,
                         "time_vs_sdpa": t / t_s, "peak_extra_MiB": m / MiB, "mem_vs_naive": m / m_n})
        figs[f"attn_N{N}_tiled_time_vs_sdpa"] = res_n["tiled"][0] / t_s
        figs[f"attn_N{N}_tiled_time_vs_naive"] = res_n["tiled"][0] / t_n
        figs[f"attn_N{N}_tiled_mem_vs_naive"] = res_n["tiled"][1] / m_n
    return rows, tune, figs


# ----------------------------------------------------------------------------- convolutions
CONV_FORMS = {  # name -> (module key, channels-last?)
    "full Conv3d 3x3x3": ("full", False),
    "full Conv3d 3x3x3, channels-last": ("full", True),
    "factorized: two Conv3d (fast form)": ("fact", False),
    "factorized: two Conv3d, channels-last": ("fact", True),
    "factorized: Conv2d + Conv1d reshapes (reference)": ("ref", False),
}


def bench_factorized_conv(cfg, device, gen) -> tuple[list, dict]:
    """Full 3x3x3 Conv3d vs factorized (two Conv3d; Conv2d + Conv1d with reshapes), two memory layouts.

    channels-last = input and weights in torch.channels_last_3d (N, T, H, W, C in memory), the
    layout oneDNN's CPU convolutions compute in; otherwise every call converts there and back.
    """
    shape, rounds = cfg["conv_shape"], cfg["conv_rounds"]
    C = shape[1]
    cl = torch.channels_last_3d
    x = torch.randn(*shape, generator=gen, device=device)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen, device=device)))
    mods = {"full": nn.Conv3d(C, C, 3, padding=1).to(device), "fact": FactorizedConv3d(C, C, 3).to(device)}
    mods_cl = {n: copy.deepcopy(m).to(memory_format=cl) for n, m in mods.items()}
    x_cl = x.contiguous(memory_format=cl)
    fn = {name: ((mods_cl if last else mods)[key] if key != "ref" else mods["fact"].forward_reference,
                 x_cl if last else x) for name, (key, last) in CONV_FORMS.items()}
    with torch.no_grad():  # all forms compute the same function
        ref_out = fn["factorized: two Conv3d (fast form)"][0](x)
        for name, (f, inp) in fn.items():
            if CONV_FORMS[name][0] != "full":
                assert (f(inp) - ref_out).abs().max().item() < 1e-3, name
    gflop = {"full": conv3d_flops(shape, C, (3, 3, 3)) / 1e9, "fact": factorized_conv3d_flops(shape, C, 3) / 1e9}
    gflop["ref"] = gflop["fact"]

    def fwd(f, inp):
        def step():
            with torch.no_grad():
                f(inp)
        return step

    def fwd_bwd(f, inp):
        def step():
            for m in list(mods.values()) + list(mods_cl.values()):
                m.zero_grad(set_to_none=True)
            f(inp).square().mean().backward()
        return step

    t_f = time_side_by_side({n: fwd(*a) for n, a in fn.items()}, rounds, device)
    t_fb = time_side_by_side({n: fwd_bwd(*a) for n, a in fn.items()}, rounds, device)
    m_f = {n: peak_extra_bytes(fwd(*a), device) for n, a in fn.items()}
    m_fb = {n: peak_extra_bytes(fwd_bwd(*a), device) for n, a in fn.items()}
    base = "full Conv3d 3x3x3"
    rows = [{"form": n, "GFLOP_fwd": gflop[CONV_FORMS[n][0]], "fwd_ms": 1e3 * t_f[n],
             "fwd_GFLOP_per_s": gflop[CONV_FORMS[n][0]] / t_f[n], "fwd_vs_full": t_f[n] / t_f[base],
             "fwd_bwd_ms": 1e3 * t_fb[n], "fwd_bwd_vs_full": t_fb[n] / t_fb[base],
             "fwd_peak_MiB": m_f[n] / MiB, "fwd_bwd_peak_MiB": m_fb[n] / MiB} for n in CONV_FORMS]
    names = list(CONV_FORMS)
    full, full_cl, fact, fact_cl, refn = names
    figs = {"conv_flops_factorized_vs_full": gflop["fact"] / gflop["full"],
            "conv_fwd_factorized_vs_full": t_f[fact] / t_f[full],
            "conv_fwd_bwd_factorized_vs_full": t_fb[fact] / t_fb[full],
            "conv_fwd_factorized_cl_vs_full_cl": t_f[fact_cl] / t_f[full_cl],
            "conv_fwd_bwd_factorized_cl_vs_full_cl": t_fb[fact_cl] / t_fb[full_cl],
            "conv_fwd_best_factorized_vs_best_full": min(t_f[fact], t_f[fact_cl]) / min(t_f[full], t_f[full_cl]),
            "conv_fwd_bwd_best_factorized_vs_best_full":
                min(t_fb[fact], t_fb[fact_cl]) / min(t_fb[full], t_fb[full_cl]),
            "conv_fwd_factorized_vs_reference": t_f[fact] / t_f[refn]}
    return rows, figs


def bench_causal_conv(cfg, device, gen) -> tuple[list, dict]:
    """A causal Conv3d streamed over a long clip: whole vs chunks with the conv cache.

    Each output chunk is consumed at once (reduced to per-frame channel means, as an encoder
    would hand its latents on), so the peak is the working set, not a stored output.
    """
    shape = cfg["causal_shape"]
    x = torch.randn(*shape, generator=gen, device=device)
    conv = CausalConv3d(shape[1], shape[1], (3, 3, 3)).to(device)

    def streamed(chunk):
        def step():
            outs, cache = [], None
            with torch.no_grad():
                for t0 in range(0, x.shape[2], chunk):
                    y, cache = conv(x[:, :, t0:t0 + chunk], cache)
                    outs.append(y.mean(dim=(3, 4)))
            return torch.cat(outs, dim=2)
        return step

    sizes = [shape[2]] + list(cfg["chunks"])
    steps = {n: streamed(n) for n in sizes}
    whole = steps[shape[2]]()
    err = {n: (steps[n]() - whole).abs().max().item() for n in sizes}
    t = time_side_by_side(steps, cfg["conv_rounds"], device)
    m = {n: peak_extra_bytes(s, device) for n, s in steps.items()}
    T = shape[2]
    rows = [{"frames_per_call": n if n < T else f"{T} (whole)", "calls": -(-T // n), "ms": 1e3 * t[n],
             "time_vs_whole": t[n] / t[T], "peak_extra_MiB": m[n] / MiB, "mem_vs_whole": m[n] / m[T],
             "max_abs_diff_vs_whole": err[n]} for n in sizes]
    figs = {"causal_chunked_max_abs_diff_vs_whole": max(err.values())}
    figs.update({f"causal_chunk{n}_mem_vs_whole": m[n] / m[T] for n in cfg["chunks"]})
    return rows, figs


def run(preset: str = "smoke", seed: int = 0) -> dict:
    """Run the ops benchmark; see the module docstring for what is measured and how."""
    cfg = PRESETS[preset]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = make_generator(seed, device)
    load_before = os.getloadavg()[0]
    attn_rows, attn_tune, figs = bench_attention(cfg, device, gen)
    conv_rows, conv_figs = bench_factorized_conv(cfg, device, gen)
    causal_rows, causal_figs = bench_causal_conv(cfg, device, gen)
    figs.update(conv_figs)
    figs.update(causal_figs)
    # other processes share this CPU: their load is part of the measurement conditions
    figs["cpu_load_1min_before"], figs["cpu_load_1min_after"] = load_before, os.getloadavg()[0]
    return {"figures": figs, "tables": {"attention": attn_rows, "attention_block_size": attn_tune,
                                        "factorized_conv": conv_rows, "causal_conv": causal_rows}}
