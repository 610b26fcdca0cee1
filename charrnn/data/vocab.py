"""The character vocabulary: every distinct Unicode code point of the corpus, in sorted order.

Encoding goes through a dense numpy lookup table indexed by code point (text -> UTF-32 ->
table), which runs at hundreds of millions of characters per second; the Hugging Face
``tokenizers`` form exists for interoperability, not for speed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable

import numpy as np

from charrnn.errors import CheckpointError, VocabError

UNKNOWN = -1
# The tokenizer.json token for characters outside the vocabulary; longer than one character,
# so it can never be one of them.
UNK_TOKEN = "[UNK]"


def write_tokenizer_json(path: Path, text: str) -> None:
    """Write a tokenizer.json, with a failure as one line that names the file."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}") from None


def codepoints(text: str) -> np.ndarray:
    """The code points of ``text`` as a uint32 array (no copy beyond the UTF-32 encoding)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def describe_chars(chars: Iterable[str], limit: int = 10) -> str:
    """A readable list of characters for error messages: repr() shows control characters."""
    chars = list(chars)
    shown = ", ".join(repr(c) for c in chars[:limit])
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return shown + more


@dataclass(frozen=True)
class Vocab:
    kind: ClassVar[str] = "chars"  # see charrnn.data.vocab_kinds
    chars: tuple[str, ...]
    _lookup: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise VocabError("vocabulary has duplicate characters")
        if any(len(c) != 1 for c in self.chars):
            raise VocabError("vocabulary entries must be single characters")
        points = np.array([ord(c) for c in self.chars], dtype=np.int64)
        lookup = np.full(int(points.max(initial=0)) + 1, UNKNOWN, dtype=np.int32)
        lookup[points] = np.arange(len(self.chars), dtype=np.int32)
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def from_codepoints(cls, points: np.ndarray) -> "Vocab":
        return cls(tuple(chr(int(p)) for p in np.unique(points)))

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls.from_codepoints(codepoints(text))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def id_dtype(self) -> np.dtype:
        """The narrowest unsigned dtype that holds every id (uint8 for ASCII-sized vocabularies)."""
        if len(self) <= 1 << 8:
            return np.dtype(np.uint8)
        if len(self) <= 1 << 16:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    def ids_of_codepoints(self, points: np.ndarray) -> np.ndarray:
        """Map code points to ids, or -1 where the vocabulary lacks the character."""
        if points.size and int(points.max()) < len(self._lookup):
            return self._lookup.take(points)  # one gather: 3x faster than the masked path
        ids = np.full(points.shape, UNKNOWN, dtype=np.int32)
        known = points < len(self._lookup)
        ids[known] = self._lookup[points[known]]
        return ids

    def missing(self, points: np.ndarray) -> list[str]:
        """The distinct characters of ``points`` that this vocabulary does not cover, sorted."""
        ids = self.ids_of_codepoints(points)
        return [chr(int(p)) for p in np.unique(points[ids == UNKNOWN])]

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Ids of ``text``; ``unknown`` is "error" (raise, naming the characters) or "skip"."""
        points = codepoints(text)
        ids = self.ids_of_codepoints(points)
        if (ids == UNKNOWN).any():
            if unknown == "skip":
                ids = ids[ids != UNKNOWN]
            else:
                missing = self.missing(points)
                raise VocabError(
                    f"{len(missing)} character(s) not in the model's vocabulary: "
                    f"{describe_chars(missing)}"
                )
        return ids.astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def extended(self, new_chars: Iterable[str]) -> "Vocab":
        """This vocabulary with ``new_chars`` appended: existing ids keep their meaning."""
        known = set(self.chars)
        extra = sorted(set(new_chars) - known)
        return Vocab(self.chars + tuple(extra))

    # -- Hugging Face tokenizers interop -------------------------------------------------

    def to_tokenizer(self):
        """A ``tokenizers.Tokenizer`` with the same ids, loadable by ``PreTrainedTokenizerFast``.

        Characters the vocabulary lacks encode to ``UNK_TOKEN``, the id after the last
        character (``len(self)``), which the model has no row for: the character ids stay
        exactly the model's, and the tokenizer has one token more than the model.
        """
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        table = {c: i for i, c in enumerate(self.chars)}
        table[UNK_TOKEN] = len(self.chars)
        # Without an unknown token WordLevel raises on any unseen character. UNK_TOKEN is not
        # registered as an added token, which would turn the text "[UNK]" into it instead of
        # its five characters.
        tokenizer = Tokenizer(models.WordLevel(table, unk_token=UNK_TOKEN))
        # One token per code point; Fuse glues them back without inserting spaces.
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
        return tokenizer

    def save_tokenizer_json(self, path: Path) -> None:
        write_tokenizer_json(path, self.to_tokenizer().to_str(pretty=True))

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> "Vocab":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            table = dict(data["model"]["vocab"])
            unk = data["model"].get("unk_token")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VocabError(f"{path}: not a charrnn tokenizer.json ({exc})") from None
        # The unknown token is the tokenizer's, not a character of the model: files written
        # before it existed have none, and either way the characters are ids 0..V-1.
        if unk is not None and table.get(unk) == len(table) - 1:
            del table[unk]
        by_id = sorted(table.items(), key=lambda item: item[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise VocabError(f"{path}: token ids are not 0..{len(by_id) - 1}")
        return cls(tuple(c for c, _ in by_id))
