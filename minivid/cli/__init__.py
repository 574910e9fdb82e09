"""The command line: `python -m minivid {demo,generate,train,eval,bench,exercises,data,results}`.

Every subcommand imports its machinery lazily, so `--help` is instant. Chapters are found by
`minivid.cli.chapters` (a pipelines module with a `CLI` spec); model commands live in
`minivid.cli.video`; arguments are checked by `minivid.cli.validate` before any work starts.
A bad input ends in one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from minivid.cli.chapters import UsageError
from minivid.cli.validate import finite_float, int_arg, positive_int


def _cmd_bench(args) -> int:
    from minivid.bench import available, format_record, run_bench

    if args.name == "list":
        print("\n".join(available()))
        return 0
    # a record is always written: an hour-long full bench run without --out must not end as terminal output only
    out = args.out or Path("outputs/bench") / f"{args.name}-{args.preset}-seed{args.seed}-seeds{args.seeds}.json"
    record = run_bench(args.name, preset=args.preset, seed=args.seed, out=out, seeds=args.seeds)
    print(format_record(record))
    print(f"wrote {out}")
    return 0


def _cmd_exercises(args) -> int:
    from minivid import exercises

    if args.action == "export":
        try:
            rep = exercises.export(args.dir, chapters=args.chapters, force=args.force)
        except (exercises.ExerciseFormatError, FileExistsError, ValueError) as e:
            print(f"exercises export: {e}", file=sys.stderr)
            return 2
        print(f"wrote a student copy to {args.dir} with {len(rep.regions)} exercises stripped:")
        for r in rep.regions:
            print(f"  {r.id:>5}  {r.title}  ({r.where()})")
        if rep.backed_up:
            print(f"{len(rep.backed_up)} files you had changed were kept in {rep.backup_dir} before the update: "
                  + ", ".join(rep.backed_up[:8]) + (" ..." if len(rep.backed_up) > 8 else ""))
        first = rep.regions[0].chapter if rep.regions else "0"
        print(f"next: cd {args.dir} && pip install -e . && python -m minivid exercises status"
              f" (then: python -m minivid exercises check {first})")
        return 0
    if args.action == "list":
        for r in exercises.find_regions():
            print(f"  {r.id:>5}  {r.title:<58} {r.where()}")
        return 0
    if args.action == "status":
        exercises.status()
        return 0
    if args.action == "verify":
        from minivid.exercises import meta

        report = meta.run_meta()
        found = meta.problems(report)
        for note in meta.notes(report):
            print(f"note: {note}")
        print("\n".join(found) if found else "every exercise is caught on its own, and so is each known mistake")
        return 1 if found else 0
    if args.action == "hint":
        if not args.dir:
            raise UsageError("exercises hint needs an exercise id, e.g. `python -m minivid exercises hint 1.2`")
        try:
            exercises.hint(args.dir, level=99 if args.all else args.level)
        except KeyError as e:
            raise UsageError(f"exercises hint: {e.args[0]}") from None
        return 0
    if args.chapter is None:
        raise UsageError("exercises check needs a chapter, e.g. `python -m minivid exercises check 1` "
                         "(A: the appendix)")
    try:
        chapter = exercises.normalize_chapter(args.chapter)
    except ValueError as e:
        raise UsageError(f"exercises check: {e}") from None
    return 0 if exercises.check(chapter) else 1


def _cmd_results(args) -> int:
    from minivid.results import render_all

    stale = render_all(check=args.check)
    if args.check:
        for p in stale:
            print(f"out of date: {p} (run `python -m minivid results render`)")
        return 1 if stale else 0
    print("\n".join(f"rendered {p}" for p in stale) or "all documents already up to date")
    return 0


def _cmd_video(args) -> int:
    """demo / generate / train / eval / data live in minivid.cli.video (they need models)."""
    from minivid.cli import video

    return getattr(video, args.command)(args)


class _Parser(argparse.ArgumentParser):
    """argparse with one line on stderr for a bad argument (what was wrong, where to look), exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m minivid", description="minivid: text-to-video diffusion rebuilt at tiny scale, offline, on a CPU.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="train (or load) the text-to-video model and make a clip for a prompt")
    d.add_argument("--prompt", default=None, help="what to generate (default: a fixed example prompt)")
    d.add_argument("--out", default="outputs/demo.gif", help="GIF or MP4 to write")
    d.add_argument("--preset", default="full", choices=["smoke", "full"])
    d.add_argument("--seed", type=int_arg, default=0, help="sampling noise (the model is the trained one)")
    d.add_argument("--train", action="store_true",
                   help="train the demo's models here instead of using the released weights in weights/")

    g = sub.add_parser("generate", help="generate a clip from a prompt with a trained model")
    g.add_argument("prompt")
    g.add_argument("--out", default="outputs/clip.gif", help="GIF or MP4 (by extension)")
    g.add_argument("--seed", type=int_arg, default=0, help="sampling noise (the model is the trained one)")
    g.add_argument("--steps", type=positive_int, default=50, help="DDIM steps")
    g.add_argument("--guidance", type=finite_float, default=None, help="classifier-free guidance scale")
    g.add_argument("--frames", type=positive_int, default=None)
    g.add_argument("--model", default=None, help="which chapter's model, e.g. ch03 (default: the demo's)")
    g.add_argument("--stages", default=None, help="ch05: stop the cascade early, e.g. base,tsr")
    g.add_argument("--preset", default="full", choices=["smoke", "full"])

    t = sub.add_parser("train", help="train a chapter's model (cached under checkpoints/)")
    t.add_argument("chapter", help="e.g. ch01")
    t.add_argument("--preset", default="full", choices=["smoke", "full"])
    t.add_argument("--seed", type=int_arg, default=0, help="training seed")
    t.add_argument("--steps", type=positive_int, default=None, help="override the preset's step count")

    e = sub.add_parser("eval", help="judge a GIF/MP4 against the prompt it was made from")
    e.add_argument("file")
    e.add_argument("--prompt", required=True)

    da = sub.add_parser("data", help="preview Shapes World: write sample clips with their captions")
    da.add_argument("--kind", default="video_text", choices=["image", "video", "video_text"])
    da.add_argument("--split", default="train", choices=["train", "val", "heldout"])
    da.add_argument("-n", type=positive_int, default=8)
    da.add_argument("--size", type=positive_int, default=32)
    da.add_argument("--frames", type=positive_int, default=16)
    da.add_argument("--seed", type=int_arg, default=0)
    da.add_argument("--out", default="outputs/shapes_world.gif")

    b = sub.add_parser("bench", help="run a benchmark and record its figures as JSON")
    b.add_argument("name", help="benchmark name, or 'list'")
    b.add_argument("--preset", default="smoke", choices=["smoke", "full"])
    b.add_argument("--seed", type=int_arg, default=0, help="the first training seed")
    b.add_argument("--seeds", type=positive_int, default=1, help="train and judge the headline model at N seeds")
    b.add_argument("--out", default=None, help="write the JSON record here (chapters/results/NAME.json for the chapters; "
                   "default outputs/bench/NAME-PRESET-seedS-seedsN.json)")

    x = sub.add_parser("exercises", help="the student copy and per-exercise feedback (export, check, status, hint)",
                       description="export DIR [--chapter N ...] [--force]: write a student copy; check N: grade "
                       "chapter N (A: the appendix); status: every exercise, done or to do; hint ID [--level K]: "
                       "staged hints; list: where each exercise is; verify: prove each exercise and each known "
                       "mistake is caught by its own tests")
    x.add_argument("action", choices=["export", "check", "status", "hint", "list", "verify"])
    x.add_argument("dir", nargs="?", help="export: where to write the student copy; check: the chapter (N or A); "
                   "hint: the exercise id (e.g. 1.2)")
    x.add_argument("chapter", nargs="?", default=None, help=argparse.SUPPRESS)
    x.add_argument("--chapter", dest="chapters", action="append", metavar="N",
                   help="export: strip only chapter N's exercises (repeat for more; default: every chapter)")
    x.add_argument("--force", action="store_true", help="export into a non-empty folder (an earlier student copy): "
                   "files you changed are backed up first")
    x.add_argument("--level", type=positive_int, default=None, metavar="K", help="hint: show hints 1..K (default 1)")
    x.add_argument("--all", action="store_true", help="hint: show every hint")

    r = sub.add_parser("results", help="render measured results into the chapters and README")
    r.add_argument("action", choices=["render"])
    r.add_argument("--check", action="store_true", help="only report documents that disagree with their JSON")
    return p


