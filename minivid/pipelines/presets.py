"""Presets of the recipe layer: a chapter's preset by name, and variants of one that train for other step counts.

A preset is a frozen dataclass with a `name` and one field per training, each a recipe (a dataclass with `steps`).
A variant that trains differently gets a new name, and with it checkpoints of its own (`common.checkpoint_path`
puts the preset's name into every path), so it never overwrites, or loads, the preset's own:

    p = with_steps(ch03.get_preset("full"), "video", 100)        # `--steps 100`: "full-steps100"
    p = with_recipe_steps(ch06.get_preset("full"), "lb", {"vae": 300, "video": 500})   # the leaderboard's budgets
"""
from __future__ import annotations

from dataclasses import field, fields, is_dataclass, replace


def pick_preset(name, presets: dict, chapter: str):
    """A chapter's preset by name (a preset object passes through); a clear error for unknown names."""
    if not isinstance(name, str):
        return name
    if name not in presets:
        raise ValueError(f"unknown {chapter} preset {name!r}; choose one of {sorted(presets)}")
    return presets[name]


def recipe_fields(preset) -> tuple[str, ...]:
    """The names of a preset's training recipes: its fields that hold a dataclass with a `steps` count."""
    return tuple(f.name for f in fields(preset) if is_dataclass(v := getattr(preset, f.name))
                 and not isinstance(v, type) and hasattr(v, "steps"))


def with_recipe_steps(preset, name: str, steps: dict[str, int]):
    """The preset renamed `name` (its checkpoints then are its own) with recipe k trained for steps[k] steps."""
    if name == preset.name:
        raise ValueError(f"name must differ from the preset's own {name!r}, or the two would share checkpoints")
    unknown = sorted(set(steps) - set(recipe_fields(preset)))
    if unknown:
        raise ValueError(f"steps names {unknown}, which are not recipes of this preset: {recipe_fields(preset)}")
    if any(not isinstance(n, int) or n < 1 for n in steps.values()):
        raise ValueError(f"steps must be ints >= 1, got {steps}")
    return replace(preset, name=name, **{k: replace(getattr(preset, k), steps=n) for k, n in steps.items()})


def with_steps(preset, recipes: str | tuple[str, ...], steps: int | None):
    """`--steps`: the preset with its recipe `recipes` (a field name, or several) trained for `steps` steps each,
    named "<preset>-steps<steps>" so its caches are its own. steps None: the preset itself."""
    if steps is None:
        return preset
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    names = (recipes,) if isinstance(recipes, str) else tuple(recipes)
    return with_recipe_steps(preset, f"{preset.name}-steps{steps}", dict.fromkeys(names, steps))



def added_field(default, **kw):
    """A recipe field added after checkpoints were keyed without it: at its default it is left out of the key
    (`recipe_key`), so every model trained before it existed keeps its cache entry; set, it keys like any field."""
    return field(default=default, metadata={"key": "omit_default"}, **kw)


def key_parts(obj):
    """asdict's plain structure of a recipe part (what `common.recipe_key` hashes), without the `added_field`s
    that hold their default."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: key_parts(getattr(obj, f.name)) for f in fields(obj)
                if not (f.metadata.get("key") == "omit_default" and getattr(obj, f.name) == f.default)}
    if isinstance(obj, (list, tuple)):
        return [key_parts(v) for v in obj]
    if isinstance(obj, dict):
        return {k: key_parts(v) for k, v in obj.items()}
    return obj


__all__ = ["pick_preset", "recipe_fields", "with_recipe_steps", "with_steps", "added_field", "key_parts"]
