"""The ops benchmark: its memory meter is right, and the smoke preset runs and reports every table."""
import torch

from minivid.bench import ops as bench_ops


def test_peak_extra_bytes_tracks_live_allocations():
    mib = 2**20

    def two_in_turn():  # 4 MiB, freed, then 4 MiB again: the peak is 4 MiB, not 8
        a = torch.ones(mib)
        del a
        b = torch.ones(mib)
        return b.sum()

    def two_at_once():
        a, b = torch.ones(mib), torch.ones(mib)
        return (a + b).sum()  # plus a third 4 MiB temporary

    p1, p2 = bench_ops.peak_extra_bytes(two_in_turn), bench_ops.peak_extra_bytes(two_at_once)
    assert 4 * mib <= p1 < 4.5 * mib
    assert 12 * mib <= p2 < 12.5 * mib


def test_smoke_preset_reports_all_tables():
    out = bench_ops.run("smoke", seed=0)
    assert set(out["tables"]) == {"attention", "attention_block_size", "factorized_conv", "causal_conv"}
    assert {r["impl"] for r in out["tables"]["attention"]} == {"tiled", "naive", "sdpa"}
    assert out["figures"]["causal_chunked_max_abs_diff_vs_whole"] < 1e-5
    assert 0 < out["figures"]["conv_flops_factorized_vs_full"] < 0.5
    for rows in out["tables"].values():
        for r in rows:
            assert all(v == v for v in r.values() if isinstance(v, float))  # no NaN
