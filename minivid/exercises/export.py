"""The student copy: `python -m minivid exercises export DIR [--chapter N ...] [--force]`.

The copy holds the package, tests, notebooks, chapters and setup files; the regions of the chosen
chapters (all by default) are replaced by their stubs, every other region keeps its solution, so
the rest of the course keeps working. A manifest (`.minivid-export.json`) records what was written
and each file's hash. Exporting again with `--force` updates the copy but never destroys a
learner's work: a file that differs from what the last export wrote (or that was there before any
export) is first copied to `.minivid-backup/<time>/` and the report says where. Exporting into the
repository itself (or around it) is refused.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from minivid.exercises.regions import Region, find_regions, normalize_chapter, strip_solutions
from minivid.utils import REPO_ROOT

# What a student copy contains (relative to the repo root); caches, checkpoints and results stay behind.
COPY_ITEMS = ("minivid", "tests", "notebooks", "chapters", "datasets/README.md",
              "README.md", "requirements.txt", "pyproject.toml", ".gitignore")
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", "cache", ".pytest_cache"}
MANIFEST = ".minivid-export.json"
BACKUP_DIR = ".minivid-backup"


@dataclass
class ExportReport:
    regions: list[Region]                       # the regions that were stripped
    written: list[str] = field(default_factory=list)
    backed_up: list[str] = field(default_factory=list)
    backup_dir: Path | None = None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(src: Path) -> list[Path]:
    out = []
    for item in COPY_ITEMS:
        p = src / item
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [f for f in sorted(p.rglob("*")) if f.is_file() and not SKIP_PARTS & set(f.relative_to(src).parts)
                    and f.suffix != ".pyc" and not any(part.endswith(".egg-info") for part in f.parts)]
    return out


def _refuse_nesting(src: Path, dst: Path) -> None:
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents:
        raise ValueError(f"refusing to export into the repository itself ({d} is {'' if d == s else 'inside '}"
                         f"{s}): the stripped files would replace the solutions. Choose a folder outside it, "
                         f"e.g. {s.parent / (s.name + '-student')}")
    if d in s.parents:
        raise ValueError(f"refusing to export into {d}: it contains the repository ({s}); choose an empty folder "
                         f"outside it, e.g. {s.parent / (s.name + '-student')}")


def export(dst, src: Path = REPO_ROOT, chapters=None, force: bool = False) -> ExportReport:
    """Write a student copy of `src` at `dst`, stripping the regions of `chapters` (default: all).

    Raises ExerciseFormatError (a malformed region anywhere: nothing is written), ValueError (an
    unknown chapter, or dst is the repository), FileExistsError (dst is not empty and not force).
    """
    src, dst = Path(src), Path(dst)
    regions = find_regions(src / "minivid")              # validates every file before anything is written
    have = sorted({r.chapter for r in regions})
    chosen = None if not chapters else {normalize_chapter(c) for c in chapters}
    if chosen is not None and chosen - set(have):
        raise ValueError(f"no exercises in chapter(s) {', '.join(sorted(chosen - set(have)))}; chapters with "
                         f"exercises: {', '.join(have)}")
    _refuse_nesting(src, dst)
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst} is a file, not a folder")
    if dst.exists() and any(dst.iterdir()) and not force:
        raise FileExistsError(f"{dst} exists and is not empty; pass --force to update it (files you changed "
                              f"are backed up under {dst / BACKUP_DIR} first, never lost)")
    stripped = [r for r in regions if chosen is None or r.chapter in chosen]
    by_file = {r.path for r in stripped}
    manifest_path = dst / MANIFEST
    try:
        old = json.loads(manifest_path.read_text())["files"] if manifest_path.exists() else {}
    except (ValueError, KeyError, TypeError):
        old = {}
    report = ExportReport(stripped)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    files = {}
    for f in _files(src):
        rel = f.relative_to(src).as_posix()
        data = f.read_bytes()
        if f in by_file:
            data = strip_solutions(data.decode(), f, chosen).encode()
        files[rel] = data
    for rel, data in files.items():
        target = dst / rel
        if target.exists():
            current = target.read_bytes()
            if current == data:
                continue
            if old.get(rel) != _sha(current):        # not what we wrote last time: the learner's (or unknown) work
                report.backup_dir = dst / BACKUP_DIR / stamp
                keep = report.backup_dir / rel
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(target, keep)
                report.backed_up.append(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        report.written.append(rel)
    dst.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps({
        "source": str(src.resolve()), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "chapters": sorted({r.chapter for r in stripped}), "exercises": [r.id for r in stripped],
        "files": {rel: _sha(data) for rel, data in files.items()}}, indent=1))
    return report


__all__ = ["export", "ExportReport", "COPY_ITEMS", "MANIFEST", "BACKUP_DIR"]
