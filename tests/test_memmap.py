"""Encoded corpora are cached once and memory-mapped, never loaded as int64 or Python objects."""

import os

import numpy as np
import pytest

from charrnn.data import cache
from charrnn.data.batches import StreamBatches
from charrnn.data.corpus import load_corpus, resolve_sources
from charrnn.errors import VocabError
from charrnn.data.vocab import Vocab

from tests.conftest import small_text


def entries(kind):
    directory = cache.cache_dir()
    return sorted(directory.glob(f"{kind}-*.npy")) if directory.exists() else []


def test_corpus_ids_are_memory_mapped_narrow_and_cached(text_file):
    corpus = load_corpus(resolve_sources([str(text_file)]))
    assert isinstance(corpus.train, np.memmap) and corpus.train.dtype == np.uint8  # ids, not code points (東 is one id)
    assert not corpus.train.flags.writeable
    text = text_file.read_text(encoding="utf-8")
    assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.val]).tolist()) == text
    assert len(entries("ids")) == 1 and len(entries("codepoints")) == 1
    again = load_corpus(resolve_sources([str(text_file)]))  # read from the cache
    assert np.array_equal(again.train, corpus.train) and len(entries("ids")) == 1


def test_editing_the_file_makes_a_new_entry(text_file):
    first = load_corpus(resolve_sources([str(text_file)]), val_frac=0)
    text_file.write_text(small_text(3) + "zz", encoding="utf-8")
    os.utime(text_file, ns=(1, 1))
    second = load_corpus(resolve_sources([str(text_file)]), val_frac=0)
    assert len(second.train) != len(first.train)
    assert second.vocab.decode(second.train.tolist()).endswith("zz")
    assert len(entries("ids")) == 2


def test_cache_off_gives_the_same_ids_in_memory(text_file, monkeypatch):
    cached = load_corpus(resolve_sources([str(text_file)]))
    monkeypatch.setenv("CHARRNN_CACHE", "off")
    plain = load_corpus(resolve_sources([str(text_file)]))
    assert not isinstance(plain.train, np.memmap)
    assert np.array_equal(plain.train, cached.train) and np.array_equal(plain.val, cached.val)


def test_an_encoding_error_leaves_no_entry(text_file):
    with pytest.raises(VocabError):
        load_corpus(resolve_sources([str(text_file)]), vocab=Vocab.from_text("abc"))
    assert entries("ids") == []
    assert not any(p.name.endswith(".tmp") for p in cache.cache_dir().iterdir())


def test_unwritable_cache_falls_back_to_memory(text_file, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    monkeypatch.setenv("CHARRNN_CACHE", str(blocker / "cache"))
    corpus = load_corpus(resolve_sources([str(text_file)]))
    assert len(corpus.train) > 0 and not isinstance(corpus.train, np.memmap)


def test_batches_read_windows_through_views_of_the_map(text_file):
    corpus = load_corpus(resolve_sources([str(text_file)]), val_frac=0)
    batches = StreamBatches(corpus.train, batch_size=4, seq_len=16)
    # The rows are views of the memory map, not copies of the corpus.
    assert np.shares_memory(batches._inputs, corpus.train)
    x, y, _ = batches.next_window()
    assert x.shape == (4, 16) and (x[:, 1:] == y[:, :-1]).all()


def test_streamed_npy_writer_round_trips(tmp_path):
    chunks = [np.arange(10, dtype=np.uint8), np.arange(5, dtype=np.uint8)]
    length = cache.write_npy_stream(tmp_path / "a.npy", np.uint8, iter(chunks))
    loaded = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert length == 15 and loaded.tolist() == list(range(10)) + list(range(5))
