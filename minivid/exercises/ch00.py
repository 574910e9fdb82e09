"""Chapter 00 exercises (Shapes World and its judge): checkers shared by the notebook and the tests, hints,
known mistakes.

The three exercises are teaching copies: the renderer and the judge use their own versions of the same
formulas (`minivid.data.render._triangle_sdf`, `minivid.eval.frechet._frechet_d2`,
`minivid.eval.measure._hue_and_color`), so a learner's unfinished answer never changes the data or a score.
Each checker compares the learner's function with a float64 reference computed another way (from the
triangle's vertices, from closed forms and a general eigendecomposition, from `colorsys`) and names the
usual mistake when the numbers match it. A pass prints one line and returns True; a failure raises
AssertionError with the diagnosis.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import torch

from minivid.exercises.base import Mistake, call, failed, passed

# ----------------------------------------------------------------------------- 0.1 triangle SDF


def naive_triangle_sdf(px: float, py: float, r: float) -> float:
    """Max over the three edges of the signed distance to the edge's line (outward normal), from the vertices."""
    from minivid.data.world import TRIANGLE_BASE
    b = h = TRIANGLE_BASE * r
    verts = [(0.0, -h / 2), (b / 2, h / 2), (-b / 2, h / 2)]                       # apex, base right, base left
    cx, cy = 0.0, h / 6                                                            # centroid: inside
    best = -math.inf
    for (x1, y1), (x2, y2) in zip(verts, verts[1:] + verts[:1]):
        nx, ny = y2 - y1, -(x2 - x1)
        n = math.hypot(nx, ny)
        nx, ny = nx / n, ny / n
        if nx * (cx - x1) + ny * (cy - y1) > 0:                                   # make the normal point outwards
            nx, ny = -nx, -ny
        best = max(best, nx * (px - x1) + ny * (py - y1))
    return best


def check_triangle_sdf(fn: Callable | None = None) -> bool:
    """Exercise 0.1: `sdf_triangle(dx, dy, r)` -> the max of the three half-plane signed distances."""
    if fn is None:
        from minivid.data.render import sdf_triangle as fn
    from minivid.data.world import TRIANGLE_BASE
    where = "minivid/data/render.py (sdf_triangle)"
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(400, 2, generator=g, dtype=torch.float64) * 1.2 - 0.6           # around a triangle of r = 0.3
    r = 0.2 + 0.2 * torch.rand(400, generator=g, dtype=torch.float64)              # a radius per point
    got = call("0.1", where, fn, pts[:, 0], pts[:, 1], r)
    if tuple(got.shape) != (400,):
        raise failed("0.1", "triangle SDF", f"dx, dy, r of shape (400,) gave shape {tuple(got.shape)}; everything "
                     "broadcasts elementwise")
    want = torch.tensor([naive_triangle_sdf(float(x), float(y), float(s)) for (x, y), s in zip(pts, r)],
                        dtype=torch.float64)
    err = float((got.double() - want).abs().max())
    if err <= 1e-9:
        return passed("0.1", "triangle SDF")
    h = TRIANGLE_BASE * r
    base = pts[:, 1] - h / 2
    side = pts[:, 0].abs() * h - (pts[:, 1] + h / 2) * (h / 2)
    hints = {"the slanted sides' distance is not divided by the length of their normal (h, -b/2): "
             "divide by sqrt(h^2 + b^2 / 4)": torch.maximum(base, side),
             "the base line is on the wrong side: y points down, so the base is at y = +h/2 (distance dy - h/2)":
                 torch.maximum(-pts[:, 1] - h / 2, side / torch.sqrt(h * h + h * h / 4)),
             "only the slanted sides: the base is a third half-plane": side / torch.sqrt(h * h + h * h / 4)}
    match = [k for k, v in hints.items() if float((got.double() - v).abs().max()) < 1e-9]
    worst = int((got.double() - want).abs().argmax())
    raise failed("0.1", "triangle SDF", f"differs from the half-plane reference by up to {err:.3g} (e.g. at dx="
                 f"{float(pts[worst, 0]):.3f}, dy={float(pts[worst, 1]):.3f}, r={float(r[worst]):.3f}: got "
                 f"{float(got[worst]):.4f}, expected {float(want[worst]):.4f})",
                 *(match or ["inside the triangle every point's value is minus its distance to the nearest edge; "
                             "check each edge's line and the sign of its normal"]))


