"""Words as tokens (`train --tokenizer word --vocab-size N`): a Hugging Face WordLevel
tokenizer whose pre-tokenizer cuts the text into runs of word characters, single whitespace
characters and single punctuation marks, so that every character of the text is in one token
and joining the tokens gives the text back exactly. The N - 1 most frequent tokens of the
training text are kept beside ``[UNK]`` (id 0), which stands for every other one.

Scores stay in bits per character (the characters of the text scored), so a word model
compares with a character model; an unknown word costs only its ``[UNK]`` token, so the
figure flatters a word model by what the unknown words would cost to spell out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from charrnn.errors import ConfigError, VocabError

UNKNOWN = "[UNK]"
# Word characters in runs, every other character alone: whitespace and punctuation are tokens
# of their own, so nothing of the text is lost between tokens.
PATTERN = r"\w+|\s|[^\w\s]"
MIN_WORDS = 2  # [UNK] and at least one token
MAX_WORDS = 2**20  # a softmax over more would not fit a CPU's patience


def _tokenizer(vocab: dict[str, int] | None = None):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN) if vocab else models.WordLevel(unk_token=UNKNOWN))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(PATTERN), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()  # the tokens joined as they are: the text back
    return tokenizer


@dataclass(frozen=True)
class WordVocab:
    """The word-level vocabulary, the Vocab interface of the other kinds."""

    tokenizer_json: str
    kind: str = "word"
    chars: tuple[str, ...] = field(init=False, repr=False, compare=False)  # each token's text

    def __post_init__(self) -> None:
        try:
            table = json.loads(self.tokenizer_json)["model"]["vocab"]
        except (ValueError, KeyError, TypeError) as exc:
            raise VocabError(f"not a word-level tokenizer.json ({exc})") from None
        by_id = sorted(table.items(), key=lambda item: item[1])
        if [i for _, i in by_id] != list(range(len(by_id))) or not by_id or by_id[0][0] != UNKNOWN:
            raise VocabError("tokenizer.json: ids are not 0..N-1 with [UNK] first")
        object.__setattr__(self, "chars", tuple(token for token, _ in by_id))

    @classmethod
    def train(cls, lines: Iterable[str], vocab_size: int) -> "WordVocab":
        from tokenizers import trainers

        if not MIN_WORDS <= vocab_size <= MAX_WORDS:
            raise ConfigError(f"--vocab-size for --tokenizer word must be from {MIN_WORDS} to {MAX_WORDS:,}")
        tokenizer = _tokenizer()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[UNKNOWN], show_progress=False)
        tokenizer.train_from_iterator(lines, trainer)
        return cls(tokenizer.to_str())

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def id_dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if len(self) <= 1 << 16 else np.uint32)

    def to_tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.tokenizer_json)

    def save_tokenizer_json(self, path: Path) -> None:
        from charrnn.data.vocab import write_tokenizer_json

        write_tokenizer_json(path, self.tokenizer_json)

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Ids of ``text``; a word outside the vocabulary is ``[UNK]`` (``unknown`` is accepted
        for the interface: every text is covered)."""
        from charrnn.data.vocab_kinds import encode_by_lines

        return encode_by_lines(self.to_tokenizer(), text)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def incremental_decoder(self) -> Callable[[int], str]:
        return self.chars.__getitem__
