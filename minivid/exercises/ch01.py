"""Chapter 01 exercises (minivid/diffusion): checkers shared by the notebook and the tests, hints, known mistakes.

Each `check_*` runs the learner's function (default: the one in minivid) against a naive float64
reference written out here with plain Python arithmetic, on random inputs of several ranks and
per-example timesteps. The functions under test are linear in their tensor inputs, so on failure
the checker probes each input with ones/zeros, reads off the coefficient the learner used, and
compares it with the usual mistakes (alpha_t for alpha_bar_t, a missing square root, an
off-by-one timestep...) to say what to fix. A pass prints one line and returns True; a failure
raises AssertionError with that diagnosis.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minivid.diffusion.schedules import Schedule, make_schedule
from minivid.exercises.base import Mistake, call

_TS = [0, 1, 7, 25, 49]     # probe timesteps on a T = 50 schedule


def _ref_tables(s: Schedule) -> dict[str, list[float]]:
    """Per-timestep scalars computed with Python floats, independent of the torch code."""
    betas = [float(b) for b in s.betas]
    ab, p = [], 1.0
    for b in betas:
        p *= 1.0 - b
        ab.append(p)
    ab_prev = [1.0] + ab[:-1]
    return {"beta": betas, "alpha": [1 - b for b in betas], "ab": ab, "ab_prev": ab_prev}


def _coeff(fn: Callable, kwargs_zero: dict, name: str, t: torch.Tensor) -> torch.Tensor:
    """Coefficient of input `name` (per example) in a linear fn: fn(name=1, others=0)."""
    kw = {k: (torch.zeros_like(v) if torch.is_tensor(v) and v.dtype.is_floating_point else v)
          for k, v in kwargs_zero.items()}
    kw[name] = torch.ones_like(kw[name])
    out = fn(**kw)
    out = out[0] if isinstance(out, tuple) else out
    return out.reshape(out.shape[0], -1)[:, 0]


def _diagnose(label: str, got: torch.Tensor, expected: list[float], candidates: dict[str, list[float]],
              ts: list[int]) -> str:
    lines = [f"  coefficient of {label}: got {[round(float(g), 5) for g in got]} at t={ts}",
             f"                 expected {[round(e, 5) for e in expected]}"]
    for hint, vals in candidates.items():
        if all(abs(float(g) - v) <= 1e-6 * max(1.0, abs(v)) for g, v in zip(got, vals)):
            lines.append(f"  -> your values equal {hint}")
    return "\n".join(lines)


def _inputs(shape, generator):
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _run_ranks(ex, fn, ref_fn, make_kwargs, out_names, where):
    """Compare fn(**kw) with ref_fn(**kw) on 2-D, 4-D and 5-D float64 inputs; return failure text or ''."""
    g = torch.Generator().manual_seed(1234)
    for shape in [(5, 2), (5, 3, 4, 4), (5, 3, 2, 4, 4)]:
        kw = make_kwargs(shape, g)
        got = call(ex, where, fn, **kw)
        want = ref_fn(**kw)
        got = got if isinstance(got, tuple) else (got,)
        want = want if isinstance(want, tuple) else (want,)
        if len(got) != len(want):
            return f"expected {len(want)} outputs ({', '.join(out_names)}), got {len(got)}"
        for name, a, b in zip(out_names, got, want):
            if name != "variance" and tuple(a.shape) != tuple(shape):
                return f"{name} has shape {tuple(a.shape)} for x of shape {shape}; expected {shape}"
            try:
                a = torch.broadcast_to(a, shape).double()
            except RuntimeError:
                return f"{name} has shape {tuple(a.shape)}, which does not broadcast against x of shape {shape}"
            err = float((a - torch.broadcast_to(b, shape)).abs().max())
            if not err <= 1e-9:
                return f"{name} differs from the reference for x of shape {shape} (max abs error {err:.3g})"
    # float32 in -> float32 out
    kw = make_kwargs((2, 3, 4, 4), g)
    kw32 = {k: (v.float() if torch.is_tensor(v) and v.dtype == torch.float64 else v) for k, v in kw.items()}
    out = fn(**kw32)
    out = out[0] if isinstance(out, tuple) else out
    if out.dtype != torch.float32:
        return f"float32 inputs gave a {out.dtype} output: keep the input dtype (gather() does the cast)"
    return ""


def _report(ex: str, title: str, problem: str, details: str = "") -> bool:
    if problem:
        raise AssertionError(f"Exercise {ex} ({title}): {problem}\n{details}".rstrip())
    print(f"Exercise {ex} ({title}): all checks passed.")
    return True


def _sched():
    return make_schedule("linear", 50)


def _t():
    return torch.tensor(_TS, dtype=torch.long)


# ----------------------------------------------------------------------------- 1.1

def check_q_sample(fn: Callable | None = None) -> bool:
    """Exercise 1.1: q_sample(x0, t, noise, schedule) -> sqrt(ab_t) x0 + sqrt(1 - ab_t) noise."""
    from minivid.diffusion.process import q_sample
    fn = fn or q_sample
    s = _sched()
    R = _ref_tables(s)

    def mk(shape, g):
        return dict(x0=_inputs(shape, g), t=torch.randint(0, s.T, (shape[0],), generator=g),
                    noise=_inputs(shape, g), schedule=s)

    def ref(x0, t, noise, schedule):
        a = torch.tensor([math.sqrt(R["ab"][i]) for i in t], dtype=torch.float64).reshape(-1, *[1] * (x0.dim() - 1))
        b = torch.tensor([math.sqrt(1 - R["ab"][i]) for i in t], dtype=torch.float64).reshape(-1, *[1] * (x0.dim() - 1))
        return a * x0 + b * noise

    problem = _run_ranks("1.1", fn, ref, mk, ["x_t"], "q_sample in minivid/diffusion/process.py")
    details = ""
    if problem:
        t = _t()
        kw = dict(x0=torch.zeros(len(_TS), 2, dtype=torch.float64), t=t,
                  noise=torch.zeros(len(_TS), 2, dtype=torch.float64), schedule=s)
        f = lambda **k: fn(**k)  # noqa: E731
        details = "\n".join([
            _diagnose("x0", _coeff(f, kw, "x0", t), [math.sqrt(R["ab"][i]) for i in _TS], {
                "alpha_bar_t without the square root": [R["ab"][i] for i in _TS],
                "sqrt(alpha_t): use alpha_bars (the cumulative product), not alphas": [math.sqrt(R["alpha"][i]) for i in _TS],
                "sqrt(alpha_bar_{t-1}): index alpha_bars with t, not t-1": [math.sqrt(R["ab_prev"][i]) for i in _TS],
            }, _TS),
            _diagnose("noise", _coeff(f, kw, "noise", t), [math.sqrt(1 - R["ab"][i]) for i in _TS], {
                "1 - alpha_bar_t: the noise std is its square root": [1 - R["ab"][i] for i in _TS],
                "sqrt(beta_t): that is one forward step, q(x_t|x_{t-1}), not the closed form": [math.sqrt(R["beta"][i]) for i in _TS],
            }, _TS)])
    return _report("1.1", "q_sample", problem, details)


# ----------------------------------------------------------------------------- 1.2

def check_q_posterior(fn: Callable | None = None) -> bool:
    """Exercise 1.2: q_posterior(x0, x_t, t, schedule) -> (mean, variance) of q(x_{t-1} | x_t, x_0)."""
    from minivid.diffusion.process import q_posterior
    fn = fn or q_posterior
    s = _sched()
    R = _ref_tables(s)
    c0 = [math.sqrt(R["ab_prev"][i]) * R["beta"][i] / (1 - R["ab"][i]) for i in range(s.T)]
    ct = [math.sqrt(R["alpha"][i]) * (1 - R["ab_prev"][i]) / (1 - R["ab"][i]) for i in range(s.T)]
    var = [R["beta"][i] * (1 - R["ab_prev"][i]) / (1 - R["ab"][i]) for i in range(s.T)]

    def mk(shape, g):
        return dict(x0=_inputs(shape, g), x_t=_inputs(shape, g),
                    t=torch.randint(0, s.T, (shape[0],), generator=g), schedule=s)

    def ref(x0, x_t, t, schedule):
        r = lambda v: torch.tensor([v[i] for i in t], dtype=torch.float64).reshape(-1, *[1] * (x0.dim() - 1))  # noqa: E731
        return r(c0) * x0 + r(ct) * x_t, r(var)

    problem = _run_ranks("1.2", fn, ref, mk, ["mean", "variance"], "q_posterior in minivid/diffusion/process.py")
    details = ""
    if problem:
        t = _t()
        kw = dict(x0=torch.zeros(len(_TS), 2, dtype=torch.float64), x_t=torch.zeros(len(_TS), 2, dtype=torch.float64),
                  t=t, schedule=s)
        details = "\n".join([
            _diagnose("x0 in the mean", _coeff(fn, kw, "x0", t), [c0[i] for i in _TS], {
                "alpha_bar_{t-1} without the square root": [R["ab_prev"][i] * R["beta"][i] / (1 - R["ab"][i]) for i in _TS],
            }, _TS),
            _diagnose("x_t in the mean", _coeff(fn, kw, "x_t", t), [ct[i] for i in _TS], {
                "alpha_t without the square root": [R["alpha"][i] * (1 - R["ab_prev"][i]) / (1 - R["ab"][i]) for i in _TS],
            }, _TS),
            f"  variance expected beta_t (1 - alpha_bar_(t-1)) / (1 - alpha_bar_t) = {[round(var[i], 6) for i in _TS]}"
            " (it is 0 at t = 0: alpha_bar_(-1) = 1)"])
    return _report("1.2", "posterior mean and variance", problem, details)


# ----------------------------------------------------------------------------- 1.3

def check_ddpm_step(fn: Callable | None = None) -> bool:
    """Exercise 1.3: ddpm_step(x_t, t, x0_hat, noise, schedule) -> posterior mean + sqrt(var) * noise (no noise at t=0)."""
    from minivid.diffusion.samplers import ddpm_step
    fn = fn or ddpm_step
    s = _sched()
    R = _ref_tables(s)
    c0 = [math.sqrt(R["ab_prev"][i]) * R["beta"][i] / (1 - R["ab"][i]) for i in range(s.T)]
    ct = [math.sqrt(R["alpha"][i]) * (1 - R["ab_prev"][i]) / (1 - R["ab"][i]) for i in range(s.T)]
    sd = [math.sqrt(R["beta"][i] * (1 - R["ab_prev"][i]) / (1 - R["ab"][i])) for i in range(s.T)]

    def mk(shape, g):
        t = torch.randint(0, s.T, (shape[0],), generator=g)
        t[0] = 0                                   # always exercise the last step
        return dict(x_t=_inputs(shape, g), t=t, x0_hat=_inputs(shape, g), noise=_inputs(shape, g), schedule=s)

    def ref(x_t, t, x0_hat, noise, schedule):
        r = lambda v: torch.tensor([v[i] for i in t], dtype=torch.float64).reshape(-1, *[1] * (x_t.dim() - 1))  # noqa: E731
        return r(c0) * x0_hat + r(ct) * x_t + r(sd) * noise

    problem = _run_ranks("1.3", fn, ref, mk, ["x_prev"], "ddpm_step in minivid/diffusion/samplers.py")
    details = ""
    if problem:
        t = _t()
        z = torch.zeros(len(_TS), 2, dtype=torch.float64)
        kw = dict(x_t=z, t=t, x0_hat=z, noise=z, schedule=s)
        details = _diagnose("noise", _coeff(fn, kw, "noise", t), [sd[i] for i in _TS], {
            "the variance, not its square root (the standard deviation)": [sd[i] ** 2 for i in _TS],
            "sqrt(beta_t) (the 'large' variance; this course uses the posterior variance beta~_t)":
                [math.sqrt(R["beta"][i]) for i in _TS],
        }, _TS) + "\n  hint: x_{t-1} = posterior mean + posterior std * noise; q_posterior gives both."
    return _report("1.3", "one DDPM step", problem, details)


# ----------------------------------------------------------------------------- 1.4

def check_ddim_step(fn: Callable | None = None) -> bool:
    """Exercise 1.4: ddim_step(x_t, t, t_prev, x0_hat, eps_hat, schedule, eta, noise) (Song et al. eq. 12)."""
    from minivid.diffusion.samplers import ddim_step
    fn = fn or ddim_step
    s = _sched()
    R = _ref_tables(s)
    abp = [1.0] + R["ab"]                       # index t + 1, so t_prev = -1 gives 1

    for eta in (0.0, 0.5, 1.0):
        def mk(shape, g, eta=eta):
            t = torch.randint(1, s.T, (shape[0],), generator=g)
            tp = (t - torch.randint(1, 6, (shape[0],), generator=g)).clamp(min=-1)
            tp[0] = -1
            return dict(x_t=_inputs(shape, g), t=t, t_prev=tp, x0_hat=_inputs(shape, g),
                        eps_hat=_inputs(shape, g), schedule=s, eta=eta, noise=_inputs(shape, g))

        def ref(x_t, t, t_prev, x0_hat, eps_hat, schedule, eta, noise):
            out = torch.empty_like(x_t)
            for b in range(x_t.shape[0]):
                a, ap = abp[int(t[b]) + 1], abp[int(t_prev[b]) + 1]
                sig = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
                out[b] = math.sqrt(ap) * x0_hat[b] + math.sqrt(max(1 - ap - sig**2, 0.0)) * eps_hat[b] + sig * noise[b]
            return out

        problem = _run_ranks("1.4", fn, ref, mk, ["x_prev"], "ddim_step in minivid/diffusion/samplers.py")
        if problem:
            hint = ("  hint: x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma noise,\n"
                    "        sigma = eta sqrt((1 - ab_prev) / (1 - ab_t) (1 - ab_t / ab_prev)), ab_prev = 1 when t_prev = -1\n"
                    "        (alpha_bar_at(schedule, t, x) handles the t = -1 convention).")
            return _report("1.4", "one DDIM step", f"with eta={eta}: {problem}", hint)
    return _report("1.4", "one DDIM step", "")


# ----------------------------------------------------------------------------- 1.5

def check_v_conversion(fn: Callable | None = None) -> bool:
    """Exercise 1.5: x0_eps_from_v(x_t, t, v, schedule) -> (x0, eps) (Salimans & Ho 2022)."""
    from minivid.diffusion.process import x0_eps_from_v
    fn = fn or x0_eps_from_v
    s = make_schedule("cosine", 50, zero_snr=True)     # includes alpha_bar = 0 at the last step
    R = _ref_tables(s)
    R["ab"][-1] = 0.0

    def mk(shape, g):
        t = torch.randint(0, s.T, (shape[0],), generator=g)
        t[-1] = s.T - 1
        return dict(x_t=_inputs(shape, g), t=t, v=_inputs(shape, g), schedule=s)

    def ref(x_t, t, v, schedule):
        a = torch.tensor([math.sqrt(R["ab"][i]) for i in t], dtype=torch.float64).reshape(-1, *[1] * (x_t.dim() - 1))
        b = torch.tensor([math.sqrt(1 - R["ab"][i]) for i in t], dtype=torch.float64).reshape(-1, *[1] * (x_t.dim() - 1))
        return a * x_t - b * v, b * x_t + a * v

    problem = _run_ranks("1.5", fn, ref, mk, ["x0", "eps"], "x0_eps_from_v in minivid/diffusion/process.py")
    hint = ("  hint: with a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t): x_t = a x0 + s eps and v = a eps - s x0;\n"
            "        solve this 2x2 rotation: x0 = a x_t - s v, eps = s x_t + a v (no division, so it also works\n"
            "        where alpha_bar_t = 0).") if problem else ""
    return _report("1.5", "v conversion", problem, hint)


CHECKS = {"1.1": check_q_sample, "1.2": check_q_posterior, "1.3": check_ddpm_step,
          "1.4": check_ddim_step, "1.5": check_v_conversion}

HINTS = {
    "1.1": ["x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise: one line once you have alpha_bar_t for "
            "each example.",
            "`gather(schedule.alpha_bars, t, x0)` picks alpha_bar at each example's own t and reshapes it to "
            "(B, 1, ..., 1), so it broadcasts against images (4-D) and clips (5-D) alike.",
            "ab = gather(schedule.alpha_bars, t, x0); return ab.sqrt() * x0 + (1 - ab).sqrt() * noise"],
    "1.2": ["Both coefficients of the mean and the variance are in the docstring (Ho et al. eqs. 6-7); you need "
            "alpha_bar_t, alpha_bar_{t-1} and beta_t per example.",
            "schedule.alpha_bars_prev[t] is alpha_bar_{t-1} with alpha_bar_{-1} = 1, so t = 0 needs no special "
            "case; alpha_t = 1 - beta_t.",
            "mean = (sqrt(ab_prev) beta x0 + sqrt(1 - beta) (1 - ab_prev) x_t) / (1 - ab); "
            "var = beta (1 - ab_prev) / (1 - ab), each gathered with gather(..., t, x0)."],
    "1.3": ["A DDPM step samples the posterior q(x_{t-1} | x_t, x_0) with x_0 replaced by the network's guess.",
            "q_posterior (exercise 1.2) gives the mean and the variance; add sqrt(variance) * noise, except at "
            "t = 0 (the last step returns the mean).",
            "mean, var = q_posterior(x0_hat, x_t, t, schedule); mask = (t > 0) reshaped to (B, 1, ..., 1); "
            "return mean + mask * var.sqrt() * noise"],
    "1.4": ["DDIM writes x_prev from the two predictions: sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) "
            "eps_hat + sigma noise (Song et al. eq. 12).",
            "alpha_bar_at(schedule, t, x_t) handles t_prev = -1 (alpha_bar = 1); sigma = eta sqrt((1 - ab_prev) / "
            "(1 - ab) (1 - ab / ab_prev)), and eta = 0 adds no noise at all.",
            "Clamp 1 - ab_prev - sigma^2 at 0 before the square root (round-off at eta = 1)."],
    "1.5": ["(x_t, v) is a rotation of (x_0, eps) by the angle whose cosine is a = sqrt(alpha_bar_t): invert the "
            "rotation, do not divide.",
            "With s = sqrt(1 - alpha_bar_t): x_t = a x0 + s eps and v = a eps - s x0.",
            "x0 = a x_t - s v and eps = s x_t + a v."],
}

MISTAKES = [
    Mistake("1.1", "alpha_bar_t without the square root", "ab.sqrt() * x0", "ab * x0"),
    Mistake("1.1", "the noise scaled by 1 - alpha_bar_t instead of its square root", "(1 - ab).sqrt() * noise",
            "(1 - ab) * noise"),
    Mistake("1.1", "alphas instead of alpha_bars (one step, not the closed form)", "schedule.alpha_bars",
            "schedule.alphas"),
    Mistake("1.2", "alpha_bar_t where alpha_bar_{t-1} belongs", "gather(schedule.alpha_bars_prev, t, x0)",
            "gather(schedule.alpha_bars, t, x0)"),
    Mistake("1.2", "alpha_t without the square root in the x_t coefficient", "(1 - beta).sqrt() * (1 - ab_prev)",
            "(1 - beta) * (1 - ab_prev)"),
    Mistake("1.3", "the variance where the standard deviation belongs", "var.sqrt() * noise", "var * noise"),
    Mistake("1.3", "x_t and x0_hat swapped in the call to q_posterior", "q_posterior(x0_hat, x_t, t, schedule)",
            "q_posterior(x_t, x0_hat, t, schedule)"),
    Mistake("1.4", "sigma left out of the eps_hat coefficient", "(1 - ab_prev - sigma**2)", "(1 - ab_prev)"),
    Mistake("1.4", "the jump made to alpha_bar_t instead of alpha_bar_{t_prev}", "ab_prev.sqrt() * x0_hat",
            "ab.sqrt() * x0_hat"),
    Mistake("1.5", "a sign error in x0 (x0 = a x_t + s v)", "a * x_t - s * v", "a * x_t + s * v"),
    Mistake("1.5", "the two outputs swapped", "return a * x_t - s * v, s * x_t + a * v",
            "return s * x_t + a * v, a * x_t - s * v"),
]

__all__ = ["check_q_sample", "check_q_posterior", "check_ddpm_step", "check_ddim_step", "check_v_conversion",
           "CHECKS", "HINTS", "MISTAKES"]
