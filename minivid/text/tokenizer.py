"""A word-level tokenizer over the closed Shapes World caption vocabulary.

Real text-to-image systems use sub-word tokenizers (CLIP's byte-pair encoding, Radford et al.
2021, arXiv:2103.00020; T5's SentencePiece in Imagen, arXiv:2205.11487). Shapes World captions
come from a closed vocabulary of ~60 words (`minivid.data.VOCAB`), so whole words are enough and
every step stays visible: normalise (lower-case, punctuation -> spaces), split on spaces, look each
word up, append the end token, pad to a fixed length.

    tok = Tokenizer()
    ids, mask = tok.encode(["a big red circle", ""])   # (2, 16) long, (2, 16) bool
    tok.decode(ids[0])                                 # 'a big red circle'

Conventions (CLIP-like):
* every prompt ends with `<eos>`; the text encoder reads its pooled vector at that position;
* `mask` is True on real tokens (words and `<eos>`), False on `<pad>`;
* **the empty prompt "" means "no caption"**: it encodes to the lone `<eos>` token. Its encoding
  is the *null* conditioning of classifier-free guidance (the unconditional branch), and caption
  dropout trains the denoiser on exactly that sequence;
* a word outside the vocabulary becomes `<unk>`, with an `UnknownWordWarning` that names it and
  suggests the closest known words (difflib); a prompt longer than `max_len - 1` words is cut,
  with a `PromptTruncatedWarning`.

Exercise 2.4 is `pad_and_mask`, the packing step on its own: token lists -> padded ids and a mask.
`Tokenizer.encode` packs with its own two lines, so every text-conditioned model keeps working in a
student copy while the exercise is open; the tests hold the two to the same answers.
"""
from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Sequence

import torch

from minivid.data import VOCAB

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIALS = (PAD, UNK, EOS)
_PUNCT = re.compile(r"[^\w\s]|_")


class UnknownWordWarning(UserWarning):
    """A prompt used words the tokenizer does not know; they were encoded as <unk>."""


class PromptTruncatedWarning(UserWarning):
    """A prompt had more words than fit in max_len; the tail was dropped."""


def normalize(text: str) -> list[str]:
    """Lower-case, turn punctuation into spaces, split: "A big, RED circle!" -> ['a', 'big', 'red', 'circle']."""
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    return _PUNCT.sub(" ", text.lower()).split()


def pad_and_mask(rows: Sequence[Sequence[int]], max_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack B token lists into ids (B, max_len) long and mask (B, max_len) bool.

    Row b of ids is rows[b] followed by pad_id up to max_len; mask[b] is True exactly on the
    len(rows[b]) real tokens (a prefix). Every row must fit: len(rows[b]) <= max_len.
    """
    if any(len(r) > max_len for r in rows):
        raise ValueError(f"every row must have at most max_len={max_len} tokens, got lengths "
                         f"{[len(r) for r in rows]}")
    ### BEGIN SOLUTION  # exercise 2.4: pack token lists into padded ids and a mask
    ids = torch.full((len(rows), max_len), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), max_len, dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[b, : len(row)] = True
    return ids, mask
    ### END SOLUTION


class Tokenizer:
    """Word-level tokenizer: `encode(prompts) -> (ids (B, L) long, mask (B, L) bool)`, L = max_len.

    words: the vocabulary (default: every Shapes World caption word); ids 0, 1, 2 are
    <pad>, <unk>, <eos>, then the words in sorted order.
    """

    def __init__(self, words: Sequence[str] | None = None, max_len: int = 16):
        words = sorted(set(VOCAB if words is None else words))
        bad = [w for w in words if w in SPECIALS or normalize(w) != [w]]
        if bad:
            raise ValueError(f"vocabulary words must be lower-case single words without punctuation, got {bad}")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (one word plus <eos>), got {max_len}")
        self.itos = list(SPECIALS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_len = max_len
        self.pad_id, self.unk_id, self.eos_id = (self.stoi[s] for s in SPECIALS)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return self.vocab_size

    def suggest(self, word: str, n: int = 3) -> list[str]:
        """The known words closest to `word` (difflib ratio), best first."""
        return difflib.get_close_matches(word, self.itos[len(SPECIALS):], n=n, cutoff=0.5)

    def _hint(self, word: str) -> str:
        close = self.suggest(word)
        return f"{word!r} (did you mean {' or '.join(map(repr, close))}?)" if close else f"{word!r} (no close known word)"

    def tokenize(self, text: str) -> list[int]:
        """One prompt -> its ids without padding: words then <eos> (warns on unknown words)."""
        words = normalize(text)
        unknown = [w for w in dict.fromkeys(words) if w not in self.stoi]
        if unknown:
            hints = "; ".join(self._hint(w) for w in unknown)
            warnings.warn(f"prompt {text!r} has words the tokenizer does not know, encoded as <unk>: {hints}",
                          UnknownWordWarning, stacklevel=3)
        if len(words) > self.max_len - 1:
            warnings.warn(f"prompt {text!r} has {len(words)} words; only the first {self.max_len - 1} fit "
                          f"(max_len={self.max_len} includes <eos>)", PromptTruncatedWarning, stacklevel=3)
            words = words[: self.max_len - 1]
        return [self.stoi.get(w, self.unk_id) for w in words] + [self.eos_id]

    def encode(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: a str or B strings -> ids (B, L) long, mask (B, L) bool (True = real token).

        Row b is `tokenize(prompts[b])` followed by <pad> up to L = max_len. "" -> [<eos>, <pad>, ...].
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise ValueError("encode needs at least one prompt (use \"\" for the unconditional one)")
        ids = torch.full((len(prompts), self.max_len), self.pad_id, dtype=torch.long)
        for b, text in enumerate(prompts):      # the packing of exercise 2.4 (`pad_and_mask`), kept here
            row = self.tokenize(text)
            ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask = ids != self.pad_id
        return ids, mask

    def decode(self, ids: torch.Tensor | Sequence[int], keep_special: bool = False) -> str:
        """ids (L,) -> the words joined by spaces (stops at <eos> unless keep_special)."""
        out = []
        for i in torch.as_tensor(ids).reshape(-1).tolist():
            w = self.itos[i]
            if not keep_special and w == EOS:
                break
            if keep_special or w not in (PAD,):
                out.append(w)
        return " ".join(out)

    def tokens(self, text: str) -> list[str]:
        """The token strings a prompt becomes, <eos> included (for labelling attention maps)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownWordWarning)
            warnings.simplefilter("ignore", PromptTruncatedWarning)
            return [self.itos[i] for i in self.tokenize(text)]

    def state_dict(self) -> dict:
        return {"words": self.itos[len(SPECIALS):], "max_len": self.max_len}

    @classmethod
    def from_state_dict(cls, state: dict) -> Tokenizer:
        return cls(state["words"], max_len=int(state["max_len"]))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, max_len={self.max_len})"


__all__ = ["PAD", "UNK", "EOS", "SPECIALS", "Tokenizer", "pad_and_mask", "UnknownWordWarning", "PromptTruncatedWarning",
           "normalize"]
