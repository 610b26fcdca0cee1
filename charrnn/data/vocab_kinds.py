"""The vocabulary kinds, and the one dispatch on them: characters (``Vocab``), UTF-8 bytes and
byte-level BPE (both a ``ByteLevelVocab``). ``vocab_kind(name)`` gives what differs between
them: restoring one from a saved run, storing it, loading a corpus with it, encoding text to
score. Every caller goes through it; nothing else asks which kind a vocabulary is.

``--tokenizer bytes`` models the UTF-8 bytes of the text (256 ids, id = byte value): any input
at all, no unknown characters. ``--tokenizer bpe --vocab-size N`` trains a byte-level BPE with
Hugging Face ``tokenizers`` on the training text (the 256 byte symbols first, then N - 256
merges), so it also never meets an unknown character, and the same recurrent model learns
over its tokens. Both are Hugging Face ``tokenizer.json`` tokenizers, stored in the checkpoint
as that JSON string.

A token is a run of bytes that need not end on a character boundary, so text is decoded
through an incremental UTF-8 decoder: streamed samples never show half a character.
Validation is still reported in bits per *character*, using the number of characters the
evaluated text has (``tokens_per_char``), so a BPE run compares with a character run.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from charrnn.errors import ConfigError, CorpusError, VocabError
from charrnn.options import TokenizerKind
from charrnn.saved import SavedVocab

KINDS = tuple(k.value for k in TokenizerKind)
BYTES = 256
MAX_TOKENS = 2**32
ENCODE_BATCH_LINES = 4096


def encode_by_lines(tokenizer, text: str) -> np.ndarray:
    """``text``'s ids from a Hugging Face tokenizer, a batch of lines at a time: its encode of
    one long string holds every piece of it as a Python object at once."""
    lines = text.splitlines(keepends=True)
    ids: list[int] = []
    for start in range(0, len(lines), ENCODE_BATCH_LINES):
        for encoding in tokenizer.encode_batch(lines[start : start + ENCODE_BATCH_LINES], add_special_tokens=False):
            ids.extend(encoding.ids)
    return np.asarray(ids, dtype=np.int64)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, the alphabet of ``ByteLevel`` tokenizers."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(BYTES):
        if b not in printable:
            printable.append(b)
            chars.append(BYTES + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


_UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


def _byte_level(tokenizer):
    from tokenizers import decoders, pre_tokenizers

    # No prefix space and no regex split: text round-trips exactly, whitespace included.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


@dataclass(frozen=True)
class ByteLevelVocab:
    """Tokens that are runs of bytes: the 256 UTF-8 byte values ("bytes"), or those and the
    merges of a byte-level BPE ("bpe"). Either is a Hugging Face tokenizer.json."""

    kind: str  # "bytes" or "bpe"
    tokenizer_json: str
    token_bytes: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    chars: tuple[str, ...] = field(init=False, repr=False, compare=False)  # readable tokens

    def __post_init__(self) -> None:
        if self.kind not in ("bytes", "bpe"):
            raise VocabError(f"unknown tokenizer kind {self.kind!r}")
        try:
            table = json.loads(self.tokenizer_json)["model"]["vocab"]
            by_id = sorted(table.items(), key=lambda item: item[1])
            pieces = tuple(bytes(_UNICODE_TO_BYTE[c] for c in token) for token, _ in by_id)
        except (ValueError, KeyError, TypeError) as exc:
            raise VocabError(f"not a byte-level tokenizer.json ({exc})") from None
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise VocabError("tokenizer.json ids are not 0..N-1")
        object.__setattr__(self, "token_bytes", pieces)
        # Readable forms: "\n" is found where sampling looks for a line start.
        object.__setattr__(self, "chars", tuple(p.decode("utf-8", errors="replace") for p in pieces))

    # -- construction --------------------------------------------------------------

    @classmethod
    def bytes_vocab(cls) -> "ByteLevelVocab":
        from tokenizers import Tokenizer, models

        alphabet = bytes_to_unicode()
        tokenizer = _byte_level(Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(BYTES)}, merges=[])))
        return cls("bytes", tokenizer.to_str())

    @classmethod
    def train_bpe(cls, lines: Iterable[str], vocab_size: int) -> "ByteLevelVocab":
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        if vocab_size < BYTES:
            raise ConfigError(f"--vocab-size must be at least {BYTES} (the byte alphabet) for --tokenizer bpe")
        if vocab_size > MAX_TOKENS:
            raise ConfigError(f"--vocab-size must be at most {MAX_TOKENS:,}: token ids are stored as 32-bit integers")
        tokenizer = _byte_level(Tokenizer(models.BPE()))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        tokenizer.train_from_iterator(lines, trainer)
        return cls("bpe", tokenizer.to_str())

    # -- the Vocab interface -------------------------------------------------------

    def __len__(self) -> int:
        return len(self.token_bytes)

    @property
    def id_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if len(self) <= 256 else np.uint16 if len(self) <= 1 << 16 else np.uint32)

    def to_tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.tokenizer_json)

    def save_tokenizer_json(self, path: Path) -> None:
        from charrnn.data.vocab import write_tokenizer_json

        write_tokenizer_json(path, self.tokenizer_json)

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Ids of ``text``; every text is covered (``unknown`` is accepted for the interface)."""
        if self.kind == "bytes":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        return encode_by_lines(self.to_tokenizer(), text)

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    def incremental_decoder(self) -> Callable[[int], str]:
        """id -> the text completed by it ("" while a character is still incomplete)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda token: decoder.decode(self.token_bytes[token])


def piece_decoder(vocab) -> Callable[[int], str]:
    """Per-sample streaming decoder for any vocabulary: characters map one id to one character."""
    make = getattr(vocab, "incremental_decoder", None)
    return make() if make is not None else vocab.chars.__getitem__


@dataclass(frozen=True)
class TokenText:
    ids: np.ndarray
    chars: int  # characters of the text the ids encode: for bits per character


def read_text(files: Iterable[Path], encoding: str) -> Iterator[str]:
    """Each file's text, read as the character corpus reads it (byte-order mark dropped, NUL
    and undecodable bytes refused with their offset)."""
    from charrnn.data.corpus import iter_text_chunks

    for path in files:
        yield "".join(iter_text_chunks(Path(path), encoding))


def encode_text(files: Iterable[Path], vocab: ByteLevelVocab, encoding: str) -> TokenText:
    texts = list(read_text(files, encoding))
    ids = [vocab.encode(t) for t in texts]
    return TokenText(np.concatenate(ids) if ids else np.zeros(0, np.int64), sum(len(t) for t in texts))


def build_vocab(kind: str, vocab_size: int | None, files: Iterable[Path], encoding: str) -> ByteLevelVocab:
    if kind == "bytes":
        if vocab_size not in (None, BYTES):
            raise ConfigError("--vocab-size does not apply to --tokenizer bytes (always 256)")
        return ByteLevelVocab.bytes_vocab()
    if vocab_size is None:
        raise ConfigError("--tokenizer bpe needs --vocab-size N (for example 1024)")
    lines = (line for text in read_text(files, encoding) for line in text.splitlines(keepends=True))
    return ByteLevelVocab.train_bpe(lines, vocab_size)


def split(vocab: ByteLevelVocab, text: TokenText, val: TokenText | None, val_frac: float):
    """(train ids, val ids or None, validation tokens per character), split like the character
    corpus: the validation files, or the last ``val_frac`` of the text (nanoGPT's split)."""
    from charrnn.data.corpus import hold_out

    if len(text.ids) == 0:
        raise CorpusError("the training text is empty")
    if val is not None:
        from charrnn.data.corpus import check_validation_size

        check_validation_size(len(val.ids))
        return text.ids, val.ids, len(val.ids) / max(val.chars, 1)
    train, held = hold_out(text.ids, val_frac)
    if held is None:
        return train, None, 1.0
    return train, held, len(held) / max(len(vocab.decode(held.tolist())), 1)


@dataclass(frozen=True)
class ScoredText:
    """Text encoded to be scored: its ids, and what turns a score per token into one per
    character."""

    ids: np.ndarray
    chars: int  # characters the ids encode
    tokens_per_char: float = 1.0
    skipped: int = 0  # characters outside the vocabulary left out


class VocabKind:
    """What differs between the vocabulary kinds."""

    name: str
    unit: str = "token"  # what one id stands for, in messages ("character" or "token")

    def restore(self, saved: SavedVocab):
        """The working vocabulary of a saved run."""
        raise NotImplementedError

    def stored(self, vocab) -> SavedVocab:
        """``vocab`` as a saved run holds it."""
        return SavedVocab(self.name, tuple(vocab.chars), getattr(vocab, "tokenizer_json", None))

    def load_corpus(self, sources, encoding: str, val_frac: float, saved: SavedVocab | None, vocab_size: int | None, extend_vocab: bool):
        """The ``Corpus`` to train on (with the saved run's vocabulary, or one built from the
        training text) and the validation text's tokens per character."""
        raise NotImplementedError

    def score_text(self, files, vocab, encoding: str, unknown: str, advice: str) -> ScoredText:
        """``files`` read as one stream and encoded to be scored; characters outside the
        vocabulary are an error ending with ``advice``, or with ``unknown`` "skip" left out."""
        raise NotImplementedError


class _Chars(VocabKind):
    name = "chars"
    unit = "character"

    def restore(self, saved: SavedVocab):
        from charrnn.data.vocab import Vocab

        return Vocab(tuple(saved.chars))

    def load_corpus(self, sources, encoding, val_frac, saved, vocab_size, extend_vocab):
        from charrnn.data.corpus import load_corpus

        vocab = None if saved is None else self.restore(saved)
        return load_corpus(sources, encoding, val_frac, vocab, extend_vocab), 1.0

    def score_text(self, files, vocab, encoding, unknown, advice):
        from charrnn.data.corpus import encode_files, encode_files_skipping_unknown

        if unknown == "skip":
            ids, skipped = encode_files_skipping_unknown(files, vocab, encoding)
            return ScoredText(ids, len(ids), skipped=skipped)
        ids = encode_files(files, vocab, encoding, advice)
        return ScoredText(ids, len(ids))


class _ByteLevel(VocabKind):
    """Bytes and BPE: every text is covered, so there are no unknown characters."""

    def __init__(self, name: str) -> None:
        self.name = name

    def restore(self, saved: SavedVocab):
        if saved.tokenizer_json is None:
            raise VocabError(f"the checkpoint's {saved.kind} vocabulary has no tokenizer.json")
        return ByteLevelVocab(saved.kind, saved.tokenizer_json)

    def load_corpus(self, sources, encoding, val_frac, saved, vocab_size, extend_vocab):
        from charrnn.data.corpus import Corpus

        if extend_vocab:
            raise ConfigError("--extend-vocab is for character vocabularies; byte and BPE tokenizers cover any text")
        if saved is not None:
            vocab = self.restore(saved)
        else:
            vocab = build_vocab(self.name, vocab_size, sources.train, encoding)
        text = encode_text(sources.train, vocab, encoding)
        val = encode_text(sources.val, vocab, encoding) if sources.val else None
        train_ids, val_ids, tokens_per_char = split(vocab, text, val, val_frac)
        corpus = Corpus(vocab, train_ids, val_ids, tuple(sources.train), tuple(sources.val))
        return corpus, tokens_per_char

    def score_text(self, files, vocab, encoding, unknown, advice):
        # Scored per token, reported per character, so models with any tokenizer compare.
        text = encode_text(files, vocab, encoding)
        return ScoredText(text.ids, text.chars, len(text.ids) / max(text.chars, 1))


class _Words(VocabKind):
    """Words, whitespace and punctuation (``charrnn.data.words``): the vocabulary is built on
    the training part of the text only, so the validation text meets unknown words as new
    text does, and its tokens per character are counted on its own characters."""

    name = "word"

    def restore(self, saved: SavedVocab):
        from charrnn.data.words import WordVocab

        if saved.tokenizer_json is None:
            raise VocabError("the checkpoint's word vocabulary has no tokenizer.json")
        return WordVocab(saved.tokenizer_json)

    def load_corpus(self, sources, encoding, val_frac, saved, vocab_size, extend_vocab):
        from charrnn.data.corpus import Corpus, check_validation_size, hold_out
        from charrnn.data.words import WordVocab

        if extend_vocab:
            raise ConfigError("--extend-vocab is for character vocabularies; a word vocabulary has [UNK] for new words")
        text = "".join(read_text(sources.train, encoding))
        if not text:
            raise CorpusError("the training text is empty")
        if sources.val:
            val_text = "".join(read_text(sources.val, encoding))
            check_validation_size(len(val_text))
        else:
            text, val_text = hold_out(text, val_frac)
        if saved is not None:
            vocab = self.restore(saved)
        elif vocab_size is None:
            raise ConfigError("--tokenizer word needs --vocab-size N (for example 5000): the most frequent words kept")
        else:
            vocab = WordVocab.train(text.splitlines(keepends=True), vocab_size)
        val_ids = None if not val_text else vocab.encode(val_text)
        corpus = Corpus(vocab, vocab.encode(text), val_ids, tuple(sources.train), tuple(sources.val))
        return corpus, (len(val_ids) / len(val_text) if val_text else 1.0)

    def score_text(self, files, vocab, encoding, unknown, advice):
        text = "".join(read_text(files, encoding))
        ids = vocab.encode(text)
        return ScoredText(ids, len(text), len(ids) / max(len(text), 1))


_KINDS: dict[str, VocabKind] = {"chars": _Chars(), "bytes": _ByteLevel("bytes"), "bpe": _ByteLevel("bpe"), "word": _Words()}


def vocab_kind(name: str) -> VocabKind:
    """The kind named ``name`` ("chars", "bytes" or "bpe")."""
    try:
        return _KINDS[name]
    except KeyError:
        raise VocabError(f"unknown vocabulary kind {name!r} (charrnn knows {', '.join(KINDS)})") from None


def restore_vocab(saved: SavedVocab):
    """The working vocabulary of a saved run, whatever its kind."""
    return vocab_kind(saved.kind).restore(saved)


def stored_vocab(vocab) -> SavedVocab:
    """A working vocabulary as a saved run holds it."""
    return vocab_kind(vocab.kind).stored(vocab)
