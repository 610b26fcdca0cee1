"""Reading training text: files, directories and named corpora, decoded and encoded to ids.

Files are decoded incrementally in large chunks so that a bad byte can be reported with its
offset and a large corpus never exists as one Python string. Two passes: the first collects
the distinct characters (the vocabulary), the second encodes with a numpy lookup table.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import numpy as np

from charrnn.data import cache
from charrnn.data.catalog import resolve_corpus_name
from charrnn.errors import ConfigError, CorpusError, VocabError
from charrnn.data.vocab import Vocab, codepoints, describe_chars
from charrnn.outputs import is_checkpoint, is_run_directory
from charrnn.text import require_valid, shown

# 4 MB of text: the decoded chunk and its arrays take ~13x that transiently, so encoding a
# corpus of any size stays under ~60 MB beyond the ids themselves.
CHUNK_BYTES = 1 << 22
BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Corpus:
    vocab: Vocab
    train: np.ndarray
    val: np.ndarray | None
    train_files: tuple[Path, ...]
    val_files: tuple[Path, ...]

    @property
    def num_chars(self) -> int:
        return len(self.train) + (0 if self.val is None else len(self.val))


@dataclass(frozen=True)
class Sources:
    """Files resolved from what the user typed: paths, directories, or corpus names."""

    train: tuple[Path, ...]
    val: tuple[Path, ...] = ()
    # One line each about what a directory held that is not read as text (a run directory),
    # for the caller to show: a skipped run should not pass unnoticed.
    notices: tuple[str, ...] = ()


# Byte-order marks that mean "this is UTF-16 or UTF-32 text", for a file read as UTF-8.
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def wide_encoding(encoding: str) -> bool:
    """Whether text in ``encoding`` holds NUL bytes (UTF-16, UTF-32): there a NUL byte is no
    sign of a binary file, a decoded NUL character is. An unknown encoding is a ConfigError."""
    require_valid(encoding, "--encoding")
    try:
        return b"\0" in "a".encode(encoding)
    except LookupError:  # no such codec, or one that is not a text encoding (rot13, base64)
        raise ConfigError(f"--encoding {encoding}: unknown text encoding; name one such as utf-8, latin-1 or utf-16") from None
    except UnicodeError:
        return False


def looks_binary(path: Path, encoding: str = "utf-8") -> bool:
    """NUL in the first few KiB: a NUL byte in an 8-bit encoding; with UTF-16 or UTF-32, a
    NUL character or bytes that do not decode."""
    with open(path, "rb") as handle:
        head = handle.read(BINARY_SNIFF_BYTES)
    if not wide_encoding(encoding):
        return b"\0" in head
    try:
        return "\0" in codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeError:
        return True


def _binary_message(path: Path, head: bytes, at: int, encoding: str) -> str:
    """Why a file with a NUL byte is refused; UTF-16/32 text read as 8-bit says which option."""
    for bom, family in _WIDE_BOMS:
        if head.startswith(bom):
            return (
                f"{shown(path)}: looks like {family.upper()} text (it starts with a {family.upper()} "
                f"byte-order mark), not {encoding}; pass --encoding {family}"
            )
    return f"{shown(path)}: looks like a binary file (it contains a NUL byte at byte {at}), not text"


def _expand_directory(directory: Path, encoding: str, notices: list[str]) -> list[Path]:
    """The text files under ``directory``, hidden ones left out. A charrnn run directory is
    not walked, at any depth (``--out`` inside the text's directory, or a checkpoints/ tree
    there): its metrics, configuration and samples would join the next run's text and change
    its vocabulary. Each one left out is a line in ``notices``."""
    found = []
    for root, dirs, names in os.walk(directory):
        here = Path(root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not _skipped_run(here / d, notices)]
        found.extend(here / name for name in names if not name.startswith("."))
    files = sorted(p for p in found if p.is_file())
    text_files = [
        p for p in files if p.stat().st_size > 0 and not is_checkpoint(p) and not looks_binary(p, encoding)
    ]
    if not text_files:
        raise CorpusError(f"{shown(directory)}: directory holds no non-empty text files")
    return text_files


def _skipped_run(path: Path, notices: list[str]) -> bool:
    if not is_run_directory(path):
        return False
    notices.append(f"{shown(path)} is a charrnn run directory, not text: left out of the training text")
    return True


def _check_file(path: Path, encoding: str = "utf-8") -> Path:
    if not path.is_file():
        # Reading a FIFO, socket or device would block or never end; text lives in regular files.
        raise CorpusError(f"{shown(path)}: not a regular file (a pipe, socket or device), so not text to read")
    if not os.access(path, os.R_OK):
        raise CorpusError(f"{shown(path)}: permission denied")
    if path.stat().st_size == 0:
        raise CorpusError(f"{shown(path)}: file is empty")
    if is_checkpoint(path):
        raise CorpusError(f"{shown(path)}: is a charrnn checkpoint, not text (charrnn train --resume continues its run)")
    if not wide_encoding(encoding):
        # Answered before any other file is read; a NUL further in is found while reading.
        with open(path, "rb") as handle:
            head = handle.read(BINARY_SNIFF_BYTES)
        if b"\0" in head:
            raise CorpusError(_binary_message(path, head, head.index(b"\0"), encoding))
    return path


def resolve_sources(specs: Sequence[str], val_specs: Sequence[str] = (), encoding: str = "utf-8") -> Sources:
    """Turn paths and corpus names into concrete files; a named corpus may bring its own split.
    ``encoding`` decides what a binary file looks like (NUL bytes are text in UTF-16)."""
    if not specs:
        raise CorpusError("no training text given: name a file, a directory, or a corpus")
    wide_encoding(encoding)  # an unknown encoding is answered before any file is looked at
    train: list[Path] = []
    val: list[Path] = []
    notices: list[str] = []
    for spec in [*specs, *val_specs]:
        if not str(spec).strip():
            # Path("") is the current directory: an empty argument would train on all of it.
            raise CorpusError("an empty path was given; name a text file, directory or corpus")
    for spec in specs:
        local = _local_files(spec, encoding, notices)
        if local is not None:
            train.extend(local)
        else:
            name, _, split = spec.partition(":")
            named = resolve_corpus_name(name)
            if named is None:
                raise CorpusError(
                    f"{shown(spec)}: no such file, directory or corpus "
                    "(`charrnn corpus list` shows the corpora it knows)"
                )
            if split:
                # "ptb-char:test": one split of a named corpus, e.g. to score a model on it.
                chosen = getattr(named, split, None) if split in ("train", "valid", "test") else None
                if chosen is None:
                    raise CorpusError(f"{shown(spec)}: corpus {shown(name)!r} has no {split!r} split")
                train.append(chosen)
                continue
            train.append(named.train)
            if named.valid is not None:
                val.append(named.valid)
    if val_specs:
        val = []
        for spec in val_specs:
            local = _local_files(spec, encoding, notices)
            if local is None:
                raise CorpusError(f"{shown(spec)}: no such validation file")
            val.extend(local)
    return Sources(tuple(train), tuple(val), tuple(dict.fromkeys(notices)))


def _local_files(spec: str, encoding: str, notices: list[str]) -> list[Path] | None:
    """The text files ``spec`` names on disk (a directory's, or the file itself), or None
    where nothing is there (it may be a corpus name)."""
    path = Path(spec)
    if path.is_dir():
        if is_run_directory(path):
            raise CorpusError(
                f"{shown(spec)}: is a charrnn run directory, not text; name the text it was trained on "
                "(charrnn train --resume continues the run)"
            )
        return _expand_directory(path, encoding, notices)
    if path.exists():
        return [_check_file(path, encoding)]
    if path.is_symlink():
        raise CorpusError(f"{shown(spec)}: broken symbolic link (its target does not exist)")
    return None


def read_head(files: Sequence[Path], chars: int, encoding: str = "utf-8") -> str:
    """The first ``chars`` characters of ``files`` read as one text, through the reader that
    training uses (``iter_text_chunks``): a byte that does not decode or a NUL in what is
    read is refused with the same message. Reads in pieces of about what ``chars`` needs, so
    that a small window of a large file costs little."""
    piece = min(CHUNK_BYTES, max(BINARY_SNIFF_BYTES, 4 * chars))
    parts: list[str] = []
    wanted = chars
    for path in files:
        for text in iter_text_chunks(path, encoding, piece):
            parts.append(text[:wanted])
            wanted -= len(parts[-1])
            if wanted == 0:
                return "".join(parts)
    return "".join(parts)


def iter_text_chunks(path: Path, encoding: str = "utf-8", chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Yield the file's text in chunks, naming the byte offset of any undecodable byte or NUL.

    A byte-order mark at the start of the file is dropped (utf-8-sig's reading, for every
    encoding): it marks the encoding, it is not a character of the text. NUL anywhere is
    refused, as the README promises for binary files: in 8-bit encodings found in the raw
    bytes (one memchr per chunk), in UTF-16/32 in the decoded code points."""
    wide = wide_encoding(encoding)
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    consumed = 0
    at_start = True
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(chunk_bytes)
                if not wide and (nul := chunk.find(b"\0")) >= 0:
                    raise CorpusError(_binary_message(path, chunk if consumed == 0 else b"", consumed + nul, encoding))
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(chunk, final=not chunk)
                except UnicodeError as exc:
                    # A UnicodeDecodeError names its position; UTF-16/32 without a byte-order
                    # mark is a plain UnicodeError at the start of the file.
                    start = exc.start if isinstance(exc, UnicodeDecodeError) else 0
                    reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
                    raise CorpusError(
                        f"{shown(path)}: not valid {encoding} at byte {consumed - pending + start} "
                        f"({reason}); pass --encoding if the file uses another one"
                    ) from None
                if text and wide and "\0" in text:
                    # Bytes this text came from end where the decoder's pending bytes begin.
                    end = consumed + len(chunk) - len(decoder.getstate()[0])
                    before = text[: text.index("\0")]
                    offset = end - len(text.encode(encoding)) + len(before.encode(encoding))
                    raise CorpusError(
                        f"{shown(path)}: looks like a binary file (it contains a NUL character at byte "
                        f"{offset}), not text"
                    )
                if text and at_start:
                    at_start = False
                    if text[0] == "\ufeff":
                        text = text[1:]
                if text:
                    yield text
                if not chunk:
                    return
                consumed += len(chunk)
    except OSError as exc:
        raise CorpusError(f"{shown(path)}: cannot read ({exc.strerror})") from None


def iter_codepoint_chunks(path: Path, encoding: str = "utf-8") -> Iterator[np.ndarray]:
    """``iter_text_chunks`` as code points."""
    for text in iter_text_chunks(path, encoding):
        yield codepoints(text)


def collect_codepoints(files: Sequence[Path], encoding: str) -> np.ndarray:
    """The distinct code points of all ``files`` (cached, see ``charrnn.data.cache``)."""
    key = cache.cache_key(kind="codepoints", **cache.files_material(files, encoding))
    return np.asarray(
        cache.cached_array("codepoints", key, np.uint32, lambda: iter([_distinct(files, encoding)]))
    )


def _distinct(files: Sequence[Path], encoding: str) -> np.ndarray:
    # A presence table indexed by code point is O(n); np.unique sorts every chunk.
    present = np.zeros(0x110000, dtype=bool)
    for path in files:
        for chunk in iter_codepoint_chunks(path, encoding):
            present[chunk] = True
    return np.flatnonzero(present).astype(np.uint32)


# What to do about characters outside the vocabulary, said where training text has them.
TRAINING_ADVICE = "train a new model, or pass --extend-vocab to fine-tune with them"


def encode_files(files: Sequence[Path], vocab: Vocab, encoding: str, advice: str = TRAINING_ADVICE) -> np.ndarray:
    """All ``files`` concatenated and encoded with ``vocab``; unknown characters are an error
    whose message ends with ``advice`` (what the command at hand can do about them).

    The result is memory-mapped from the encoded-corpus cache (``charrnn.data.cache``) when the
    cache directory is writable, so that its size costs page cache, not process memory."""
    key = cache.cache_key(
        kind="ids", vocab=list(vocab.chars), **cache.files_material(files, encoding)
    )
    return cache.cached_array("ids", key, vocab.id_dtype, lambda: _encoded_chunks(files, vocab, encoding, advice))


def encode_files_skipping_unknown(files: Sequence[Path], vocab: Vocab, encoding: str) -> tuple[np.ndarray, int]:
    """``encode_files`` with the characters outside ``vocab`` left out, and how many were.
    Not cached: the count belongs to the result and is made while reading."""
    parts, skipped = [], 0
    for path in files:
        for chunk in iter_codepoint_chunks(path, encoding):
            ids = vocab.ids_of_codepoints(chunk)
            known = ids >= 0
            skipped += int(len(ids) - np.count_nonzero(known))
            parts.append(ids[known].astype(vocab.id_dtype))
    ids = np.concatenate(parts) if parts else np.zeros(0, vocab.id_dtype)
    return ids, skipped


def _encoded_chunks(files: Sequence[Path], vocab: Vocab, encoding: str, advice: str = TRAINING_ADVICE) -> Iterator[np.ndarray]:
    for path in files:
        for chunk in iter_codepoint_chunks(path, encoding):
            ids = vocab.ids_of_codepoints(chunk)
            if (ids < 0).any():
                raise VocabError(
                    f"{shown(path)}: characters not in the checkpoint's vocabulary: "
                    f"{describe_chars(vocab.missing(chunk))} ({advice})"
                )
            yield ids.astype(vocab.id_dtype)


Held = TypeVar("Held", np.ndarray, str)

# A validation text needs an input and the next item to predict from it.
MIN_VAL_ITEMS = 2


def hold_out(items: Held, val_frac: float) -> tuple[Held, Held | None]:
    """(training part, validation part or None): the last ``val_frac`` of ``items`` (ids or
    characters) held out, nanoGPT's split, so results compare. None when ``val_frac`` is 0, or
    when the held-out tail would be shorter than MIN_VAL_ITEMS (the training part still ends
    at the cut)."""
    if val_frac <= 0:
        return items, None
    cut = int(len(items) * (1 - val_frac))
    held = items[cut:]
    return items[:cut], held if len(held) >= MIN_VAL_ITEMS else None


def check_validation_size(count: int) -> None:
    """Validation files that hold less than one prediction (two tokens) are a mistake to say,
    not a reason to train silently without validation."""
    if count < MIN_VAL_ITEMS:
        raise CorpusError(
            f"the validation text (--val-file) holds {count} character{'s' if count != 1 else ''}; "
            "it needs at least 2"
        )


def load_corpus(
    sources: Sources,
    encoding: str = "utf-8",
    val_frac: float = 0.1,
    vocab: Vocab | None = None,
    extend_vocab: bool = False,
) -> Corpus:
    """Read, build or check the vocabulary, encode, and split into train and validation ids.

    With a ``vocab`` (resuming or fine-tuning) the text must fit it, unless ``extend_vocab``
    appends the new characters (existing ids keep their meaning).
    """
    all_files = list(sources.train) + list(sources.val)
    if vocab is None or extend_vocab:
        points = collect_codepoints(all_files, encoding)
        if len(points) == 0:
            raise CorpusError("the training text is empty")
        if vocab is None:
            vocab = Vocab.from_codepoints(points)
        else:
            vocab = vocab.extended(chr(int(p)) for p in points)
    ids = encode_files(sources.train, vocab, encoding)
    if len(ids) == 0:
        raise CorpusError("the training text is empty")
    if sources.val:
        train, val = ids, encode_files(sources.val, vocab, encoding)
        check_validation_size(len(val))
    else:
        train, val = hold_out(ids, val_frac)
    return Corpus(vocab, train, val, tuple(sources.train), tuple(sources.val))
