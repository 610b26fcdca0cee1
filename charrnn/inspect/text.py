"""The text an inspection reads: a file (or the run's own training text), cut to a length,
encoded with the model's vocabulary, and kept as the pieces of text each token stands for so
that activations can be drawn over the characters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data.corpus import read_head, resolve_sources
from charrnn.data.vocab_kinds import piece_decoder
from charrnn.errors import ConfigError, CorpusError, VocabError
from charrnn.memory import largest_fitting, require_memory
from charrnn.text import shown


@dataclass(frozen=True)
class InspectedText:
    source: str  # where it came from, for messages and titles (printable: see charrnn.text.shown)
    ids: np.ndarray  # int64 token ids
    pieces: tuple[str, ...]  # the text of each token, in order; "".join(pieces) is the text

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def __len__(self) -> int:
        return len(self.ids)


# Bytes per character while a text is read and encoded, at the peak: the text as a str (up
# to 4 per character), its UTF-32 form (4), the ids as looked up (4) and as int64 (8), and the
# tuple of pieces (8; a character vocabulary's pieces are its own strings, shared).
TEXT_BYTES_PER_CHAR = 32
# A byte or BPE vocabulary decodes every token into a string of its own.
TOKEN_PIECE_BYTES = 64


def text_bytes_per_char(vocab) -> int:
    return TEXT_BYTES_PER_CHAR + (0 if getattr(vocab, "kind", "chars") == "chars" else TOKEN_PIECE_BYTES)


def held_bytes_per_char(vocab) -> int:
    """What an ``InspectedText`` keeps per token once read: its id and its piece."""
    return 16 + (0 if getattr(vocab, "kind", "chars") == "chars" else TOKEN_PIECE_BYTES)


def read_text(
    path: Path | None,
    saved,
    vocab,
    chars: int,
    encoding: str = "utf-8",
    at_least: int = 1,
    *,
    option: str | None = None,
    keeps_per_char: int = 0,
) -> InspectedText:
    """The first ``chars`` characters of ``path`` (or, with no path, of the run's first training
    file), encoded with ``vocab``. ``path`` is resolved and read as ``train`` and ``eval`` read
    their text (``charrnn.data.corpus``), so a missing, empty, binary or undecodable file, a
    directory or a FIFO gets the same answer from every command. Characters the model never
    saw, an empty text and a text shorter than ``at_least`` tokens are refused with a message
    saying what to do.

    Before anything is read, the memory of the text and of what the caller will keep per
    character (``keeps_per_char``: ``replay_bytes_per_char`` for ``replay_text``,
    ``gradient_bytes_per_step`` for ``gradient_flow``) is checked for as many characters as
    the files can hold, and refused naming the largest ``option`` (the caller's option for
    ``chars``) that fits."""
    if chars < 1:
        raise ConfigError(f"{option or '--chars'} must be at least 1")
    spec = Path(path) if path is not None else _training_file(saved)
    files = resolve_sources([str(spec)], encoding=encoding).train
    _check_memory(files, vocab, chars, option, keeps_per_char)
    text = read_head(files, chars, encoding)
    source = shown(files[0] if len(files) == 1 else spec)
    if not text:
        raise CorpusError(f"{source}: the text is empty; give a file with some text in it")
    try:
        ids = np.asarray(vocab.encode(text), dtype=np.int64)
    except VocabError as exc:
        raise VocabError(
            f"{source}: {exc} (the model can only read characters it was trained on; "
            "remove them or choose another text)"
        ) from None
    if len(ids) < at_least:
        raise CorpusError(f"{source}: {len(ids)} character(s); this needs at least {at_least}")
    decode = piece_decoder(vocab)
    return InspectedText(source, ids, tuple(decode(int(i)) for i in ids))


def _check_memory(files, vocab, chars: int, option: str | None, keeps_per_char: int) -> None:
    try:
        # A character takes at least one byte: the files' size caps what can be read.
        size = sum(Path(f).stat().st_size for f in files)
        count = min(chars, size) if all(Path(f).is_file() for f in files) else chars
    except OSError:
        count = chars
    per_char = text_bytes_per_char(vocab) + keeps_per_char
    fit = largest_fitting(per_char)
    if not fit:
        advice = "free some memory or use a smaller model"
    elif option:
        advice = f"at most {option} {fit:,} fits"
    else:
        # Without the caller's option, named for both commands that read text here.
        advice = f"at most {fit:,} characters fit (lower --chars of inspect, --steps of gradients)"
    require_memory(count * per_char, f"reading {count:,} characters ({per_char:,} bytes per character)", advice)


def _training_file(saved) -> Path:
    corpus = getattr(saved, "corpus", None)
    files = [] if corpus is None else list(corpus.train_files)
    for name in files:
        if Path(name).is_file():
            return Path(name)
    named = f" ({shown(files[0])} is not here)" if files else ""
    raise ConfigError(f"give the text to read with --text FILE: the run's training text is unknown{named}")
