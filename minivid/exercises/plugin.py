"""pytest plugin used by `minivid exercises check`: records the outcome of each exercise-marked test.

Loaded with `-p minivid.exercises.plugin`. With MINIVID_EXERCISE_REPORT=FILE it writes
{"exercises": {id: {"passed": [...], "failed": [...], "messages": {nodeid: message}}}}, where a
message is the exception that failed the test (type and text, as a learner would read it).
MINIVID_EXERCISE_CHAPTER=N keeps only chapter N's exercise tests (N a number or A);
MINIVID_EXERCISE_IDS=1.1,1.2 keeps only those exercises' tests.
"""
from __future__ import annotations

import json
import os

_results: dict[str, dict] = {}


def _ids(item) -> list[str]:
    return [str(m.args[0]) for m in item.iter_markers("exercise") if m.args]


def failure_message(report, limit: int = 1500) -> str:
    """'AssertionError: Exercise 1.1 (q_sample): ...' from a failed test report."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return crash.message[:limit]
    text = str(report.longrepr).strip().splitlines()
    err = [ln[2:].strip() for ln in text if ln.startswith("E ")]
    return ("\n".join(err) if err else (text[-1] if text else ""))[:limit]


def pytest_collection_modifyitems(config, items):
    for item in items:
        for ex in _ids(item):
            item.user_properties.append(("exercise", ex))
    chapter = os.environ.get("MINIVID_EXERCISE_CHAPTER")
    wanted = {i for i in os.environ.get("MINIVID_EXERCISE_IDS", "").split(",") if i}
    if chapter is None and not wanted:
        return
    keep, drop = [], []
    for item in items:
        ids = _ids(item)
        ok = any((chapter is None or i.split(".")[0] == chapter) and (not wanted or i in wanted) for i in ids)
        (keep if ok else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def pytest_runtest_logreport(report):
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    for ex in [v for k, v in report.user_properties if k == "exercise"]:
        rec = _results.setdefault(ex, {"passed": [], "failed": [], "messages": {}})
        if report.outcome == "passed":
            rec["passed"].append(report.nodeid)
        elif report.outcome == "failed":
            rec["failed"].append(report.nodeid)
            rec["messages"][report.nodeid] = failure_message(report)


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MINIVID_EXERCISE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"exercises": _results}, f, indent=1)
