"""The subcommands that need models or data: demo, generate, train, eval, data, and the judge's report.

Chapters are found by `minivid.cli.chapters`; every argument is checked (`minivid.cli.validate`) before
a model is loaded, trained or sampled.
"""
from __future__ import annotations

import torch

from minivid.bench.demo import recorded_train_time
from minivid.cli.chapters import UsageError, chapter_cli, chapter_name, demo_chapter
from minivid.cli.validate import frames_within, output_video, prompt_text
from minivid.release import forget_installed, stale

DEFAULT_PROMPT = "a big red circle moving to the right"


def judge_report(x: torch.Tensor, prompts: list[str]) -> list[str]:
    """One line per clip: what the judge read, and whether it matches what the prompt names."""
    from minivid.data import COLORS, DIRECTIONS, SHAPES, SIZES, prompt_labels
    from minivid.eval import Judge

    pred = Judge().predict(x)
    names = {"color": COLORS, "shape": SHAPES, "size": SIZES, "direction": DIRECTIONS}
    lines = []
    for i, prompt in enumerate(prompts):
        want = prompt_labels(prompt)
        checked = any(want.get(k, -1) >= 0 for k in names)
        parts, ok = [], True
        for k, vocab in names.items():
            got = int(pred[k][i])
            read = vocab[got] if got >= 0 else "-"
            if want.get(k, -1) >= 0:
                hit = got == want[k]
                ok &= hit
                parts.append(f"{k}={read} {'ok' if hit else 'WRONG (asked ' + vocab[want[k]] + ')'}")
            else:
                parts.append(f"{k}={read}")
        valid = bool(pred["valid"][i])
        extra = ""
        if "consistency" in pred:
            extra = f", consistency {float(pred['consistency'][i]):.2f}, flicker {float(pred['flicker'][i]):.3f}"
        verdict = ("not one clean object" if not valid else "MATCHES the prompt" if checked and ok else
                   "does not match" if checked else
                   "nothing to check: the prompt names no colour, shape, size or direction the judge knows")
        lines.append(f"[{i}] {prompt!r}: {verdict} ({', '.join(parts)}{extra})")
    return lines


def _options(spec, args) -> dict:
    """The chapter-specific generate options given on the command line (today: --stages), checked."""
    opts = {"stages": args.stages} if getattr(args, "stages", None) else {}
    if opts and spec.check is None:
        raise UsageError("--stages: this chapter's model has no stages (ch05's cascade has)")
    if spec.check is not None:
        try:
            spec.check(preset=args.preset, frames=args.frames, **opts)
        except ValueError as e:
            raise UsageError(str(e)) from None
    return opts


def _sample(ch: str, spec, prompts, args, steps: int) -> torch.Tensor:
    return spec.generate(prompts, preset=args.preset, seed=args.seed, steps=steps, guidance=args.guidance,
                         frames=args.frames, **_options(spec, args))


def demo(args) -> int:
    from minivid.viz import save_video

    prompt = prompt_text(args.prompt or DEFAULT_PROMPT, "--prompt")
    out = output_video(args.out)
    ch = demo_chapter()
    if ch is None:
        return _data_demo(args, prompt, out)
    spec = chapter_cli(ch, "generate")
    args.guidance = args.frames = args.stages = None
    if getattr(args, "train", False):
        gone = forget_installed()
        print("minivid demo --train: training the demo's models here, not loading the released weights"
              + (f" (removed their installed copies: {', '.join(p.name for p in gone)})" if gone else ""))
        if (took := recorded_train_time(args.preset)) is not None:
            print(f"minivid demo --train: {took}")
    for line in stale():                                  # a released model the recipe no longer matches
        print(f"minivid demo: {line}")
    print(f"minivid demo: text-to-video with the chapter {ch[2:]} model ({args.preset} preset, sampling seed "
          f"{args.seed})")
    x = _sample(ch, spec, [prompt] * 4, args, steps=50)
    print(f"wrote {save_video(x, out)} (4 samples for {prompt!r})")
    print("\n".join(judge_report(x, [prompt] * 4)))
    return 0


def _data_demo(args, prompt: str, out) -> int:
    """Before any text-to-video chapter: render Shapes World clips for the prompt and judge them."""
    from minivid.data import parse_caption
    from minivid.viz import save_video

    print("minivid demo: no text-to-video model exists yet.\n"
          "Meanwhile this demo renders Shapes World clips that match the prompt, and asks the judge\n"
          "to read them back - the same judge that will score the generated videos.")
    x = _render_matching(parse_caption(prompt), n=4, size=32, frames=16, seed=args.seed)
    print(f"wrote {save_video(x, out)} (4 rendered clips for {prompt!r})")
    print("\n".join(judge_report(x, [prompt] * 4)))
    return 0