PACKAGE = Path(__file__).resolve().parents[1]                  # minivid/


def _one_line(show):
    """warnings.showwarning for the command line: minivid's own warnings as one line, `warning: ...` - not the file,
    line number and source line of the code that raised them (a learner who typed `circel` needs the tokenizer's
    "did you mean 'circle'", not its code); any other library's go to `show`, the usual display, as before."""
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if Path(filename).resolve().is_relative_to(PACKAGE):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return showwarning


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "exercises" and args.action == "check" and args.chapter is None and args.dir:
        args.chapter, args.dir = args.dir, None                 # `exercises check 1`
    handlers = {"bench": _cmd_bench, "exercises": _cmd_exercises, "results": _cmd_results}
    handler = handlers.get(args.command, _cmd_video)
    from minivid.results import ResultsError
    from minivid.train import TrainingDiverged
    from minivid.utils import CheckpointError

    try:
        if args.command == "exercises" and args.action == "export" and not args.dir:
            raise UsageError("exercises export needs a directory, e.g. "
                             "`python -m minivid exercises export ../minivid-student`")
        with warnings.catch_warnings():                       # restores the usual format when main returns
            warnings.showwarning = _one_line(warnings.showwarning)
            return handler(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (CheckpointError, ResultsError, TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; checkpoints written so far are kept and the run resumes where it stopped.",
              file=sys.stderr)
        return 130


__all__ = ["main", "build_parser"]
