"""--tokenizer word: words, whitespace and punctuation as tokens (Hugging Face WordLevel),
decoded exactly, capped by --vocab-size with [UNK], exported in tokenizer.json, sampled and
served, scored in bits per character."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.model.loading import load_model
from tests.conftest import small_text

runner = CliRunner()
SHAPE = ["--layers", "1", "--hidden", "48", "--embed", "16", "--batch-size", "8", "--seq-len", "16",
         "--lr", "0.01", "--warmup-steps", "5", "--threads", "1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("word")
    train, val = root / "train.txt", root / "val.txt"
    train.write_text(small_text(150), encoding="utf-8")
    val.write_text(small_text(12), encoding="utf-8")
    run = root / "run"
    result = invoke("train", train, "--val-file", val, "--out", run, "--tokenizer", "word", "--vocab-size", 300,
                    "--max-steps", 150, "--eval-every", 50, *SHAPE)
    assert result.exit_code == 0, result.stderr
    return run, train, val


def test_word_vocabulary_decodes_exactly_and_caps_with_unknown():
    from charrnn.data.words import UNKNOWN, WordVocab

    text = "To be, or not to be: that is the question.\nTo be!  Or\tnot?\n"
    vocab = WordVocab.train(text.splitlines(keepends=True), 8)
    assert len(vocab) == 8 and vocab.chars[0] == UNKNOWN
    full = WordVocab.train(text.splitlines(keepends=True), 1000)
    assert full.decode(full.encode(text).tolist()) == text  # spaces, tabs, newlines, punctuation kept
    capped = vocab.decode(vocab.encode(text).tolist())
    assert UNKNOWN in capped and capped.count("\n") == 2  # unknown words are [UNK], the rest as it was
    assert " " in vocab.chars and "\n" in vocab.chars  # the most frequent tokens: whitespace first


def test_word_run_learns_reports_bpc_and_eval_agrees(word_run):
    run, _, val = word_run
    model, vocab, saved = load_model(run, device="cpu")
    assert vocab.kind == "word" and saved.corpus.tokenizer == "word" and model.config.vocab_size == len(vocab) <= 300
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals[-1]["val_bpc"] < evals[0]["val_bpc"] * 0.7
    result = invoke("eval", run, val)
    assert result.exit_code == 0, result.stderr
    text = val.read_text(encoding="utf-8")
    assert f"over {len(text):,} characters" in result.stdout
    assert float(result.stdout.split()[0]) == pytest.approx(evals[-1]["val_bpc"], rel=0.05)
    assert len(vocab.encode(text)) / len(text) < 0.5  # fewer tokens than characters: words


def test_word_sampling_and_the_exported_tokenizer(word_run, tmp_path):
    run, _, _ = word_run
    result = invoke("sample", run, "--prime", "[JULIET] Good", "--length", 30, "--seed", 2)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("[JULIET] Good") and len(result.stdout) > 60
    assert invoke("vocab", run, "--out", tmp_path / "tok.json").exit_code == 0
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tmp_path / "tok.json"))
    _, vocab, _ = load_model(run, device="cpu")
    text = "[ROMEO] O, she doth teach the torches!\n"
    assert tokenizer.encode(text, add_special_tokens=False).ids == vocab.encode(text).tolist()
    assert tokenizer.decode(tokenizer.encode(text).ids) == text == vocab.decode(vocab.encode(text).tolist())
    unseen = tokenizer.decode(tokenizer.encode("Zebra doth teach\n").ids, skip_special_tokens=False)
    assert unseen == "[UNK] doth teach\n"


def test_a_word_run_is_served_with_the_text_sample_makes(word_run):
    pytest.importorskip("starlette")
    from charrnn.generation.sample import SampleConfig, stream
    from tests.serving import ServerProcess, call

    run, _, _ = word_run
    model, vocab, _ = load_model(run, device="cpu")
    expected = "".join(stream(model, vocab, SampleConfig(prime="[ROMEO] O,", seed=4, length=20)))
    server = ServerProcess(run, "--threads", "1")
    try:
        status, reply, _ = call(server.url + "/v1/completions", {"prompt": "[ROMEO] O,", "max_tokens": 20, "seed": 4, "logprobs": 1})
    finally:
        assert server.stop() == 0
    assert status == 200, reply
    choice = reply["choices"][0]
    assert choice["text"] == expected and "".join(choice["logprobs"]["tokens"]) == expected
    assert all(token in vocab.chars for token in choice["logprobs"]["tokens"])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--tokenizer", "word"], "--tokenizer word needs --vocab-size"),
        (["--tokenizer", "word", "--vocab-size", "300", "--items"], "--items reads a list of characters"),
    ],
)
def test_word_option_errors_are_one_line(tmp_path, args, fragment):
    train = tmp_path / "t.txt"
    train.write_text(small_text(20), encoding="utf-8")
    result = invoke("train", train, "--out", tmp_path / "x", "--max-steps", 1, *args)
    assert result.exit_code == 2 and fragment in result.stderr and "Traceback" not in result.stderr


def test_a_word_model_exports_as_pt2_with_its_tokenizer_and_is_refused_as_c(word_run, tmp_path):
    run, _, _ = word_run
    refused = invoke("export", run, "--format", "c", "--out", tmp_path / "c")
    assert refused.exit_code == 1 and "this model's vocabulary is WORD (encoding a prompt needs its tokenizer)" in refused.stderr
    exported = invoke("export", run, "--out", tmp_path / "model.pt2")
    assert exported.exit_code == 0, exported.stderr
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.pt2") as archive:
        stored = [name for name in archive.namelist() if name.endswith("tokenizer.json")]
        assert stored, archive.namelist()
        _, vocab, _ = load_model(run, device="cpu")
        assert json.loads(archive.read(stored[0]))["model"]["vocab"] == json.loads(vocab.tokenizer_json)["model"]["vocab"]
