"""--tokenizer bytes and --tokenizer bpe: real training over tokens, sampling that decodes
them, bits per character, Hugging Face round trips, and clear errors."""

import json

import pytest
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from charrnn.model.loading import load_model
from charrnn.data.vocab_kinds import ByteLevelVocab, piece_decoder
from tests.conftest import small_text

runner = CliRunner()
SHAPE = ["--layers", "1", "--hidden", "48", "--embed", "16", "--batch-size", "8", "--seq-len", "16",
         "--lr", "0.01", "--warmup-steps", "5", "--eval-sample-chars", "60"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    train, val = root / "train.txt", root / "val.txt"
    train.write_text(small_text(150), encoding="utf-8")
    val.write_text(small_text(12), encoding="utf-8")
    return root, train, val


@pytest.fixture(scope="module")
def bpe_run(corpus):
    root, train, val = corpus
    run = root / "bpe"
    result = invoke("train", train, "--val-file", val, "--out", run, "--tokenizer", "bpe", "--vocab-size", 320,
                    "--max-steps", 120, "--eval-every", 40, *SHAPE)
    assert result.exit_code == 0, result.stderr
    return run


def test_bpe_model_learns_over_its_tokens_and_reports_bits_per_character(bpe_run, corpus):
    _, _, val = corpus
    model, vocab, saved = load_model(bpe_run, device="cpu")
    assert isinstance(vocab, ByteLevelVocab) and vocab.kind == "bpe" and len(vocab) == 320
    assert model.config.vocab_size == 320 and saved.vocab.kind == "bpe" and saved.corpus.vocab_size == 320
    evals = [json.loads(line) for line in (bpe_run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    # The decoder starts at the tokens' frequencies, so the first evaluation is already below
    # the unigram level; learning the text's structure halves it again.
    assert evals[-1]["val_bpc"] < evals[0]["val_bpc"] / 2
    # Per character, not per token: `charrnn eval` on the validation file agrees with training.
    result = invoke("eval", bpe_run, val)
    assert result.exit_code == 0, result.stderr
    bpc = float(result.stdout.split()[0])
    text = val.read_text(encoding="utf-8")
    assert f"over {len(text):,} characters" in result.stdout and "tokens)" in result.stdout
    assert bpc == pytest.approx(evals[-1]["val_bpc"], rel=0.05)
    tokens_per_char = len(vocab.encode(text)) / len(text)
    assert tokens_per_char < 0.8  # the merges learnt something: fewer tokens than characters


def test_bpe_sampling_decodes_and_the_tokenizer_round_trips(bpe_run, tmp_path):
    result = invoke("sample", bpe_run, "--prime", "[JULIET] Good", "--length", 40, "--temperature", 0)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("[JULIET] Good") and len(result.stdout) > 40
    samples = (bpe_run / "samples.txt").read_text(encoding="utf-8")
    assert samples.count("=== step ") == 3
    # The exported tokenizer.json is the one the model was trained with.
    assert invoke("vocab", bpe_run, "--out", tmp_path / "tok.json").exit_code == 0
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tmp_path / "tok.json"))
    _, vocab, _ = load_model(bpe_run, device="cpu")
    text = "[ROMEO] café 東京, unseen: Zürich ✓\n"
    assert tokenizer.encode(text).ids == vocab.encode(text).tolist()
    assert tokenizer.decode(tokenizer.encode(text).ids) == text == vocab.decode(vocab.encode(text).tolist())


def test_bpe_resume_keeps_the_tokenizer_and_refuses_another(bpe_run, corpus, tmp_path):
    _, train, _ = corpus
    again = invoke("train", "--resume", bpe_run, "--out", tmp_path / "more", "--max-steps", 130)
    assert again.exit_code == 0, again.stderr
    first, second = checkpoint.load(bpe_run), checkpoint.load(tmp_path / "more")
    assert first["tokenizer"] == second["tokenizer"] and second["metrics"]["step"] == 130
    other = invoke("train", "--resume", bpe_run, "--tokenizer", "bytes", "--max-steps", 200)
    assert other.exit_code == 2 and "differs from the checkpoint's bpe" in other.stderr


def test_bytes_mode_takes_any_input(corpus, tmp_path):
    _, train, _ = corpus
    run = tmp_path / "bytes"
    result = invoke("train", train, "--out", run, "--tokenizer", "bytes", "--max-steps", 20, "--eval-every", 10, *SHAPE)
    assert result.exit_code == 0, result.stderr
    _, vocab, _ = load_model(run, device="cpu")
    assert vocab.kind == "bytes" and len(vocab) == 256
    # Characters the corpus never had are no problem: they are bytes like any other.
    result = invoke("sample", run, "--prime", "Ωmega € 🎉", "--length", 50, "--seed", 1)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Ωmega € 🎉")
    assert tmp_path.joinpath("bytes", "config.toml").read_text().count('tokenizer = "bytes"') == 1


def test_chars_tokenizer_json_has_an_unknown_token_and_keeps_the_models_ids(corpus, tmp_path):
    from tokenizers import Tokenizer

    from charrnn.data.vocab import Vocab

    _, train, _ = corpus
    run = tmp_path / "chars"
    result = invoke("train", train, "--out", run, "--max-steps", 4, "--eval-every", 2, *SHAPE)
    assert result.exit_code == 0, result.stderr
    assert invoke("vocab", run, "--out", tmp_path / "tok.json").exit_code == 0
    model, vocab, _ = load_model(run, device="cpu")
    tokenizer = Tokenizer.from_file(str(tmp_path / "tok.json"))
    unk = tokenizer.token_to_id("[UNK]")
    assert unk == len(vocab) == model.config.vocab_size
    assert all(tokenizer.token_to_id(c) == i for i, c in enumerate(vocab.chars))
    # Unseen characters (Z, ü, Ω, 🎉) become the unknown token instead of an error.
    text = "[ROMEO] café 東京, Zürich Ω 🎉\n"
    expected = [int(vocab.encode(c)[0]) if c in vocab.chars else unk for c in text]
    assert expected.count(unk) == 4 and tokenizer.encode(text).ids == expected
    known = "[ROMEO] café 東京, naïve\n"
    assert tokenizer.encode(known).ids == vocab.encode(known).tolist()
    assert tokenizer.decode(tokenizer.encode(known).ids) == known
    # Read back, it is the model's vocabulary, not one character more.
    assert Vocab.from_tokenizer_json(tmp_path / "tok.json") == vocab


def test_streaming_decoder_never_emits_half_a_character():
    vocab = ByteLevelVocab.bytes_vocab()
    decode = piece_decoder(vocab)
    pieces = [decode(b) for b in "a東京".encode("utf-8")]
    assert pieces == ["a", "", "", "東", "", "", "京"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--tokenizer", "bpe"], "--tokenizer bpe needs --vocab-size"),
        (["--tokenizer", "bytes", "--vocab-size", "300"], "--vocab-size does not apply to --tokenizer bytes"),
    ],
)
def test_tokenizer_option_errors_are_one_line(corpus, tmp_path, args, fragment):
    _, train, _ = corpus
    result = invoke("train", train, "--out", tmp_path / "x", "--max-steps", 1, *args)
    assert result.exit_code == 2 and fragment in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("tokenizer", ["bpe", "bytes", "chars"])
def test_training_header_counts_tokens_as_tokens(corpus, tmp_path, tokenizer):
    root, train, val = corpus
    extra = ["--vocab-size", 300] if tokenizer == "bpe" else []
    result = invoke("train", train, "--val-file", val, "--out", tmp_path / "run", "--tokenizer", tokenizer, *extra,
                    "--max-steps", 1, *SHAPE)
    assert result.exit_code == 0, result.stderr
    header = result.stderr.splitlines()[0]
    model, vocab, _ = load_model(tmp_path / "run", device="cpu")
    val_count = len(vocab.encode(val.read_text(encoding="utf-8")))
    unit = "characters" if tokenizer == "chars" else "tokens"
    assert f"/ {val_count:,} val {unit}," in header, header
    assert tokenizer == "chars" or val_count != len(val.read_text(encoding="utf-8"))
    # The unigram baseline is a model of each token's frequency, and vocab counts tokens.
    assert f"(a model that knows only how often each {unit[:-1]} occurs)" in result.stderr, result.stderr
    written = invoke("vocab", tmp_path / "run", "--out", tmp_path / "tok.json")
    assert written.exit_code == 0 and written.stderr.strip() == f"wrote {tmp_path / 'tok.json'} ({len(vocab)} {unit})", written.stderr
