import hashlib
import io
import tarfile

import numpy as np
import pytest

from charrnn.data import catalog
from charrnn.data.corpus import Sources, hold_out, load_corpus, resolve_sources
from charrnn.errors import CorpusError, DownloadError, VocabError
from charrnn.data.vocab import Vocab


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello world\n" * 3 + b"\xff\xfe oops")
    with pytest.raises(CorpusError, match=r"bad.txt: not valid utf-8 at byte 36"):
        load_corpus(resolve_sources([str(path)]))


def test_invalid_byte_offset_across_chunk_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr("charrnn.data.corpus.CHUNK_BYTES", 6)  # splits the two bytes of é
    path = tmp_path / "bad.txt"
    path.write_bytes("abcdeé".encode() + b"xyz\xc3" + b"(")  # lead byte 10 lacks its continuation
    with pytest.raises(CorpusError, match="at byte 10"):
        load_corpus(resolve_sources([str(path)]))


def test_other_encodings_with_option(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café crème\n".encode("latin-1") * 20)
    corpus = load_corpus(resolve_sources([str(path)]), encoding="latin-1", val_frac=0)
    assert "é" in corpus.vocab.chars


@pytest.mark.parametrize(
    "content, message",
    [(b"", "file is empty"), (b"\x00\x01\x02binary\x00", "binary")],
)
def test_empty_and_binary_files_are_refused(tmp_path, content, message):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        resolve_sources([str(path)])


def test_directory_expands_to_its_text_files_in_order(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("bbbb\n")
    (tmp_path / "d" / "sub" / "a.txt").write_text("aaaa\n")
    (tmp_path / "d" / "img.bin").write_bytes(b"\x00\x00")
    (tmp_path / "d" / ".hidden").write_text("secret\n")
    sources = resolve_sources([str(tmp_path / "d")])
    assert [p.name for p in sources.train] == ["b.txt", "a.txt"]


def test_directory_without_text_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"\x00abc")
    with pytest.raises(CorpusError, match="no non-empty text files"):
        resolve_sources([str(tmp_path / "d")])


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        resolve_sources([str(tmp_path / "nope.txt")])


def test_split_is_last_val_frac_like_nanogpt(text_file):
    corpus = load_corpus(resolve_sources([str(text_file)]), val_frac=0.1)
    n = corpus.num_chars
    assert len(corpus.train) == int(n * 0.9)
    ids = corpus.vocab.encode(text_file.read_text(encoding="utf-8"))
    assert np.array_equal(np.concatenate([corpus.train, corpus.val]), ids)


@pytest.mark.parametrize(
    "n, val_frac, train_len, val_len",
    [
        (100, 0.0, 100, None),  # no split: everything trains
        (100, 0.1, 90, 10),
        (11, 0.1, 9, 2),  # 9.9 rounds down: two held out
        (10, 0.1, 9, None),  # one held-out item predicts nothing: no validation, same cut
        (1, 0.5, 0, None),
        (0, 0.1, 0, None),
    ],
)
def test_hold_out_edge_cases(n, val_frac, train_len, val_len):
    for items in (np.arange(n), "abcdefghij" * (n // 10) + "x" * (n % 10)):
        train, val = hold_out(items, val_frac)
        assert len(train) == train_len
        if val_len is None:
            assert val is None
        else:
            assert len(val) == val_len
            assert list(train) + list(val) == list(items)


@pytest.mark.parametrize("chars, held", [(11, "j\n"), (10, None)])
def test_every_split_of_a_tiny_text_agrees(tmp_path, chars, held):
    from charrnn.data.vocab_kinds import vocab_kind
    from charrnn.generation.copying import reference_texts
    from charrnn.saved import CorpusOptions

    path = tmp_path / "tiny.txt"
    path.write_text("abcdefghij"[: chars - 1] + "\n", encoding="utf-8")
    sources = resolve_sources([str(path)])
    characters = load_corpus(sources, val_frac=0.1)
    byte_ids, _ = vocab_kind("bytes").load_corpus(sources, "utf-8", 0.1, None, None, False)
    reference = reference_texts(CorpusOptions(train_files=[str(path)], val_frac=0.1))
    assert reference.train == "abcdefghi" and reference.unseen == held
    assert characters.vocab.decode(characters.train.tolist()) == byte_ids.vocab.decode(byte_ids.train.tolist()) == "abcdefghi"
    for corpus in (characters, byte_ids):
        assert (corpus.val is None) if held is None else corpus.vocab.decode(corpus.val.tolist()) == held


def test_val_file_replaces_the_split(text_file, tmp_path):
    val = tmp_path / "val.txt"
    val.write_text("[ROMEO] good night\n" * 3, encoding="utf-8")
    corpus = load_corpus(resolve_sources([str(text_file)], [str(val)]), val_frac=0.1)
    assert len(corpus.val) == len(val.read_text(encoding="utf-8"))
    assert len(corpus.train) == len(text_file.read_text(encoding="utf-8"))


def test_given_vocabulary_must_cover_the_text(text_file):
    with pytest.raises(VocabError, match="not in the checkpoint's vocabulary"):
        load_corpus(Sources((text_file,)), vocab=Vocab.from_text("abc"))
    grown = load_corpus(Sources((text_file,)), vocab=Vocab.from_text("abc"), extend_vocab=True)
    assert grown.vocab.chars[:3] == ("a", "b", "c")


def test_stdlib_corpus_is_built_on_demand_and_deterministic(tmp_path):
    first = catalog.build_stdlib_corpus(tmp_path / "one.txt")
    second = catalog.build_stdlib_corpus(tmp_path / "two.txt")
    assert first.stat().st_size > 1_000_000
    assert first.read_bytes() == second.read_bytes()
    sources = resolve_sources(["stdlib"])
    assert sources.train[0].name.startswith("stdlib-python")


def test_named_corpus_resolves_from_the_corpora_directory(shakespeare):
    sources = resolve_sources(["tinyshakespeare"])
    assert sources.train[0].resolve() == shakespeare.resolve()


def test_ptb_brings_its_own_validation_split():
    from tests.conftest import SHARED_CORPORA

    if not (SHARED_CORPORA / "ptb.char.valid.txt").is_file():
        pytest.skip("PTB not present")
    sources = resolve_sources(["ptb-char"])
    assert sources.train[0].name.startswith("ptb-char.train.")
    assert sources.val[0].name.startswith("ptb-char.valid.")
    # The published figures' character counts: one per symbol, one per line end.
    valid = sources.val[0].read_text(encoding="utf-8")
    assert len(valid) == 393_042 and valid.count("\n") == 3_370
    assert "_" not in valid and "  " not in valid
    assert valid.startswith("consumers may want to move their telephones a little closer to the tv set\n")
    assert len(sources.train[0].read_text(encoding="utf-8")) == 5_017_482
    assert resolve_sources(["ptb-char"]).train == sources.train  # made once, then reused
    test = resolve_sources(["ptb-char:test"])
    assert test.train[0].name.startswith("ptb-char.test.") and test.val == ()
    with pytest.raises(CorpusError, match="no 'test' split"):
        resolve_sources(["tinyshakespeare:test"])


def test_ptb_rewrite_matches_the_word_level_spelling():
    raw = "a b _ c d \n e _ f \n "
    assert catalog.ptb_symbols_as_text(raw) == "ab cd\ne f\n"


def test_named_corpus_missing_says_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("CHARRNN_CORPORA", str(tmp_path / "empty"))
    with pytest.raises(CorpusError, match="charrnn corpus fetch tinyshakespeare"):
        resolve_sources(["tinyshakespeare"])


def _fake_entry(monkeypatch, tmp_path, payload: bytes, sha: str):
    archive = tmp_path / "remote.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("simple/data/train.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    remote = catalog.RemoteFile("fake.train.txt", archive.as_uri(), sha, "data/train.txt")
    entry = catalog.CatalogEntry("fake", "a test corpus", remote)
    monkeypatch.setitem(catalog.CATALOG, "fake", entry)


def test_fetch_downloads_extracts_and_checks_sha256(monkeypatch, tmp_path):
    payload = b"some text to train on\n" * 50
    _fake_entry(monkeypatch, tmp_path, payload, hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv("CHARRNN_CORPORA", "")
    found = catalog.fetch("fake")
    assert found.train.read_bytes() == payload
    assert resolve_sources(["fake"]).train[0].resolve() == found.train.resolve()


def test_fetch_refuses_a_checksum_mismatch(monkeypatch, tmp_path):
    _fake_entry(monkeypatch, tmp_path, b"tampered\n", "0" * 64)
    monkeypatch.setenv("CHARRNN_CORPORA", "")
    with pytest.raises(DownloadError, match="does not match"):
        catalog.fetch("fake")
    assert not (catalog.DEFAULT_CORPORA_DIR / "fake.train.txt").exists()


@pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 22])
def test_nul_anywhere_is_refused_with_its_byte_offset(tmp_path, monkeypatch, chunk_bytes):
    """Past the first 8 KiB too, in any chunk: 8-bit text by its NUL byte, UTF-16 and UTF-32
    by the decoded NUL character, each with the byte offset in the file."""
    monkeypatch.setattr("charrnn.data.corpus.CHUNK_BYTES", chunk_bytes)
    text = "héllo wörld\n" * 800  # > 8 KiB of UTF-8
    cases = [
        ("utf-8", text.encode("utf-8") + b"\x00tail", len(text.encode("utf-8")), "NUL byte"),
        ("latin-1", text.encode("latin-1") + b"\x00", len(text.encode("latin-1")), "NUL byte"),
        ("utf-16", (text + "\0").encode("utf-16"), 2 + 2 * len(text), "NUL character"),
        ("utf-16-be", ("東京\U0001f600" + text + "\0").encode("utf-16-be"), 2 * (len(text) + 4), "NUL character"),
        ("utf-32", (text + "\0x").encode("utf-32"), 4 + 4 * len(text), "NUL character"),
    ]
    for encoding, data, offset, what in cases:
        path = tmp_path / f"{encoding}.txt"
        path.write_bytes(data)
        with pytest.raises(CorpusError, match=rf"{encoding}.txt: looks like a binary file \(it contains a {what} at byte {offset}\)"):
            load_corpus(resolve_sources([str(path)], encoding=encoding), encoding=encoding)


def test_wide_encodings_read_their_nul_bytes_as_text(tmp_path):
    (tmp_path / "d").mkdir()
    for name, encoding in (("a.txt", "utf-16"), ("b.txt", "utf-16")):
        (tmp_path / "d" / name).write_text("abc déf\n" * 50, encoding=encoding)
    (tmp_path / "d" / "img.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x00")
    sources = resolve_sources([str(tmp_path / "d")], encoding="utf-16")
    assert [p.name for p in sources.train] == ["a.txt", "b.txt"]
    corpus = load_corpus(sources, encoding="utf-16", val_frac=0)
    assert corpus.vocab.chars == tuple(sorted(set("abc déf\n")))
    # Read as UTF-8 the same directory holds no text at all.
    with pytest.raises(CorpusError, match="no non-empty text files"):
        resolve_sources([str(tmp_path / "d")])


@pytest.mark.parametrize("chunk_bytes", [1, 2, 1 << 22])
def test_leading_byte_order_mark_of_each_file_is_dropped(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr("charrnn.data.corpus.CHUNK_BYTES", chunk_bytes)
    first, second = tmp_path / "one.txt", tmp_path / "two.txt"
    first.write_bytes(b"\xef\xbb\xbf" + "abc\n".encode() * 20)
    second.write_bytes(b"\xef\xbb\xbf" + "cab\ufeffd\n".encode() * 20)  # a BOM inside is a character
    corpus = load_corpus(resolve_sources([str(first), str(second)]), val_frac=0)
    assert corpus.vocab.decode(corpus.train.tolist()) == "abc\n" * 20 + "cab\ufeffd\n" * 20


def test_cache_entries_of_the_older_reading_are_not_served(tmp_path):
    """A leading BOM used to be a character; an entry cached then (its key lacked the reader
    version) must not come back now for the same file."""
    from charrnn.data import cache
    from charrnn.data.corpus import encode_files

    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + b"abc\n" * 20)
    vocab = Vocab.from_text("\ufeffabc\n")
    old_material = {"files": cache.file_fingerprints([path]), "encoding": "utf-8"}
    old_key = cache.cache_key(kind="ids", vocab=list(vocab.chars), **old_material)
    stale = np.array([vocab.chars.index("\ufeff")] + [1, 2, 3, 0] * 20, dtype=vocab.id_dtype)
    cache.cache_dir().mkdir(parents=True, exist_ok=True)
    np.save(cache.cache_dir() / f"ids-{old_key}.npy", stale)
    ids = encode_files([path], vocab, "utf-8")
    assert vocab.decode(ids.tolist()) == "abc\n" * 20
    assert vocab.decode(encode_files([path], vocab, "utf-8").tolist()) == "abc\n" * 20  # now from the cache
