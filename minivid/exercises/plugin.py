"""pytest plugin used by `minivid exercises`: records the outcome of each exercise-marked test.

Loaded with `-p minivid.exercises.plugin`. With MINIVID_EXERCISE_REPORT=FILE it writes
{"exercises": {id: {"passed": [...], "failed": [...], "messages": {nodeid: first line}}}}.
With MINIVID_EXERCISE_CHAPTER=N only chapter N's exercise tests are kept.
"""
from __future__ import annotations

import json
import os

_results: dict[str, dict] = {}


def _ids(item) -> list[str]:
    return [str(m.args[0]) for m in item.iter_markers("exercise") if m.args]


def pytest_collection_modifyitems(config, items):
    for item in items:
        for ex in _ids(item):
            item.user_properties.append(("exercise", ex))
    chapter = os.environ.get("MINIVID_EXERCISE_CHAPTER")
    if chapter is None:
        return
    keep, drop = [], []
    for item in items:
        (keep if any(i.split(".")[0] == chapter for i in _ids(item)) else drop).append(item)
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
            text = str(report.longrepr).strip().splitlines()
            last = [ln for ln in text if ln.startswith("E ")]
            rec["messages"][report.nodeid] = (last[-1] if last else (text[-1] if text else ""))[:300]


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MINIVID_EXERCISE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"exercises": _results}, f, indent=1)
