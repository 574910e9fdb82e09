"""Numeric comparison helpers (relative error, assert_close) shared by the tests, the notebooks and the checkers.

One place for "are these two tensors the same?" so that every test, every notebook
check and every exercise checker speaks the same language (relative error, explicit
tolerances, a message a learner can act on).
"""
from __future__ import annotations

import torch


def rel_error(actual: torch.Tensor, expected: torch.Tensor, eps: float = 1e-12) -> float:
    """max |a - e| / max(|e|, eps), computed in float64: a scale-free error figure."""
    a = torch.as_tensor(actual).detach().to("cpu", torch.float64)
    e = torch.as_tensor(expected).detach().to("cpu", torch.float64)
    if a.shape != e.shape:
        raise ValueError(f"rel_error: shapes differ, actual {tuple(a.shape)} vs expected {tuple(e.shape)}")
    if a.numel() == 0:
        return 0.0
    return float((a - e).abs().max() / e.abs().max().clamp_min(eps))


def assert_close(actual, expected, *, atol: float = 1e-6, rtol: float = 1e-5, name: str = "value") -> None:
    """Raise AssertionError (with shapes, worst index and errors) unless actual ~= expected.

    Same rule as torch.testing: |a - e| <= atol + rtol * |e| elementwise.
    """
    a = torch.as_tensor(actual).detach().to("cpu")
    e = torch.as_tensor(expected).detach().to("cpu")
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {tuple(a.shape)}, expected {tuple(e.shape)}")
    a64, e64 = a.to(torch.float64), e.to(torch.float64)
    if torch.isnan(a64).any() != torch.isnan(e64).any() or not torch.equal(torch.isnan(a64), torch.isnan(e64)):
        raise AssertionError(f"{name}: NaN pattern differs ({int(torch.isnan(a64).sum())} NaNs, expected {int(torch.isnan(e64).sum())})")
    ok = torch.isnan(e64) | ((a64 - e64).abs() <= atol + rtol * e64.abs())
    if not bool(ok.all()):
        diff = torch.where(torch.isnan(e64), torch.zeros_like(e64), (a64 - e64).abs())
        idx = int(diff.argmax())
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(idx), a.shape)) if a.dim() else ()
        raise AssertionError(
            f"{name}: {int((~ok).sum())}/{ok.numel()} elements differ beyond atol={atol:g}, rtol={rtol:g}; "
            f"worst at {where}: got {a64.flatten()[idx].item():.6g}, expected {e64.flatten()[idx].item():.6g} "
            f"(abs err {diff.max().item():.3g}, rel err {rel_error(a64, e64):.3g})"
        )


def available_devices() -> list[str]:
    """'cpu' always, plus 'cuda' when a GPU is visible: tests parametrise over this."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
