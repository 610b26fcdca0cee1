import json

import numpy as np
import pytest

from charrnn.errors import VocabError
from charrnn.data.vocab import Vocab

TEXT = "Hello, 世界! [bold]naïve[/bold] 😀\n\ttab"


def test_vocab_covers_full_unicode_and_round_trips():
    vocab = Vocab.from_text(TEXT)
    assert "😀" in vocab.chars and "世" in vocab.chars
    assert list(vocab.chars) == sorted(set(TEXT))
    ids = vocab.encode(TEXT)
    assert vocab.decode(ids.tolist()) == TEXT


def test_id_dtype_is_as_narrow_as_the_vocabulary_allows():
    assert Vocab.from_text("abc").id_dtype == np.uint8
    big = Vocab(tuple(chr(0x4E00 + i) for i in range(300)))
    assert big.id_dtype == np.uint16


def test_unknown_characters_are_named_not_a_key_error():
    vocab = Vocab.from_text("abc")
    with pytest.raises(VocabError, match="'z'"):
        vocab.encode("abz")
    assert vocab.encode("abz", unknown="skip").tolist() == [0, 1]


def test_extended_vocabulary_keeps_existing_ids():
    vocab = Vocab.from_text("bca")
    grown = vocab.extended("xa")
    assert grown.chars[:3] == vocab.chars and grown.chars[3:] == ("x",)


def test_tokenizer_json_matches_numpy_ids_and_round_trips(tmp_path):
    from tokenizers import Tokenizer

    vocab = Vocab.from_text(TEXT)
    path = tmp_path / "tokenizer.json"
    vocab.save_tokenizer_json(path)
    tokenizer = Tokenizer.from_file(str(path))
    encoding = tokenizer.encode(TEXT)
    assert encoding.ids == vocab.encode(TEXT).tolist()
    assert tokenizer.decode(encoding.ids) == TEXT
    assert Vocab.from_tokenizer_json(path) == vocab
    assert json.loads(path.read_text())["model"]["type"] == "WordLevel"


def test_pretrained_tokenizer_fast_loads_the_export(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = Vocab.from_text(TEXT)
    path = tmp_path / "tokenizer.json"
    vocab.save_tokenizer_json(path)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert tok(TEXT)["input_ids"] == vocab.encode(TEXT).tolist()


def test_tokenizer_json_encodes_unseen_characters_to_an_unknown_token_after_the_characters(tmp_path):
    from tokenizers import Tokenizer

    vocab = Vocab.from_text(TEXT + "UNK")
    path = tmp_path / "tokenizer.json"
    vocab.save_tokenizer_json(path)
    tokenizer = Tokenizer.from_file(str(path))
    unk = len(vocab)
    assert tokenizer.token_to_id("[UNK]") == unk and tokenizer.get_vocab_size() == len(vocab) + 1
    assert all(tokenizer.token_to_id(c) == i for i, c in enumerate(vocab.chars))
    # Ж, 🎉 and Z are unseen; the text "[UNK]" is five known characters, not the token.
    text = "naïve Ж 世界 🎉 [UNK] Z\n"
    expected = [unk if c not in vocab.chars else int(vocab.encode(c)[0]) for c in text]
    assert expected.count(unk) == 3
    encoding = tokenizer.encode(text)
    assert encoding.ids == expected
    assert tokenizer.decode(encoding.ids) == "naïve [UNK] 世界 [UNK] [UNK] [UNK]\n"
    # Read back, the unknown token is not a character: the model's vocabulary does not grow.
    assert Vocab.from_tokenizer_json(path) == vocab


def test_tokenizer_json_without_an_unknown_token_still_loads(tmp_path):
    from tokenizers import Tokenizer, models

    vocab = Vocab.from_text(TEXT)
    path = tmp_path / "tokenizer.json"
    Tokenizer(models.WordLevel({c: i for i, c in enumerate(vocab.chars)})).save(str(path))
    assert Vocab.from_tokenizer_json(path) == vocab
