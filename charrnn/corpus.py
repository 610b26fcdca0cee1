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
from typing import Iterator, Sequence

import numpy as np

from charrnn import cache
from charrnn.catalog import resolve_corpus_name
from charrnn.errors import CorpusError, VocabError
from charrnn.vocab import Vocab, codepoints, describe_chars

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


def looks_binary(path: Path) -> bool:
    with open(path, "rb") as handle:
        return b"\0" in handle.read(BINARY_SNIFF_BYTES)


def _expand_directory(directory: Path) -> list[Path]:
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    text_files = [p for p in files if p.stat().st_size > 0 and not looks_binary(p)]
    if not text_files:
        raise CorpusError(f"{directory}: directory holds no non-empty text files")
    return text_files


def _check_file(path: Path) -> Path:
    if not path.is_file():
        # Reading a FIFO, socket or device would block or never end; text lives in regular files.
        raise CorpusError(f"{path}: not a regular file (a pipe, socket or device), so not text to train on")
    if not os.access(path, os.R_OK):
        raise CorpusError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise CorpusError(f"{path}: file is empty")
    if looks_binary(path):
        raise CorpusError(f"{path}: looks like a binary file (it contains NUL bytes), not text")
    return path


def resolve_sources(specs: Sequence[str], val_specs: Sequence[str] = ()) -> Sources:
    """Turn paths and corpus names into concrete files; a named corpus may bring its own split."""
    if not specs:
        raise CorpusError("no training text given: name a file, a directory, or a corpus")
    train: list[Path] = []
    val: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            train.extend(_expand_directory(path))
        elif path.exists():
            train.append(_check_file(path))
        elif path.is_symlink():
            raise CorpusError(f"{spec}: broken symbolic link (its target does not exist)")
        else:
            name, _, split = spec.partition(":")
            named = resolve_corpus_name(name)
            if named is None:
                raise CorpusError(
                    f"{spec}: no such file, directory or corpus "
                    "(`charrnn corpus list` shows the corpora it knows)"
                )
            if split:
                # "ptb-char:test": one split of a named corpus, e.g. to score a model on it.
                chosen = getattr(named, split, None) if split in ("train", "valid", "test") else None
                if chosen is None:
                    raise CorpusError(f"{spec}: corpus {name!r} has no {split!r} split")
                train.append(chosen)
                continue
            train.append(named.train)
            if named.valid is not None:
                val.append(named.valid)
    if val_specs:
        val = []
        for spec in val_specs:
            path = Path(spec)
            if path.is_dir():
                val.extend(_expand_directory(path))
            elif path.exists():
                val.append(_check_file(path))
            elif path.is_symlink():
                raise CorpusError(f"{spec}: broken symbolic link (its target does not exist)")
            else:
                raise CorpusError(f"{spec}: no such validation file")
    return Sources(tuple(train), tuple(val))


def iter_codepoint_chunks(path: Path, encoding: str = "utf-8") -> Iterator[np.ndarray]:
    """Yield the file's code points in chunks, naming the byte offset of any undecodable byte."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError:
        raise CorpusError(f"unknown text encoding {encoding!r}") from None
    consumed = 0
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(CHUNK_BYTES)
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:
                    offset = consumed - pending + exc.start
                    raise CorpusError(
                        f"{path}: not valid {encoding} at byte {offset} "
                        f"({exc.reason}); pass --encoding if the file uses another one"
                    ) from None
                if text:
                    yield codepoints(text)
                if not chunk:
                    return
                consumed += len(chunk)
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None


def collect_codepoints(files: Sequence[Path], encoding: str) -> np.ndarray:
    """The distinct code points of all ``files`` (cached, see ``charrnn.cache``)."""
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


def encode_files(files: Sequence[Path], vocab: Vocab, encoding: str) -> np.ndarray:
    """All ``files`` concatenated and encoded with ``vocab``; unknown characters are an error.

    The result is memory-mapped from the encoded-corpus cache (``charrnn.cache``) when the
    cache directory is writable, so that its size costs page cache, not process memory."""
    key = cache.cache_key(
        kind="ids", vocab=list(vocab.chars), **cache.files_material(files, encoding)
    )
    return cache.cached_array("ids", key, vocab.id_dtype, lambda: _encoded_chunks(files, vocab, encoding))


def _encoded_chunks(files: Sequence[Path], vocab: Vocab, encoding: str) -> Iterator[np.ndarray]:
    for path in files:
        for chunk in iter_codepoint_chunks(path, encoding):
            ids = vocab.ids_of_codepoints(chunk)
            if (ids < 0).any():
                raise VocabError(
                    f"{path}: characters not in the checkpoint's vocabulary: "
                    f"{describe_chars(vocab.missing(chunk))} "
                    "(train a new model, or pass --extend-vocab to fine-tune with them)"
                )
            yield ids.astype(vocab.id_dtype)


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
    elif val_frac > 0:
        cut = int(len(ids) * (1 - val_frac))  # nanoGPT's split, so results compare
        train, val = ids[:cut], ids[cut:]
        if len(val) < 2:
            val = None
    else:
        train, val = ids, None
    return Corpus(vocab, train, val, tuple(sources.train), tuple(sources.val))
