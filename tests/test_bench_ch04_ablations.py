"""`bench ch04_ablations` (smoke size) and its two measurements, checked on real clips where the answer is known."""
import warnings
from dataclasses import replace

import pytest
import torch

from minivid.bench import ch04_ablations as abl
from minivid.bench import run_bench
from minivid.data import WorldConfig, estimate_flow, sample_batch
from minivid.eval import Judge
from minivid.pipelines import ch04
from minivid.utils import make_generator

pytestmark = pytest.mark.usefixtures("one_thread")


def _real(n=64):
    return sample_batch(n, kind="video", split="heldout", size=16, frames=8, generator=make_generator(7))


def test_real_clips_are_straight_and_their_flow_has_the_worlds_speeds():
    b = _real()
    f = abl.motion_failures(b["x"], Judge())
    assert f == {"bent_sideways": 0.0, "bent_other": 0.0}
    mag = abl.generated_flow_magnitude(estimate_flow(b["x"], WorldConfig(size=16, frames=8)), b["x"])
    assert min(abs(mag - 0.5), abs(mag - 1.0)) < 0.02, mag         # slow 0.5, fast 1 (the median is one of them)
    diagonal = b["x"].clone()
    for t in range(8):                                             # the same object, moved down and right at once
        diagonal[:, :, t] = torch.roll(b["x"][:, :, 0], shifts=(t // 2, t // 2), dims=(-2, -1))
    still = abl.motion_failures(diagonal, Judge())
    assert still["bent_sideways"] > 0.5, still


def test_arm_recipes_add_their_options_to_the_recipes_own():
    p = ch04.get_preset("full")
    r = p.ablation_base
    a = abl.arm_recipe(r, abl.ARMS["+ t_shift 2 + motion channels + each frame's mean token"])
    assert a.pseudo3d == {**r.pseudo3d, "global_context": True} and a.t_shift == 2 and a.motion_channels
    assert abl.arm_recipe(r, abl.ARMS["the recipe"]) == r
    # the last arm is the headline recipe, at the steps the ablation trained it
    assert abl.arm_recipe(r, list(abl.ARMS.values())[-1]) == replace(p.video, steps=r.steps)


def test_bench_ch04_ablations_smoke_has_every_arm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = run_bench("ch04_ablations", "smoke")
    rows = rec["tables"]["motion_ablation"]
    assert [r["temporal layers"] for r in rows] == list(abl.ARMS)
    for r in rows:
        for k in ("color_acc", "motion_plausible", "validity", "bent_sideways", "bent_other"):
            assert 0 <= r[k] <= 1, (k, r[k])
        p = ch04.get_preset("smoke")
        arm = abl.arm_recipe(p.ablation_base, abl.ARMS[r["temporal layers"]])
        assert ("flow_magnitude" in r) == arm.motion_channels
        assert ("motion_plausible_random_cue" in r) == arm.motion_cue
