"""The C model: compiled with the system's C compiler under strict C99 flags and run as a
program and as a library, against trained checkpoints: the same greedy text as `charrnn
sample --temperature 0`, the same logits, and int8 weights within their bpc bound."""

import math
import subprocess

import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.data.vocab import Vocab
from charrnn.data.vocab_kinds import ByteLevelVocab
from charrnn.errors import ExportError
from charrnn.export.c_model import STRICT_FLAGS, compile_program, export_c, find_compiler, measure, program_logits
from charrnn.model.loading import load_model
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.options import PRESETS
from tests.conftest import small_text

runner = CliRunner()
PRIME = "[JULIET] Good night, good "
LENGTH = 200


@pytest.fixture(scope="module")
def compiler():
    found = find_compiler()
    if found is None:
        pytest.skip("no C compiler (cc, gcc or clang) on this machine, and CC is not set")
    return found


def build(run, out, quantize=None):
    model, vocab, _ = load_model(run, device="cpu")
    report = export_c(model, vocab, out, quantize)
    program = compile_program(report.paths[0], out / "model", ("-O2",))
    return report, program, model, vocab


def run_program(program, *args, stdin=b""):
    done = subprocess.run([str(program), *map(str, args)], input=stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode("utf-8")


def charrnn_sample(run, *args):
    result = runner.invoke(app, ["sample", str(run), "--temperature", "0", "--length", str(LENGTH), *map(str, args)])
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_greedy_text_and_logits_are_the_checkpoints(cell, cell_runs, compiler, tmp_path):
    report, program, model, vocab = build(cell_runs[cell], tmp_path)
    assert report.paths == [tmp_path / "model.c"] and report.size_bytes == report.paths[0].stat().st_size
    assert "logits within" in report.check
    assert ("CHARRNN_INPUT_TABLE 1" in report.paths[0].read_text()) == (cell != "lstm")

    # The same 200 characters, byte for byte, with a prime and without one (a line start).
    assert run_program(program, "--prime", PRIME, "--length", LENGTH, "--temperature", 0) == charrnn_sample(cell_runs[cell], "--prime", PRIME)
    assert run_program(program, "--length", LENGTH, "--temperature", 0) == charrnn_sample(cell_runs[cell])

    text = small_text(2)[:300]
    got = program_logits(program, text.encode("utf-8"))
    with torch.no_grad():
        expected, _, _ = model(torch.tensor([vocab.encode(text).tolist()]))
    assert got.shape == tuple(expected[0].shape)
    assert abs(got - expected[0].double().numpy()).max() < 1e-4


def score_bpc(program, text):
    words = run_program(program, "--score", stdin=text.encode("utf-8")).split()
    return float(words[words.index("nats") + 1]) / math.log(2) / int(words[words.index("scored") + 1])


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_int8_and_float16_cost_little_and_weigh_less(cell, cell_runs, compiler, tmp_path):
    trained_run = cell_runs[cell]
    model, vocab, _ = load_model(trained_run, device="cpu")
    text = small_text(12)
    ids = torch.tensor([vocab.encode(text).tolist()])
    with torch.no_grad():
        _, loss, _ = model(ids[:, :-1], targets=ids[:, 1:])
    reference = float(loss) / math.log(2)
    bpc, weights = {}, {}
    for form in (None, "int8", "float16"):
        _, program, _, _ = build(trained_run, tmp_path / str(form), form)
        bpc[form] = score_bpc(program, text)
        weights[form] = int(run_program(program, "--info").split("weights: ")[1].split()[0])
    assert abs(bpc[None] - reference) < 1e-5
    assert abs(bpc["int8"] - reference) <= 0.01
    assert abs(bpc["float16"] - reference) <= 0.002
    assert weights["float16"] < 0.55 * weights[None]
    assert weights["int8"] < 0.35 * weights[None]  # a 2x32 model: its vocabulary tables and biases weigh more


def test_tiny_preset_int8_fits_in_a_fraction_of_its_float_size(compiler, tmp_path):
    vocab = Vocab(tuple(chr(c) for c in range(32, 97)))  # 65 characters, like tiny shakespeare's
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), cell="lstm", **PRESETS["tiny"])).eval()
    sizes = {}
    for form in (None, "int8"):
        report = export_c(model, vocab, tmp_path / str(form), form)
        program = compile_program(report.paths[0], tmp_path / str(form) / "model", ("-O2",))
        info = run_program(program, "--info")
        sizes[form] = int(info.split("weights: ")[1].split()[0])
        assert f"parameters: {model.num_parameters()}" in info
    assert 90_000 < model.num_parameters() < 100_000
    assert sizes["int8"] <= 0.3 * sizes[None] and sizes["int8"] < 120_000


