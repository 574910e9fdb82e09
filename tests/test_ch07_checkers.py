"""The checkers of chapter 07 (minivid.exercises.ch07), which the notebook calls: each passes on the package's
solution and names the typical mistakes when given one.

Every test here is marked with the exercise it grades: `python -m minivid exercises check 7` runs them.
"""
import pytest

from minivid.exercises import ch07

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_exercise_of_the_chapter_has_a_checker():
    assert set(ch07.CHECKS) == {"7.1", "7.2", "7.3"} == set(ch07.HINTS)


# ----------------------------------------------------------------------------- 7.1

@pytest.mark.exercise("7.1")
def test_frame_count_checker_passes_and_names_the_usual_mistakes():
    assert ch07.check_frame_count()

    def no_first_frame(T, factor=4):
        return (T - 1) // factor

    def rounds(T, factor=4):
        return 1 + (T - 1) // factor

    def fixed_factor(T, factor=4):
        k, r = divmod(T - 1, 4)
        if r:
            raise ValueError(f"use {1 + 4 * k} or {5 + 4 * k}")
        return 1 + k

    def mute(T, factor=4):
        k, r = divmod(T - 1, factor)
        if r:
            raise ValueError("bad frame count")
        return 1 + k

    for fn, match in ((no_first_frame, "first frame was forgotten"), (rounds, "must raise a ValueError"),
                      (fixed_factor, "hard-coded"), (mute, "nearest valid counts")):
        with pytest.raises(AssertionError, match=match):
            ch07.check_frame_count(fn)


# ----------------------------------------------------------------------------- 7.2

def _forward(read, store_key=None):
    """A CachedCausalConv.forward that reads its cache with read(self, state) and stores it under store_key(self)."""
    def forward(self, x, state=None):
        if state is None:
            return self.conv(x)[0]
        y, cache = self.conv(x, read(self, state))
        if store_key is not None:
            state.caches[store_key(self)] = cache
        return y
    return forward


@pytest.mark.exercise("7.2")
def test_cache_handoff_checker_passes_and_names_the_usual_mistakes():
    assert ch07.check_cache_handoff()
    right = lambda self, state: None if state.first_chunk else state.caches[self.key]   # noqa: E731
    cases = (
        (_forward(lambda self, state: None, lambda self: self.key), "padded like the first"),
        (_forward(lambda self, state: state.caches.get(self.key), lambda self: self.key), "first chunk has no past"),
        (_forward(right), "no cache"),
        (_forward(lambda self, state: None if state.first_chunk else state.caches["c"], lambda self: "c"),
         "under self.key"),
    )
    for forward, match in cases:
        with pytest.raises(AssertionError, match=match):
            ch07.check_cache_handoff(forward)
    assert ch07.check_cache_handoff(_forward(right, lambda self: self.key))


# ----------------------------------------------------------------------------- 7.3

@pytest.mark.exercise("7.3")
def test_chunk_spans_checker_passes_and_names_the_usual_mistakes():
    assert ch07.check_chunk_spans()

    def one_short(T, c, factor=4):
        first = max(1, (T - 1) % c)
        return [(0, first)] + [(a, a + c) for a in range(first, T, c)]

    def remainder_last(T, c, factor=4):
        return [(0, 1)] + [(a, min(a + c, T)) for a in range(1, T, c)]

    def never_alone(T, c, factor=4):
        first = 1 + (T - 1) % c
        first = 1 + c if first == 1 and T > 1 else first
        return [(0, first)] + [(a, a + c) for a in range(first, T, c)]

    for fn, match in ((one_short, "one frame short"), (remainder_last, "go in the FIRST chunk"),
                      (never_alone, "lone\\s+first frame, \\(0, 1\\)"), (lambda T, c, factor=4: T, "pairs")):
        with pytest.raises(AssertionError, match=match):
            ch07.check_chunk_spans(fn)
