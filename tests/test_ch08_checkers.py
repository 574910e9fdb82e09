"""The checkers of chapter 08 (minivid.exercises.ch08), which the notebook calls: each passes on the package's
solution and names the typical mistakes when given one.

Every test here is marked with the exercise it grades: `python -m minivid exercises check 8` runs them.
"""
import math

import pytest
import torch

from minivid.exercises import ch08
from minivid.ops import gate, modulate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_exercise_of_the_chapter_has_a_checker():
    assert set(ch08.CHECKS) == {"8.1", "8.2", "8.3"} == set(ch08.HINTS)


# ----------------------------------------------------------------------------- 8.1

def _boxes(x, patch):
    pt, ph, pw = (patch,) * 3 if isinstance(patch, int) else patch
    B, C, T, H, W = x.shape
    return B, C, T // pt, pt, H // ph, ph, W // pw, pw


@pytest.mark.exercise("8.1")
def test_patchify_checker_passes_and_names_the_usual_mistakes():
    assert ch08.check_patchify()

    def channels_innermost(x, patch=(1, 2, 2)):
        B, C, nt, pt, nh, ph, nw, pw = _boxes(x, patch)
        return x.reshape(B, C, nt, pt, nh, ph, nw, pw).permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(B, nt * nh * nw, -1)

    def width_first(x, patch=(1, 2, 2)):                   # tokens ordered (w, h, t)
        B, C, nt, pt, nh, ph, nw, pw = _boxes(x, patch)
        return x.reshape(B, C, nt, pt, nh, ph, nw, pw).permute(0, 6, 4, 2, 1, 3, 5, 7).reshape(B, nt * nh * nw, -1)

    def plain_reshape(x, patch=(1, 2, 2)):
        B, C, nt, pt, nh, ph, nw, pw = _boxes(x, patch)
        return x.reshape(B, nt * nh * nw, -1)

    def transposed(x, patch=(1, 2, 2)):
        B, C, nt, pt, nh, ph, nw, pw = _boxes(x, patch)
        y = x.reshape(B, C, nt, pt, nh, ph, nw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, nt * nh * nw, -1)
        return y.transpose(1, 2)

    def fixed_patch(x, patch=(1, 2, 2)):
        B, C, T, H, W = x.shape
        y = x.reshape(B, C, T, 1, H // 2, 2, W // 2, 2).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return y.reshape(B, T * (H // 2) * (W // 2), -1)

    for fn, match in ((channels_innermost, "channels came out innermost"), (width_first, "wrong token order"),
                      (plain_reshape, "plain reshape"), (transposed, "tokens are the rows"),
                      (fixed_patch, "all three sizes of `patch`"), (lambda x, patch=1: None, "expected a tensor")):
        with pytest.raises(AssertionError, match=match):
            ch08.check_patchify(fn)


# ----------------------------------------------------------------------------- 8.2

def _forward(wrong=None):
    """A DiTBlock.forward with one known slip."""
    def forward(self, x, c, grid, rope=None, context=None, context_mask=None):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN(c)
        mod = (lambda h, sh, sc: h * sc[:, None] + sh[:, None]) if wrong == "no 1 +" else modulate
        y = self.attn(mod(self.norm1(x), shift_msa, scale_msa), grid, rope)
        x0 = x
        x = (0 if wrong == "no residual" else x) + (y if wrong == "attn ungated" else gate(y, gate_msa))
        if (context is not None or wrong == "text always") and wrong != "no text":
            x = x + self.cross(self.norm_cross(x), context, context_mask)
        y = self.mlp(mod(self.norm2(x0 if wrong == "parallel" else x), shift_mlp, scale_mlp))
        return x + gate(y, gate_mlp)
    return forward


@pytest.mark.exercise("8.2")
def test_adaln_block_checker_passes_and_names_the_usual_mistakes():
    assert ch08.check_adaln_block()
    assert ch08.check_adaln_block(_forward())                # a hand-written right answer passes too
    for wrong, match in (("attn ungated", "without its gate"), ("no residual", "residual is missing"),
                         ("no 1 +", "1 \\+ scale"), ("parallel", "one after the other"),
                         ("no text", "cross-attention comes between")):
        with pytest.raises(AssertionError, match=match):
            ch08.check_adaln_block(_forward(wrong))

    with pytest.raises(AssertionError, match="raised .*\n.*only when context is not None"):
        ch08.check_adaln_block(_forward("text always"))   # cross-attention on context=None: an error, as feedback


# ----------------------------------------------------------------------------- 8.3

def _expand(t, x0):
    return t.reshape(-1, *[1] * (x0.dim() - 1))


@pytest.mark.exercise("8.3")
def test_flow_target_checker_passes_and_names_the_usual_mistakes():
    assert ch08.check_flow_target()

    def sign_flipped(x0, noise, t):
        tt = _expand(t, x0)
        return (1 - tt) * x0 + tt * noise, x0 - noise

    def swapped(x0, noise, t):
        tt = _expand(t, x0)
        return tt * x0 + (1 - tt) * noise, noise - x0

    def curved(x0, noise, t):
        tt = _expand(t, x0)
        return torch.cos(tt * math.pi / 2) * x0 + torch.sin(tt * math.pi / 2) * noise, noise - x0

    def eps_target(x0, noise, t):
        tt = _expand(t, x0)
        return (1 - tt) * x0 + tt * noise, noise

    def reversed_pair(x0, noise, t):
        tt = _expand(t, x0)
        return noise - x0, (1 - tt) * x0 + tt * noise

    def flat_t(x0, noise, t):                               # t not shaped to broadcast over a clip
        return (1 - t) * x0 + t * noise, noise - x0

    for fn, match in ((sign_flipped, "sign is flipped"), (swapped, "swapped"), (curved, "straight line"),
                      (eps_target, "eps target"), (reversed_pair, "wrong order"), (flat_t, "x_t is wrong|raised"),
                      (lambda x0, noise, t: noise - x0, "expected the pair")):
        with pytest.raises(AssertionError, match=match):
            ch08.check_flow_target(fn)