# ----------------------------------------------------------------------------- 0.2 Fréchet distance

def check_gaussian_frechet(fn: Callable | None = None) -> bool:
    """Exercise 0.2: `gaussian_frechet(mu_a, cov_a, mu_b, cov_b)` -> |mu_a - mu_b|^2 + tr(A + B - 2 (A B)^1/2)."""
    if fn is None:
        from minivid.eval.frechet import gaussian_frechet as fn
    where = "minivid/eval/frechet.py (gaussian_frechet)"
    g = torch.Generator().manual_seed(12)
    f64 = dict(generator=g, dtype=torch.float64)
    mu_a, mu_b = torch.randn(5, **f64), torch.randn(5, **f64)
    var_a, var_b = torch.rand(5, **f64) + 0.1, torch.rand(5, **f64) + 0.1
    m = torch.randn(6, 6, **f64)
    a = m @ m.T + 0.1 * torch.eye(6, dtype=torch.float64)
    b = torch.cov(torch.randn(6, 40, **f64))
    cross = float(torch.linalg.eigvals(a @ b).real.clamp_min(0).sqrt().sum())       # tr (A B)^1/2, general eig
    cases = [("diagonal covariances", (mu_a, torch.diag(var_a), mu_b, torch.diag(var_b)),
              float(((mu_a - mu_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum()),
              {"the cross term without its factor 2": float(((mu_a - mu_b) ** 2).sum() + (var_a + var_b).sum()
                                                           - (var_a * var_b).sqrt().sum()),
               "the cross term without the square root (tr(A B), not tr((A B)^1/2))":
                   float(((mu_a - mu_b) ** 2).sum() + (var_a + var_b - 2 * var_a * var_b).sum()),
               "the mean term without the square (|mu_a - mu_b|, summed)":
                   float((mu_a - mu_b).abs().sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum())}),
             ("full covariances, equal means", (torch.zeros(6), a, torch.zeros(6), b),
              float(a.trace() + b.trace()) - 2 * cross, {}),
             ("a Gaussian against itself", (mu_a, a[:5, :5], mu_a, a[:5, :5]), 0.0, {})]
    for name, args, want, mistakes in cases:
        got = float(call("0.2", where, fn, *args))
        if abs(got - want) <= 1e-8 * max(1.0, abs(want)):
            continue
        match = [k for k, v in mistakes.items() if abs(got - v) <= 1e-8 * max(1.0, abs(v))]
        raise failed("0.2", "Fréchet distance", f"{name}: got {got:.6f}, expected {want:.6f}",
                     *(match or ["d^2 = |mu_a - mu_b|^2 + tr(A) + tr(B) - 2 tr((A^1/2 B A^1/2)^1/2): psd_sqrt gives "
                                 "A^1/2, eigvalsh the eigenvalues of the symmetric middle matrix"]))
    return passed("0.2", "Fréchet distance")


# ----------------------------------------------------------------------------- 0.3 hue -> colour

def check_hue_to_color(fn: Callable | None = None) -> bool:
    """Exercise 0.3: `hue_to_color(rgb)` -> (hue in degrees [0, 360), nearest colour id = round(hue / 60) mod 6)."""
    if fn is None:
        from minivid.eval.measure import hue_to_color as fn
    from minivid.data.world import COLOR_RGB, COLORS
    where = "minivid/eval/measure.py (hue_to_color)"
    hue, color = call("0.3", where, fn, torch.tensor(COLOR_RGB, dtype=torch.float32))
    want = torch.arange(6, dtype=torch.float32) * 60
    if hue.shape != (6,) or float((hue.float() - want).abs().max()) > 1e-3:
        h = [round(float(v), 3) for v in hue.reshape(-1)]
        why = ("these are radians: convert with torch.rad2deg" if hue.numel() == 6 and float(hue.abs().max()) < 7
               else "wrap negative angles into [0, 360) with % 360" if hue.numel() == 6 and float(hue.min()) < 0
               else "hue = atan2(sqrt(3) (g - b), 2 r - g - b) in degrees")
        raise failed("0.3", "hue to colour", f"the hues of {', '.join(COLORS)} must be 0, 60, ..., 300; got {h}", why)
    if color.dtype != torch.long or color.tolist() != list(range(6)):
        raise failed("0.3", "hue to colour", f"the six pure colours must read as ids 0..5, got {color.tolist()} "
                     f"({color.dtype})", "color = round(hue / 60) mod 6, as a long tensor")
    rgb = torch.rand(2000, 3, generator=torch.Generator().manual_seed(11))
    hsv = torch.tensor([colorsys.rgb_to_hsv(*c)[0] * 360 for c in rgb.tolist()])
    ref = torch.round(hsv / 60).long() % 6
    clear = ((hsv + 30) % 60 - 30).abs() < 29                                       # away from a bin boundary
    got = call("0.3", where, fn, rgb)[1]
    wrong = (got != ref) & clear
    if bool(wrong.any()):
        i = int(wrong.nonzero()[0])
        floor = bool(((torch.floor(hsv / 60).long() % 6) == got)[clear].all())
        raise failed("0.3", "hue to colour", f"{int(wrong.sum())} of {int(clear.sum())} random colours read wrong, "
                     f"e.g. rgb {[round(v, 3) for v in rgb[i].tolist()]} (HSV hue {float(hsv[i]):.1f} degrees) -> "
                     f"{got[i].item()}, expected {ref[i].item()} ({COLORS[ref[i]]})",
                     "the bins are off by half a bin: round to the nearest multiple of 60, do not floor" if floor
                     else "")
    return passed("0.3", "hue to colour")


CHECKS = {"0.1": check_triangle_sdf, "0.2": check_gaussian_frechet, "0.3": check_hue_to_color}

HINTS = {
    "0.1": ["The triangle is the intersection of three half-planes, so its SDF (inside and near the edges) is "
            "the max of the three signed distances to the edge lines.",
            "The base is the line y = h/2 (y points down): its signed distance is dy - h/2. The two slanted "
            "sides are mirror images: use |dx| and handle one of them.",
            "For the right side (apex (0, -h/2) to (b/2, h/2)) an outward normal is (h, -b/2): distance = "
            "(|dx| h - (dy + h/2) b/2) / sqrt(h^2 + b^2/4). Divide by the normal's length!"],
    "0.2": ["d^2 = |mu_a - mu_b|^2 + tr(A) + tr(B) - 2 tr((A B)^1/2); the hard part is the last trace.",
            "(A B)^1/2 has the eigenvalues of A^1/2 B A^1/2, a symmetric PSD matrix: psd_sqrt(A) gives A^1/2 "
            "and torch.linalg.eigvalsh its eigenvalues.",
            "Clamp the eigenvalues at 0 before the square root (round-off), then sum their square roots."],
    "0.3": ["The hue is an angle around the colour wheel: red 0, yellow 60, green 120, cyan 180, blue 240, "
            "magenta 300 degrees.",
            "hue = atan2(sqrt(3) (g - b), 2 r - g - b), in degrees, wrapped into [0, 360) with % 360.",
            "The nearest colour id is round(hue / 60) % 6 (360 degrees is red again)."],
}

MISTAKES = [
    Mistake("0.1", "the slanted sides' distance not normalised (no division by the normal's length)",
            " / torch.sqrt(h * h + b * b / 4)", ""),
    Mistake("0.1", "the base on the wrong side (y points down)", "base = dy - h / 2", "base = -dy - h / 2"),
    Mistake("0.2", "the cross term without its factor 2", "- 2 * evals.sqrt().sum()", "- evals.sqrt().sum()"),
    Mistake("0.2", "tr(A B) instead of tr((A B)^1/2)", "evals.sqrt().sum()", "evals.sum()"),
    Mistake("0.3", "the bins floored instead of rounded", "torch.round(hue / 60)", "torch.floor(hue / 60)"),
    Mistake("0.3", "the hue left in radians", "torch.rad2deg(torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b))",
            "torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)"),
]

__all__ = ["naive_triangle_sdf", "check_triangle_sdf", "check_gaussian_frechet", "check_hue_to_color", "CHECKS",
           "HINTS", "MISTAKES"]