def _native_avx2(compiler) -> bool:
    """The compiler accepts -march=native and the machine it describes has AVX2 and F16C."""
    done = subprocess.run([compiler, "-march=native", "-dM", "-E", "-"], input="", capture_output=True, text=True)
    return done.returncode == 0 and "__AVX2__" in done.stdout and "__F16C__" in done.stdout


@pytest.mark.slow
def test_the_x86_product_gives_the_portable_loops_logits_exactly(trained_run, compiler, tmp_path):
    """With -march=native on an x86 with AVX2 the matrix-vector product loads eight weights
    at a time through intrinsics; it must sum exactly as the portable loop does (strict C99
    contracts no multiply-add in either), for every weight form."""
    if not _native_avx2(compiler):
        pytest.skip("the compiler's -march=native is not an x86 with AVX2 and F16C")
    model, vocab, _ = load_model(trained_run, device="cpu")
    text = small_text(2)[:300].encode("utf-8")
    for form in (None, "int8", "float16"):
        report = export_c(model, vocab, tmp_path / str(form), form)
        source = report.paths[0]
        portable = compile_program(source, tmp_path / str(form) / "portable", ("-O2",))
        native = compile_program(source, tmp_path / str(form) / "native", ("-O2", "-march=native"))
        assert "portable C" in run_program(portable, "--info")
        assert "x86 vector instructions" in run_program(native, "--info")
        got, expected = program_logits(native, text), program_logits(portable, text)
        assert got.shape == expected.shape and (got == expected).all(), form


API_USER = r"""
#define CHARRNN_HEADER_ONLY
#include "model.c"
#include <stdio.h>
#include <string.h>

/* Greedy text after a prime through the API, then two draws that must agree: the same seed,
   and top-k 1 at any temperature against greedy. */
int main(int argc, char **argv)
{
    static charrnn_state a, b;
    int n, length = 200;
    (void)argc;
    charrnn_init(&a, 7);
    if (charrnn_prime(&a, argv[1]) < 0) return 3;
    fputs(argv[1], stdout);
    for (n = 0; n < length; n++) {
        size_t bytes;
        int id = charrnn_sample(&a, 0.0f, 0);
        const char *text = charrnn_decode(id, &bytes);
        fwrite(text, 1, bytes, stdout);
        if (charrnn_step(&a, id) == NULL) return 4;
    }
    putchar('\n');
    charrnn_init(&a, 11);
    charrnn_init(&b, 11);
    charrnn_prime(&a, argv[1]);
    charrnn_prime(&b, argv[1]);
    for (n = 0; n < length; n++) {
        int x = charrnn_sample(&a, 1.0f, 0), y = charrnn_sample(&b, 1.0f, 0);
        int greedy = charrnn_sample(&a, 0.0f, 0); /* greedy draws no random number */
        if (x != y || charrnn_sample(&a, 5.0f, 1) != greedy || charrnn_sample(&b, 0.5f, 1) != greedy) return 5;
        charrnn_step(&a, x);
        charrnn_step(&b, y);
    }
    return charrnn_step(&a, CHARRNN_VOCAB) == NULL && charrnn_weight_bytes() > 0 ? 0 : 6;
}
"""


