"""Captions for Shapes World: templates x synonyms over a closed, enumerable vocabulary.

Image captions name colour, shape and size ("a big crimson disc"); video-text captions
add the motion and its speed ("the small cobalt box is sliding to the left quickly").
Every attribute value has three phrasings and every phrasing word belongs to exactly one
value, so a caption can be parsed back into its labels (`parse_caption`), and the set of
words is closed (`VOCAB`): chapter 2 builds its tokenizer from it.
"""
from __future__ import annotations

import itertools

from minivid.data.world import COLORS, DIRECTIONS, SHAPES, SIZES, SPEEDS

SYNONYMS = {
    "color": {
        "red": ("red", "crimson", "scarlet"),
        "yellow": ("yellow", "golden", "lemon"),
        "green": ("green", "lime", "emerald"),
        "cyan": ("cyan", "aqua", "turquoise"),
        "blue": ("blue", "cobalt", "sapphire"),
        "magenta": ("magenta", "fuchsia", "violet"),
    },
    "shape": {
        "circle": ("circle", "disc", "ball"),
        "square": ("square", "box", "block"),
        "triangle": ("triangle", "pyramid", "wedge"),
    },
    "size": {
        "small": ("small", "little", "tiny"),
        "big": ("big", "large", "huge"),
    },
    "direction": {
        "left": ("moving left", "sliding to the left", "heading left"),
        "right": ("moving right", "sliding to the right", "heading right"),
        "up": ("moving up", "rising", "floating up"),
        "down": ("moving down", "falling", "sinking"),
    },
    "speed": {
        "slow": ("slowly", "gently", "lazily"),
        "fast": ("quickly", "rapidly", "swiftly"),
    },
}
VALUES = {"color": COLORS, "shape": SHAPES, "size": SIZES, "direction": DIRECTIONS, "speed": SPEEDS}

# Templates never put a colour right after "a" (so "emerald" / "aqua" need no "an").
IMAGE_TEMPLATES = (
    "a {size} {color} {shape}",
    "the {size} {color} {shape}",
    "a picture of a {size} {color} {shape}",
    "a {shape} that is {size} and {color}",
    "one {size} {color} {shape} on black",
)
VIDEO_TEMPLATES = (
    "a {size} {color} {shape} {direction} {speed}",
    "a {size} {color} {shape} {speed} {direction}",
    "the {size} {color} {shape} is {direction} {speed}",
    "a {shape} that is {size} and {color} {direction} {speed}",
    "a video of a {size} {color} {shape} {direction} {speed}",
)
_SLOTS = ("color", "shape", "size", "direction", "speed")


def _template_words(templates) -> set[str]:
    words = set()
    for t in templates:
        for w in t.split():
            if not w.startswith("{"):
                words.add(w)
    return words


def vocabulary() -> list[str]:
    """Every word a caption can contain, sorted."""
    words = _template_words(IMAGE_TEMPLATES) | _template_words(VIDEO_TEMPLATES)
    for table in SYNONYMS.values():
        for phrases in table.values():
            for p in phrases:
                words.update(p.split())
    return sorted(words)


VOCAB = tuple(vocabulary())


def caption(labels: dict, choice: tuple[int, ...]) -> str:
    """Caption for one item. labels: {attribute: int} (direction < 0 -> image caption);
    choice: 6 non-negative ints picking the template and each slot's synonym (taken modulo).
    """
    video = labels["direction"] >= 0
    templates = VIDEO_TEMPLATES if video else IMAGE_TEMPLATES
    fill = {}
    for k, slot in enumerate(_SLOTS):
        if slot in ("direction", "speed") and not video:
            continue
        phrases = SYNONYMS[slot][VALUES[slot][int(labels[slot])]]
        fill[slot] = phrases[int(choice[k + 1]) % len(phrases)]
    return templates[int(choice[0]) % len(templates)].format(**fill)


def captions_for(params: dict, with_motion: bool) -> list[str]:
    """Captions of N drawn items (see world.params_from_uniforms); motion only if with_motion."""
    cols = {k: params[k].tolist() for k in _SLOTS}  # plain ints: indexing tensors per item is slow
    choices = params["choice"].tolist()
    out = []
    for i, choice in enumerate(choices):
        lab = {k: cols[k][i] for k in _SLOTS}
        if not with_motion:
            lab["direction"] = lab["speed"] = -1
        out.append(caption(lab, choice))
    return out


def all_captions(color: str, shape: str, size: str, direction: str | None = None,
                 speed: str | None = None) -> list[str]:
    """Every phrasing of one attribute combination (image captions if direction is None)."""
    video = direction is not None
    templates = VIDEO_TEMPLATES if video else IMAGE_TEMPLATES
    vals = dict(color=color, shape=shape, size=size, direction=direction, speed=speed)
    slots = [s for s in _SLOTS if video or s not in ("direction", "speed")]
    options = [SYNONYMS[s][vals[s]] for s in slots]
    out = []
    for t in templates:
        for pick in itertools.product(*options):
            out.append(t.format(**dict(zip(slots, pick))))
    return out


def _keyword_table() -> dict[str, tuple[str, int]]:
    """word -> (attribute, value id) for the one word of each phrasing that names its value."""
    table = {}
    for attr, values in SYNONYMS.items():
        for vid, name in enumerate(VALUES[attr]):
            for phrase in values[name]:
                key = [w for w in phrase.split() if w not in ("moving", "sliding", "heading", "floating", "to", "the")]
                table[key[-1]] = (attr, vid)
    return table


def parse_caption(text: str, unknown: str = "raise") -> dict[str, int]:
    """Labels named by a caption: {attribute: id}, -1 for attributes it does not mention.

    Raises ValueError for a caption naming two values of one attribute, and for words outside VOCAB unless
    unknown="skip" (a typed prompt: the words the world knows are read, "a red elefant moving up" names red and up).
    """
    if unknown not in ("raise", "skip"):
        raise ValueError(f"unknown must be 'raise' or 'skip', got {unknown!r}")
    table = _keyword_table()
    out = dict.fromkeys(_SLOTS, -1)
    for w in text.lower().split():
        if w not in VOCAB:
            if unknown == "skip":
                continue
            raise ValueError(f"parse_caption: word {w!r} is not in the Shapes World vocabulary")
        if w in table:
            attr, vid = table[w]
            if out[attr] not in (-1, vid):
                raise ValueError(f"parse_caption: caption names two values of {attr}: {text!r}")
            out[attr] = vid
    return out


def prompt_labels(text: str) -> dict[str, int]:
    """What a typed prompt names, {attribute: id} (-1: not named): its Shapes World words read by `parse_caption`,
    the others skipped (the tokenizer warns about them); a prompt naming two values of one attribute names none."""
    try:
        return parse_caption(text, unknown="skip")
    except ValueError:
        return dict.fromkeys(_SLOTS, -1)