def _render_matching(labels: dict, n: int, size: int, frames: int, seed: int) -> torch.Tensor:
    """n Shapes World clips whose attributes match `labels` (-1 = any), by rejection sampling."""
    from minivid.data import WorldConfig, render, sample_params

    world = WorldConfig(size=size, frames=frames)
    g = torch.Generator().manual_seed(seed)
    keep = {k: v for k, v in labels.items() if v >= 0 and k in ("color", "shape", "size", "direction", "speed")}
    for split in ("train", "heldout"):        # held-out combinations live only in their own split
        p = sample_params(8192, split, "video_text", world, generator=g)
        ok = torch.ones(8192, dtype=torch.bool)
        for k, v in keep.items():
            ok &= p[k] == v
        idx = ok.nonzero().flatten()[:n]
        if len(idx) == n:
            sel = {k: (v[idx] if torch.is_tensor(v) else v) for k, v in p.items()}
            return render(sel, world, frames=frames)
    raise UsageError(f"could not find {n} clips matching {keep}")


def generate(args) -> int:
    from minivid.viz import save_video

    ch = chapter_name(args.model) if args.model else demo_chapter()
    if ch is None:
        raise UsageError("no chapter has a text-to-video model yet; give --model")
    spec = chapter_cli(ch, "generate")
    prompt = prompt_text(args.prompt)
    out = output_video(args.out)
    frames_within(args.frames, spec.frames, ch)
    _options(spec, args)                                   # checked before any model is loaded or trained
    x = _sample(ch, spec, [prompt], args, steps=args.steps)
    print(f"wrote {save_video(x, out)}")
    print("\n".join(judge_report(x, [prompt])))
    return 0


def train(args) -> int:
    spec = chapter_cli(args.chapter, "train")
    path = spec.train(preset=args.preset, seed=args.seed, steps=args.steps)
    print(f"model saved to {path}")
    return 0


def eval(args) -> int:  # noqa: A001 - the subcommand's name
    from minivid.data import parse_caption
    from minivid.viz import read_video

    prompt = prompt_text(args.prompt, "--prompt")
    try:
        parse_caption(prompt)
    except ValueError as e:
        raise UsageError(f"eval: cannot read the prompt: {e}") from None
    try:
        x = read_video(args.file)[None]
    except FileNotFoundError:
        raise UsageError(f"eval: no such file: {args.file}") from None
    except ValueError as e:
        raise UsageError(f"eval: {e}") from None
    except Exception as e:  # not a video imageio can read (a text file named .gif, a truncated file, ...)
        raise UsageError(f"eval: {args.file} is not a readable GIF/MP4 ({type(e).__name__}); give a clip written "
                         "by `python -m minivid generate` or `save_video(clip, path, scale=1)`") from None
    side, frames = x.shape[-1], x.shape[2]
    if x.shape[-2] != side or not 8 <= side <= 64:
        raise UsageError(f"eval: {args.file} is {x.shape[-2]}x{side}; the judge reads single clips written at "
                         "scale 1 (8..64 px square), e.g. `save_video(clip, path, scale=1)`")
    if frames > 32:
        raise UsageError(f"eval: {args.file} has {frames} frames; the judge reads clips of 1 to 32 frames")
    print("\n".join(judge_report(x, [prompt])))
    return 0


def data(args) -> int:
    from minivid.data import sample_batch
    from minivid.viz import save_video

    out = output_video(args.out)
    if not 8 <= args.size <= 64:
        raise UsageError(f"--size {args.size}: Shapes World renders 8 to 64 px")
    if not 1 <= args.frames <= 32:
        raise UsageError(f"--frames {args.frames}: Shapes World clips have 1 to 32 frames")
    if args.n > 256:
        raise UsageError(f"-n {args.n}: preview at most 256 samples at a time")
    g = torch.Generator().manual_seed(args.seed)
    b = sample_batch(args.n, kind=args.kind, split=args.split, size=args.size, frames=args.frames, generator=g)
    print(f"wrote {save_video(b['x'], out)}: {args.n} {args.kind} samples from the {args.split} split")
    for i, c in enumerate(b["captions"]):
        print(f"  [{i}] {c or '(unlabelled)'}")
    return 0


__all__ = ["DEFAULT_PROMPT", "judge_report", "demo", "generate", "train", "eval", "data"]