def test_the_api_works_from_a_program_of_ones_own(trained_run, compiler, tmp_path):
    report, program, _, _ = build(trained_run, tmp_path)
    user = tmp_path / "user.c"
    user.write_text(API_USER, encoding="utf-8")
    linked = tmp_path / "user"
    command = [compiler, *STRICT_FLAGS, "-O2", "-DCHARRNN_NO_MAIN", "-o", str(linked), str(report.paths[0]), str(user), "-lm"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    own = subprocess.run([str(linked), PRIME], capture_output=True)
    assert own.returncode == 0, own.returncode
    assert own.stdout.decode() == run_program(program, "--prime", PRIME, "--length", LENGTH, "--temperature", 0)


def test_sampling_follows_its_seed_and_top_k(trained_run, compiler, tmp_path):
    _, program, _, _ = build(trained_run, tmp_path)
    draw = lambda *a: run_program(program, "--prime", PRIME, "--length", 300, *a)  # noqa: E731
    assert draw("--seed", 1, "--temperature", 1) == draw("--seed", 1, "--temperature", 1)
    assert draw("--seed", 1, "--temperature", 1) != draw("--seed", 2, "--temperature", 1)
    assert draw("--seed", 5, "--temperature", 3, "--top-k", 1) == draw("--temperature", 0)
    vocab = load_model(trained_run, device="cpu")[1]
    assert set(draw("--seed", 3, "--temperature", 1.0e6)) <= set(vocab.chars)


def test_bad_input_to_the_program_is_one_line(trained_run, compiler, tmp_path):
    _, program, _, _ = build(trained_run, tmp_path)
    for args, stdin, says in [
        (["--prime", "Zebra ☃"], b"", "not in the model's vocabulary"),
        (["--length", "0"], b"", "--length"),
        (["--temperature", "-1"], b"", "--temperature"),
        (["--shout"], b"", "unknown option"),
        (["--score"], "good ☃".encode(), "U+2603"),
    ]:
        done = subprocess.run([str(program), *args], input=stdin, capture_output=True)
        assert done.returncode != 0 and says in done.stderr.decode(), (args, done.stderr)
        assert len(done.stderr.decode().strip().splitlines()) <= 2


@pytest.mark.slow
def test_a_byte_level_model_reads_and_writes_bytes(compiler, tmp_path):
    train = tmp_path / "train.txt"
    train.write_text(small_text(60), encoding="utf-8")
    run = tmp_path / "bytes"
    shape = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32", "--lr", "0.01"]
    result = runner.invoke(app, ["train", str(train), "--out", str(run), "--tokenizer", "bytes", "--max-steps", "60", "--eval-every", "30", *shape])
    assert result.exit_code == 0, result.stderr
    _, program, model, vocab = build(run, tmp_path / "c")
    prime = "café "  # two bytes in é
    assert run_program(program, "--prime", prime, "--length", LENGTH, "--temperature", 0) == charrnn_sample(run, "--prime", prime)
    text = small_text(1)[:200]
    got = program_logits(program, text.encode("utf-8"))
    with torch.no_grad():
        expected, _, _ = model(torch.tensor([vocab.encode(text).tolist()]))
    assert abs(got - expected[0].double().numpy()).max() < 1e-4


def test_refuses_a_bpe_model_an_unknown_form_and_an_unwritable_place(tmp_path):
    bpe = ByteLevelVocab.train_bpe(small_text(20).splitlines(keepends=True), 300)
    model = CharRNN(ModelConfig(vocab_size=len(bpe), layers=1, hidden=8, embed=4)).eval()
    with pytest.raises(ExportError, match="BPE.*onnx or pt2"):
        export_c(model, bpe, tmp_path / "bpe")
    vocab = Vocab(tuple("ab\n"))
    model = CharRNN(ModelConfig(vocab_size=3, layers=1, hidden=8, embed=4)).eval()
    with pytest.raises(ExportError, match="int4"):
        export_c(model, vocab, tmp_path / "x", "int4")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="not a directory"):
        export_c(model, vocab, blocker / "model.c")


def test_without_a_compiler_the_source_is_written_and_the_check_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "no-such-compiler-charrnn")
    vocab = Vocab(tuple("ab\n"))
    model = CharRNN(ModelConfig(vocab_size=3, layers=1, hidden=8, embed=4)).eval()
    report = export_c(model, vocab, tmp_path / "model.c")
    assert report.paths == [tmp_path / "model.c"] and "charrnn_step" in report.paths[0].read_text()
    assert report.check.startswith("not compiled or checked: no C compiler found")


def test_measure_times_the_optimised_build_and_scores_a_text(trained_run, compiler, tmp_path):
    model, vocab, _ = load_model(trained_run, device="cpu")
    report = export_c(model, vocab, tmp_path)
    text = small_text(3)
    found = measure(report.paths[0], steps=300, text=text, repeats=2)
    ids = torch.tensor([vocab.encode(text).tolist()])
    with torch.no_grad():
        _, loss, _ = model(ids[:, :-1], targets=ids[:, 1:])
    assert abs(found.bpc - float(loss) / math.log(2)) < 1e-5 and found.scored == len(text) - 1
    assert 0 < found.processor_seconds_per_char and 0 < found.seconds_per_char < 0.01
    assert found.chars_per_second == pytest.approx(1 / found.seconds_per_char)
    assert found.weight_bytes < found.program_bytes and "-O3" in found.flags
