"""The text an inspection reads: a file (or the run's own training text), cut to a length,
encoded with the model's vocabulary, and kept as the pieces of text each token stands for so
that activations can be drawn over the characters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data.vocab_kinds import piece_decoder
from charrnn.errors import ConfigError, CorpusError, VocabError


@dataclass(frozen=True)
class InspectedText:
    source: str  # where it came from, for messages and titles
    ids: np.ndarray  # int64 token ids
    pieces: tuple[str, ...]  # the text of each token, in order; "".join(pieces) is the text

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def __len__(self) -> int:
        return len(self.ids)


def read_text(path: Path | None, saved, vocab, chars: int, encoding: str = "utf-8", at_least: int = 1) -> InspectedText:
    """The first ``chars`` characters of ``path`` (or, with no path, of the run's first training
    file), encoded with ``vocab``. Characters the model never saw, an empty text and a text
    shorter than ``at_least`` tokens are refused with a message saying what to do."""
    if chars < 1:
        raise ConfigError("--chars must be at least 1")
    path = Path(path) if path is not None else _training_file(saved)
    try:
        with open(path, encoding=encoding, errors="strict", newline="") as handle:
            text = handle.read(chars)
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory; name a text file") from None
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not {encoding} text (byte {exc.start}); pass --encoding") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None
    text = text.removeprefix("\ufeff")
    if not text:
        raise CorpusError(f"{path}: the text is empty; give a file with some text in it")
    try:
        ids = np.asarray(vocab.encode(text), dtype=np.int64)
    except VocabError as exc:
        raise VocabError(
            f"{path}: {exc} (the model can only read characters it was trained on; "
            "remove them or choose another text)"
        ) from None
    if len(ids) < at_least:
        raise CorpusError(f"{path}: {len(ids)} character(s); this needs at least {at_least}")
    decode = piece_decoder(vocab)
    return InspectedText(str(path), ids, tuple(decode(int(i)) for i in ids))


def _training_file(saved) -> Path:
    corpus = getattr(saved, "corpus", None)
    files = [] if corpus is None else list(corpus.train_files)
    for name in files:
        if Path(name).is_file():
            return Path(name)
    named = f" ({files[0]} is not here)" if files else ""
    raise ConfigError(f"give the text to read with --text FILE: the run's training text is unknown{named}")
