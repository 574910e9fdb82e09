"""Exercise tooling: nbgrader-style solution regions, the student copy, per-exercise feedback.

* `regions`: find the regions (`### BEGIN SOLUTION  # exercise 1.2: title` ... `### END SOLUTION`,
  ids "N.M" or "A.M" for the appendix) and strip them to stubs.
* `export`: `python -m minivid exercises export DIR [--chapter N ...] [--force]` writes a student copy;
  a re-export never destroys a learner's work and never writes into the repository itself.
* `grading`: `exercises check N` (per-exercise verdict, the failing test's message, a hint),
  `exercises status` (every exercise, done or to do, file:line), `exercises hint ID [--level K]`, and
  `grade("N.M")` (one exercise's tests, raising like a checker: for notebook cells).
* `meta`: `exercises verify` proves the tests' teeth one region at a time: each stub alone, and each
  known mistake, is caught by that exercise's own tests, and no other chapter's test reaches it.
* `ch00` ... `ch08`, `appendix`: per chapter, the checkers (`CHECKS`) the notebooks call, staged
  `HINTS` and known `MISTAKES` (found by module name: adding a chapter adds a module, edits no list).

Tests that grade exercise N.M are marked `@pytest.mark.exercise("N.M")`; a test of one exercise may
run its own chapter's other exercises, never another chapter's.
"""
from minivid.exercises.base import Mistake, chapter_module, checker_for, hints_for, mistakes_for
from minivid.exercises.export import ExportReport, export
from minivid.exercises.grading import (
    check,
    exercise_test_files,
    grade,
    hint,
    run_marked_tests,
    status,
    tests_marked,
)
from minivid.exercises.regions import (
    ExerciseFormatError,
    Region,
    find_regions,
    normalize_chapter,
    parse_regions,
    strip_solutions,
)

__all__ = ["Region", "ExerciseFormatError", "parse_regions", "find_regions", "strip_solutions", "normalize_chapter",
           "export", "ExportReport", "check", "status", "hint", "grade", "run_marked_tests", "exercise_test_files",
           "tests_marked", "Mistake", "chapter_module", "checker_for", "hints_for", "mistakes_for"]
