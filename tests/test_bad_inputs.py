"""Every bad input answered: one clear line on stderr, a non-zero exit, never a traceback.

Each case here backs a row of the table "Bad inputs and what charrnn answers" in
docs/reliability.md; `test_reliability_table_names_real_tests` keeps the table and the tests in step.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from tests.conftest import REPO, small_text
from tests.test_checkpoint import RunsACommand

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def answered(result, fragment: str, code: int | None = None) -> str:
    """One line on stderr containing ``fragment``, a non-zero exit, no traceback."""
    assert result.exit_code != 0, (result.stdout, result.stderr)
    if code is not None:
        assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------- training text


def _fifo(tmp_path):
    path = tmp_path / "pipe.txt"
    os.mkfifo(path)
    return path


def _socket(tmp_path):
    path = tmp_path / "sock.txt"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays behind
    return path


def _dangling(tmp_path):
    path = tmp_path / "link.txt"
    path.symlink_to(tmp_path / "gone.txt")
    return path


def _no_text_dir(tmp_path):
    path = tmp_path / "images"
    path.mkdir()
    (path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return path


@pytest.mark.parametrize(
    "make, fragment",
    [
        pytest.param(lambda t: t / "nope.txt", "no such file, directory or corpus", id="missing"),
        pytest.param(_no_text_dir, "directory holds no non-empty text files", id="directory-without-text"),
        pytest.param(_fifo, "not a regular file", id="fifo"),
        pytest.param(_socket, "not a regular file", id="socket"),
        pytest.param(_dangling, "broken symbolic link", id="dangling-symlink"),
    ],
)
def test_training_path(tmp_path, make, fragment):
    answered(invoke("train", make(tmp_path), "--out", tmp_path / "run", "--max-steps", 1, *TINY), fragment, 1)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_unreadable_training_file(tmp_path):
    """Permission denied. We run as root, whom permissions do not stop, so the CLI runs in a
    subprocess with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped (see test_crash.py)."""
    from tests.test_crash import can_drop_permission_override, without_permission_override

    if not can_drop_permission_override():
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    path = tmp_path / "secret.txt"
    path.write_text(small_text(), encoding="utf-8")
    path.chmod(0o000)
    proc = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", str(path), "--out", str(tmp_path / "run"), "--max-steps", "1"],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "DEBUG"},
        preexec_fn=without_permission_override if os.geteuid() == 0 else None,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"charrnn: corpus: {path}: permission denied"


def test_unknown_encoding(text_file, tmp_path):
    answered(invoke("train", text_file, "--encoding", "klingon-8", "--out", tmp_path / "r", "--max-steps", 1), "--encoding klingon-8: unknown text encoding; name one such as utf-8", 2)


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(["--batch-size", "0"], "--batch-size", id="zero-batch"),
        pytest.param(["--hidden", "0"], "--hidden", id="zero-hidden"),
        pytest.param(["--max-steps", "-3"], "--max-steps", id="negative-steps"),
        pytest.param(["--epochs", "0"], "--epochs must be positive", id="zero-epochs"),
        pytest.param(["--minutes", "0"], "--minutes must be positive", id="zero-minutes"),
        pytest.param(["--lr", "1e300"], "--lr must be at most 1e+30", id="overflowing-lr"),
        pytest.param(["--lr", "nan"], "--lr", id="nan-lr"),  # click or our own check, by version
        pytest.param(["--dropout", "1"], "--dropout", id="dropout-one"),
        pytest.param(["--precision", "fp16"], "needs a CUDA GPU", id="fp16-on-cpu"),
        pytest.param(["--extend-vocab"], "--extend-vocab fine-tunes a trained model: it needs --resume", id="extend-vocab-without-resume"),
        pytest.param(["--extend-steps", "5"], "--extend-steps adds to the budget of a run being resumed: it needs --resume RUN", id="extend-steps-without-resume"),
        pytest.param(["--extend-minutes", "1"], "--extend-minutes adds to the budget of a run being resumed: it needs --resume RUN", id="extend-minutes-without-resume"),
    ],
)
def test_nonsense_training_option(text_file, tmp_path, args, fragment):
    if "fp16" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    answered(invoke("train", text_file, "--out", tmp_path / "r", "--max-steps", 1, *TINY, *args), fragment)
    assert not (tmp_path / "r" / "last.pt").exists()


def test_deterministic_refuses_dropout_between_cudnn_layers_only():
    from charrnn.device import check_deterministic_resume
    from charrnn.errors import ConfigError

    with pytest.raises(ConfigError, match="--deterministic on a GPU needs --dropout 0"):
        check_deterministic_resume(torch.device("cuda"), layers=2, dropout=0.2)
    check_deterministic_resume(torch.device("cuda"), layers=2, dropout=0.0)
    check_deterministic_resume(torch.device("cuda"), layers=1, dropout=0.2)  # torch draws it
    check_deterministic_resume(torch.device("cpu"), layers=3, dropout=0.5)  # CPU replays it


def test_gpu_asked_for_training_where_there_is_none(text_file, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    answered(invoke("train", text_file, "--device", "cuda", "--out", tmp_path / "r", "--max-steps", 1), "no usable CUDA GPU", 1)


def test_out_is_a_file_or_an_existing_run(text_file, tmp_path, trained_run):
    (tmp_path / "taken").write_text("a file, not a directory")
    answered(invoke("train", text_file, "--out", tmp_path / "taken", "--max-steps", 1, *TINY), "taken is a file, not a directory; name a directory for the run", 2)
    before = (trained_run / "last.pt").read_bytes()
    answered(invoke("train", text_file, "--out", trained_run, "--max-steps", 1, *TINY), "already holds a run", 2)
    assert (trained_run / "last.pt").read_bytes() == before


# ---------------------------------------------------------------------------- resuming and fine-tuning


@pytest.fixture
def own_run(text_file, tmp_path) -> Path:
    run = tmp_path / "run"
    result = invoke("train", text_file, "--out", run, "--max-steps", 12, "--eval-every", 6, *TINY)
    assert result.exit_code == 0, result.stderr
    return run


def test_resume_into_another_runs_directory_is_refused(own_run, trained_run):
    before = (trained_run / "last.pt").read_bytes()
    answered(invoke("train", "--resume", own_run, "--out", trained_run, "--max-steps", 20), "already holds a run", 2)
    assert (trained_run / "last.pt").read_bytes() == before


def test_resume_with_a_different_architecture(own_run):
    answered(invoke("train", "--resume", own_run, "--hidden", 64), "--hidden 64 differs from the checkpoint's 32", 2)


def test_resume_on_text_with_unseen_characters_is_refused(own_run, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text(small_text(30) + "Zebra ~ quixotic {braces}\n" * 30, encoding="utf-8")
    before = (own_run / "last.pt").read_bytes()
    line = answered(invoke("train", new, "--resume", own_run, "--max-steps", 20), "characters not in the checkpoint's vocabulary", 1)
    assert "'Z'" in line and "'~'" in line and "--extend-vocab" in line
    assert (own_run / "last.pt").read_bytes() == before


def test_extend_vocab_fine_tunes_into_a_new_run(own_run, tmp_path):
    """--extend-vocab appends the new characters (old ids keep their meaning and their trained
    embedding/decoder rows), fine-tunes, and leaves the original run as it was."""
    new = tmp_path / "new.txt"
    new.write_text(small_text(30) + "Zebra ~ quixotic {braces}\n" * 30, encoding="utf-8")
    original = checkpoint.load(own_run)
    before = (own_run / "last.pt").read_bytes()

    # Into the original directory: refused, it would replace the original model.
    answered(invoke("train", new, "--resume", own_run, "--extend-vocab", "--max-steps", 20), "give it its own run directory with --out", 2)
    assert (own_run / "last.pt").read_bytes() == before

    from charrnn.training.runs import RunRequest, prepare_run

    run = prepare_run(RunRequest(sources=[str(new)], resume=own_run, extend_vocab=True, extend_steps=8, out=tmp_path / "ft", device="cpu"))
    old_chars = original["vocab"]
    assert list(run.vocab.chars[: len(old_chars)]) == old_chars
    assert {"Z", "~", "{", "}", "q", "x"} <= set(run.vocab.chars[len(old_chars):]) | set(old_chars)
    for name in ("embedding.weight", "decoder.weight", "decoder.bias"):
        assert torch.equal(run.model.state_dict()[name][: len(old_chars)], original["model"][name])

    result = invoke("train", new, "--resume", own_run, "--extend-vocab", "--out", tmp_path / "ft2", "--max-steps", 30)
    assert result.exit_code == 0, result.stderr
    tuned = checkpoint.load(tmp_path / "ft2")
    assert tuned["metrics"]["step"] == 30 and tuned["vocab"][: len(old_chars)] == old_chars
    assert len(tuned["vocab"]) > len(old_chars)
    sample = invoke("sample", tmp_path / "ft2", "--prime", "Zebra ~", "--length", 20, "--seed", 1)
    assert sample.exit_code == 0, sample.stderr
    assert sample.stdout.startswith("Zebra ~")
    assert (own_run / "last.pt").read_bytes() == before  # the original run is untouched


def test_resume_of_a_spent_budget_says_how_to_extend(own_run):
    """A finished run resumed as it is would train nothing: refused, naming what was spent and
    the option that adds to it; with that option it trains on."""
    before = (own_run / "last.pt").read_bytes()
    line = answered(invoke("train", "--resume", own_run), "this run has spent its budget: 12 of 12 steps", 2)
    assert f"charrnn train --resume {own_run} --extend-steps N" in line
    answered(invoke("train", "--resume", own_run, "--max-steps", 12), "spent its budget: 12 of 12 steps", 2)
    assert (own_run / "last.pt").read_bytes() == before
    result = invoke("train", "--resume", own_run, "--extend-steps", 3)
    assert result.exit_code == 0, result.stderr
    assert "extending the budget by 3 steps to 15 steps total" in result.stderr
    assert checkpoint.load(own_run)["metrics"]["step"] == 15


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(["--max-steps", 8], "--max-steps 8 is below this run's budget of 12 steps: with --resume the budget is a total; to train N more steps, give --extend-steps N", id="smaller-total"),
        pytest.param(["--minutes", 5], "--minutes 5 adds a time budget to a run planned in steps (12 steps); extend it with --extend-steps N", id="another-kind-of-total"),
        pytest.param(["--extend-minutes", 5], "this run's budget is 12 steps, not minutes: extend it with --extend-steps N", id="extension-of-another-kind"),
        pytest.param(["--max-steps", 20, "--extend-steps", 4], "give --max-steps (the new total) or --extend-steps / --extend-epochs, not both", id="total-and-extension"),
    ],
)
def test_budget_given_with_resume(own_run, args, fragment):
    before = (own_run / "last.pt").read_bytes()
    answered(invoke("train", "--resume", own_run, *args), fragment, 2)
    assert (own_run / "last.pt").read_bytes() == before


def test_resume_with_another_window_layout_warns(own_run):
    """Another --batch-size or --seq-len cannot continue the carried state: the resume goes on,
    after one warning line saying that it is not exact."""
    result = invoke("train", "--resume", own_run, "--extend-steps", 2, "--batch-size", 4)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("charrnn: warning:")]
    assert warnings == [
        "charrnn: warning: --batch-size 4 (the run's is 8): the windows no longer continue the run's, "
        "so this resume is not exact (the carried hidden state restarts from zero)"
    ]
    assert "batch 4x32" in result.stderr and checkpoint.load(own_run)["metrics"]["step"] == 14
    # The layout is the run's own now: the next resume continues it exactly, without a word.
    result = invoke("train", "--resume", own_run, "--extend-steps", 2)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
    result = invoke("train", "--resume", own_run, "--extend-steps", 2, "--seq-len", 16)
    assert result.exit_code == 0, result.stderr
    assert "charrnn: warning: --seq-len 16 (the run's is 32): the windows no longer continue" in result.stderr


def test_resume_on_text_the_vocabulary_covers_is_accepted(own_run, tmp_path):
    subset = tmp_path / "subset.txt"
    subset.write_text("[ROMEO] O, she doth teach the torches to burn bright!\n" * 60, encoding="utf-8")
    result = invoke("train", subset, "--resume", own_run, "--max-steps", 16)
    assert result.exit_code == 0, result.stderr
    assert checkpoint.load(own_run)["metrics"]["step"] == 16


# ---------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(["--top-k", "-1"], "--top-k", id="negative-top-k"),
        pytest.param(["--num-samples", "0"], "--num-samples", id="zero-samples"),
        pytest.param(["--length", "0"], "--length", id="zero-length"),
        pytest.param(["--num-samples", "2", "--separator", ""], "--separator must not be empty", id="empty-separator"),
        pytest.param(["--prime", "\u00e9\u00e9\u00e9 \U0001f600"], "not in the model's vocabulary", id="prime-emoji"),
    ],
)
def test_nonsense_sampling_option(trained_run, args, fragment):
    answered(invoke("sample", trained_run, *args), fragment)


def test_extreme_temperatures_sample_their_limits_in_both_engines(trained_run):
    from charrnn.model.loading import load_model

    def sample(temperature, engine, *more):
        result = invoke("sample", trained_run, "--length", 3000, "--seed", 4, "--temperature", temperature, "--engine", engine, *more)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    greedy = sample(0, "eager")
    vocab_size = len(load_model(trained_run, device="cpu")[1])
    for engine in ("fast", "eager"):
        # Far below 1e-4: greedy, as at 0 (a float32 division by 1e-45 would overflow).
        assert sample("1e-45", engine) == greedy
        # Far above 1e4: uniform over what the filters keep (1e308 would underflow to ties).
        assert sample("1e308", engine, "--top-k", 1) == greedy
        assert sample("1e308", engine, "--top-k", 3) != greedy
    uniform = sample("1e308", "fast")
    assert uniform == sample("1e308", "eager")
    assert len(set(uniform)) > 0.9 * vocab_size  # 3000 uniform draws reach nearly every character


def test_eval_on_text_with_unseen_characters(trained_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("ZZZ ~~~ qqq\n" * 20, encoding="utf-8")
    line = answered(invoke("eval", trained_run, other), "characters not in the checkpoint's vocabulary", 1)
    # eval has no --extend-vocab: its advice is what eval itself can do.
    assert "'Z'" in line and "pass --unknown skip to leave them out" in line and "--extend-vocab" not in line


# ---------------------------------------------------------------------------- checkpoints


def _with_header(body: bytes, version: int = checkpoint.FORMAT_VERSION) -> bytes:
    return struct.pack("<8sI32s", checkpoint.MAGIC, version, hashlib.sha256(body).digest()) + body


def _tampered(good: bytes) -> bytes:
    data = bytearray(good)
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    return bytes(data)


def _older(good: bytes) -> bytes:
    return good[:8] + struct.pack("<I", 0) + good[12:]


def _newer(good: bytes) -> bytes:
    return good[:8] + struct.pack("<I", checkpoint.FORMAT_VERSION + 1) + good[12:]


def _not_a_model(good: bytes) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weights": [1, 2, 3]}, buffer)  # valid header and checksum, but not ours
    return _with_header(buffer.getvalue())


@pytest.mark.parametrize(
    "damage, fragment",
    [
        pytest.param(lambda good: b"", "not a charrnn checkpoint", id="empty"),
        pytest.param(lambda good: b"PK\x03\x04 a zip file", "not a charrnn checkpoint", id="foreign"),
        pytest.param(lambda good: good[: len(good) - 100], "checksum mismatch: the file is truncated or was modified", id="truncated"),
        pytest.param(_tampered, "checksum mismatch: the file is truncated or was modified", id="tampered"),
        pytest.param(_older, "checkpoint format 0 is older than this charrnn reads", id="older-version"),
        pytest.param(_newer, f"checkpoint format {checkpoint.FORMAT_VERSION + 1} is newer than this charrnn reads", id="newer-version"),
        pytest.param(_not_a_model, "not a charrnn checkpoint", id="torch-file-not-ours"),
    ],
)
@pytest.mark.parametrize("command", ["sample", "info", "resume"])
def test_bad_checkpoint(trained_run, tmp_path, damage, fragment, command):
    path = tmp_path / "bad.pt"
    path.write_bytes(damage((trained_run / "last.pt").read_bytes()))
    args = ["train", "--resume", path, "--max-steps", 1] if command == "resume" else [command, path]
    answered(invoke(*args), f"charrnn: checkpoint: {path}: {fragment}", 1)


def test_checkpoint_that_is_a_fifo_or_a_directory(tmp_path):
    fifo = tmp_path / "ckpt.pt"
    os.mkfifo(fifo)
    answered(invoke("sample", fifo), "not a regular file, so not a checkpoint", 1)
    (tmp_path / "empty_run").mkdir()
    answered(invoke("sample", tmp_path / "empty_run"), "run directory has no last.pt", 1)
    answered(invoke("sample", tmp_path / "empty_run", "--best"), "run directory has no best.pt", 1)


def test_malicious_checkpoint_is_refused_and_its_command_never_runs(tmp_path):
    """A checkpoint with a valid header and checksum whose pickle runs `touch` when unpickled:
    through every command that reads checkpoints, in a real subprocess, the command never runs."""
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"model": RunsACommand(marker), "vocab": ["a"]}, buffer)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(_with_header(buffer.getvalue()))
    refused = f"charrnn: checkpoint: {evil}: refused to load"
    for args in (["sample", evil], ["train", "--resume", evil]):
        proc = subprocess.run(
            [sys.executable, "-m", "charrnn", *map(str, args)], capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if k != "DEBUG"},
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().startswith(refused), proc.stderr
        assert not marker.exists(), "the pickled command ran"
    for args in (["info", evil], ["eval", evil, evil], ["vocab", evil]):
        answered(invoke(*args), refused, 1)
        assert not marker.exists(), "the pickled command ran"


# ------------------------------------------------------------- the table in docs/reliability.md

TABLE_PAGE = REPO / "docs" / "reliability.md"
TABLE_HEADING = "## Bad inputs and what charrnn answers"
# `tests/test_x.py::test_y` or `tests/test_x.py::test_y[id]`; "..." in an id stands for any text.
NAMED_TEST = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)(?:\[([^\]`]+)\])?`")


# ---------------------------------------------------------------------------- extreme numbers


def _greedy_reference(run: Path, prime: str, length: int) -> str:
    """Greedy text from the model's own forward and a plain argmax, one character at a time."""
    from charrnn.model.loading import load_model

    model, vocab, _ = load_model(run, device="cpu")
    ids = torch.tensor([vocab.encode(prime).tolist()])
    out = []
    with torch.no_grad():
        logits, _, state = model(ids)
        for _ in range(length):
            next_id = int(logits[0, -1].argmax())
            out.append(vocab.chars[next_id])
            logits, _, state = model(torch.tensor([[next_id]]), state)
    return "".join(out)


def _sampled(run, *args) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning must not happen at all
        result = invoke("sample", run, "--prime", "[JULIET]", *args)
    assert result.exit_code == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    return result.stdout


@pytest.mark.parametrize("engine", ["fast", "eager"])
def test_tiny_temperature_is_greedy(trained_run, engine):
    expected = "[JULIET]" + _greedy_reference(trained_run, "[JULIET]", 120) + "\n"
    for temperature in ("1e-45", "1e-30", "5e-5"):
        assert _sampled(trained_run, "--temperature", temperature, "--engine", engine, "--length", 120, "--seed", 4) == expected
    assert _sampled(trained_run, "--temperature", 0, "--engine", engine, "--length", 120) == expected


def test_huge_temperature_is_a_uniform_draw_alike_in_both_engines(trained_run):
    """1e308 overflowed numpy's float32; now it is the uniform limit: every character about
    equally often, however sure the model is, and the same text from either engine."""
    from collections import Counter

    from charrnn.model.loading import load_model

    _, vocab, _ = load_model(trained_run, device="cpu")
    fast = _sampled(trained_run, "--temperature", "1e308", "--engine", "fast", "--length", 6000, "--seed", 8)
    eager = _sampled(trained_run, "--temperature", "1e308", "--engine", "eager", "--length", 6000, "--seed", 8)
    assert fast == eager
    counts = Counter(fast[len("[JULIET]") : -1])
    expected = 6000 / len(vocab)
    assert set(counts) == set(vocab.chars)
    assert all(0.5 * expected < n < 1.6 * expected for n in counts.values()), counts
    # The model's own distribution at temperature 1 is nothing like it.
    peaked = Counter(_sampled(trained_run, "--temperature", 1, "--length", 6000, "--seed", 8)[len("[JULIET]") : -1])
    assert max(peaked.values()) > 3 * expected


@pytest.mark.parametrize("command", ["sample", "train"])
@pytest.mark.parametrize("seed", ["99999999999999999999999", "9223372036854775808", "-1"])
def test_seed_outside_64_bits_is_refused(trained_run, text_file, tmp_path, command, seed):
    args = ["sample", trained_run] if command == "sample" else ["train", text_file, "--out", tmp_path / "r", "--max-steps", 1, *TINY]
    line = answered(invoke(*args, "--seed", seed), "--seed", 2)
    assert "9223372036854775807" in line
    assert not (tmp_path / "r").exists()


def test_a_run_saved_with_a_negative_seed_still_resumes(own_run):
    """Seeds were not range-checked before: a run stored with seed -1 continues (its
    evaluation samples fold the seed into range) instead of failing at its first evaluation."""
    payload = checkpoint.load(own_run)
    payload["train_config"]["seed"] = -1
    checkpoint.save(payload, own_run / "last.pt")
    result = invoke("train", "--resume", own_run, "--max-steps", 18)
    assert result.exit_code == 0, result.stderr
    assert checkpoint.load(own_run)["metrics"]["step"] == 18


def test_largest_seed_is_accepted(trained_run):
    assert _sampled(trained_run, "--seed", 2**63 - 1, "--length", 20) == _sampled(trained_run, "--seed", 2**63 - 1, "--length", 20)


def test_model_too_big_for_memory_is_refused_before_allocating(text_file, tmp_path, monkeypatch):
    line = answered(invoke("train", text_file, "--out", tmp_path / "r", "--hidden", 200000, "--max-steps", 1), "out of memory", 1)
    assert "a 2x200000 LSTM" in line and "GiB" in line and "--hidden" in line
    assert not (tmp_path / "r").exists()
    # The size is the model's own: 16 bytes per parameter against what the machine has left.
    from charrnn.model.network import CharRNN, ModelConfig

    parameters = CharRNN(ModelConfig(vocab_size=len(set(small_text())), layers=1, hidden=32, embed=8)).num_parameters()
    monkeypatch.setattr("charrnn.model.loading.available_memory", lambda device: 16 * parameters - 1)
    line = answered(invoke("train", text_file, "--out", tmp_path / "r", "--max-steps", 1, *TINY), "out of memory", 1)
    assert f"has {parameters:,} parameters" in line
    monkeypatch.setattr("charrnn.model.loading.available_memory", lambda device: 16 * parameters)
    assert invoke("train", text_file, "--out", tmp_path / "r", "--max-steps", 1, *TINY).exit_code == 0


def test_failed_allocation_is_one_line(text_file, tmp_path, monkeypatch):
    """Where the size check cannot tell (no memory figure), torch's own allocation failure is
    the same kind of line. A 2**22-unit layer asks for 256 TiB at once: more than any
    process's address space, so it fails for real on every machine."""
    monkeypatch.setattr("charrnn.model.loading.available_memory", lambda device: None)
    line = answered(
        invoke("train", text_file, "--out", tmp_path / "r", "--max-steps", 1, "--layers", 1, "--embed", 8, "--hidden", 2**22),
        "charrnn: out of memory: could not allocate", 1,
    )
    assert "GiB" in line and "--hidden" in line


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(["--weight-decay", "inf"], "--weight-decay must be a finite number, not inf", id="weight-decay-inf"),
        pytest.param(["--lr", "inf"], "--lr must be a finite number, not inf", id="lr-inf"),
        pytest.param(["--grad-clip", "inf"], "--grad-clip must be a finite number", id="grad-clip-inf"),
        pytest.param(["--minutes", "inf"], "--minutes must be a finite number", id="minutes-inf"),
        pytest.param(["--epochs", "inf"], "--epochs must be a finite number", id="epochs-inf"),
        pytest.param(["--weight-decay", "nan"], "--weight-decay", id="weight-decay-nan"),
        pytest.param(["--dropout", "nan"], "--dropout", id="dropout-nan"),
        pytest.param(["--val-frac", "nan"], "--val-frac", id="val-frac-nan"),
        pytest.param(["--min-lr-frac", "nan"], "--min-lr-frac", id="min-lr-frac-nan"),
        pytest.param(["--max-steps", "99999999999999999999"], "--max-steps must be at most 9223372036854775807", id="max-steps-past-64-bits"),
        pytest.param(["--vocab-size", "300"], "--vocab-size applies to --tokenizer bpe only", id="vocab-size-with-chars"),
        pytest.param(["--tokenizer", "bpe", "--vocab-size", "99999999999"], "--vocab-size must be at most 4,294,967,296", id="bpe-vocab-size-past-32-bits"),
        pytest.param(["--encoding", ""], "--encoding must not be empty", id="empty-encoding"),
    ],
)
def test_non_finite_or_oversized_number_is_refused_before_any_directory(text_file, tmp_path, args, fragment):
    answered(invoke("train", text_file, "--out", tmp_path / "r", "--max-steps", 1, *TINY, *args), fragment, 2)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(["--temperature", "inf"], "--temperature must be a finite number", id="temperature-inf"),
        pytest.param(["--temperature", "nan"], "--temperature", id="temperature-nan"),
        pytest.param(["--top-p", "nan"], "--top-p", id="top-p-nan"),
        pytest.param(["--repetition-penalty", "inf"], "--repetition-penalty must be a finite number", id="repetition-penalty-inf"),
    ],
)
def test_non_finite_sampling_number_is_refused(trained_run, args, fragment):
    answered(invoke("sample", trained_run, *args), fragment, 2)


def test_eta_past_any_clock_is_shown_in_years():
    from charrnn.cli.progress import _clock

    assert _clock(1e20) == "3.17e+12 years" and _clock(3661) == "1:01:01"


def test_a_failed_start_leaves_no_half_made_run_directory(text_file, tmp_path, monkeypatch):
    """Whatever fails while the run directory is being set up, a directory this start made
    (parents included) is gone again, and one that existed keeps what it held."""
    from charrnn.errors import ConfigError

    def refuse(*args, **kwargs):
        raise ConfigError("cannot write this to TOML")

    monkeypatch.setattr("charrnn.config_file.to_toml", refuse)
    answered(invoke("train", text_file, "--out", tmp_path / "new" / "deeper" / "run", "--max-steps", 1, *TINY), "cannot write this to TOML", 2)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    answered(invoke("train", text_file, "--out", kept, "--max-steps", 1, *TINY), "cannot write this to TOML", 2)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------- encodings and bytes


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_text_trains_with_encoding(tmp_path, encoding):
    path = tmp_path / f"{encoding}.txt"
    path.write_text(small_text(), encoding=encoding)
    result = invoke("train", path, "--encoding", encoding, "--out", tmp_path / "r", "--max-steps", 1, *TINY)
    assert result.exit_code == 0, result.stderr
    # The same characters as the UTF-8 text: no NUL, no byte-order mark.
    assert checkpoint.load(tmp_path / "r")["vocab"] == sorted(set(small_text()))


def test_utf16_text_read_as_utf8_says_which_encoding(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text(small_text(), encoding="utf-16")
    answered(invoke("train", path, "--out", tmp_path / "r", "--max-steps", 1), f"charrnn: corpus: {path}: looks like UTF-16 text (it starts with a UTF-16 byte-order mark), not utf-8; pass --encoding utf-16", 1)


@pytest.mark.parametrize(
    "encoding, content, fragment",
    [
        pytest.param("utf-16", small_text().encode("utf-8"), "not valid utf-16 at byte 0 (UTF-16 stream does not start with BOM)", id="utf16-on-utf8"),
        pytest.param("utf-16-le", "abc".encode("utf-16-le") * 100 + b"x", "not valid utf-16-le at byte 600 (truncated data)", id="utf16le-odd-length"),
        pytest.param("utf-32", small_text().encode("utf-8"), "not valid utf-32 at byte 0", id="utf32-on-utf8"),
    ],
)
def test_wrong_encoding_names_file_encoding_and_offset(tmp_path, encoding, content, fragment):
    path = tmp_path / "text.txt"
    path.write_bytes(content)
    answered(invoke("train", path, "--encoding", encoding, "--out", tmp_path / "r", "--max-steps", 1), f"{path}: {fragment}", 1)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("tokenizer", ["chars", "bytes"])
def test_nul_byte_anywhere_is_refused_with_its_offset(tmp_path, tokenizer):
    data = small_text().encode("utf-8")
    path = tmp_path / "late-nul.txt"
    path.write_bytes(data[:20000] + b"\x00" + data[20000:])
    line = answered(invoke("train", path, "--tokenizer", tokenizer, "--out", tmp_path / "r", "--max-steps", 1, *TINY), "looks like a binary file (it contains a NUL byte at byte 20000), not text", 1)
    assert str(path) in line
    assert not (tmp_path / "r").exists()


def test_utf8_byte_order_mark_is_not_a_character(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + small_text().encode("utf-8"))
    result = invoke("train", path, "--out", tmp_path / "r", "--max-steps", 1, *TINY)
    assert result.exit_code == 0, result.stderr
    assert checkpoint.load(tmp_path / "r")["vocab"] == sorted(set(small_text()))


# ---------------------------------------------------------------------------- outputs and other commands


def test_empty_out_is_refused_by_every_command(text_file, trained_run, tmp_path):
    for args in (["train", text_file, *TINY], ["vocab", trained_run], ["export", trained_run], ["plot", trained_run]):
        answered(invoke(*args, "--out", ""), "Invalid value for '--out': must not be empty", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [text_file.name]  # nothing in the working directory


def test_empty_path_argument_is_refused(trained_run):
    answered(invoke("train", "", "--max-steps", 1), "an empty path was given", 1)
    answered(invoke("eval", trained_run, ""), "an empty path was given", 2)


def test_out_is_a_directory_where_a_file_is_written(trained_run, tmp_path):
    for command, example in (("vocab", "tokenizer.json"), ("export", "model.pt2"), ("plot", "curves.png")):
        answered(invoke(command, trained_run, "--out", tmp_path), f"--out {tmp_path} is a directory; name the file to write, e.g. --out {tmp_path / example}", 2)
    answered(invoke("vocab", trained_run, "--out", tmp_path / "no" / "tokenizer.json"), f"--out {tmp_path / 'no' / 'tokenizer.json'}: the directory {tmp_path / 'no'} does not exist; create it first", 2)
    answered(invoke("plot", trained_run, "--out", tmp_path / "c.txt"), "cannot draw a .txt file; name a .png, .svg or .pdf", 2)


def test_plot_of_a_file_that_is_not_a_metrics_log(text_file, trained_run):
    for path in (text_file, trained_run / "last.pt"):
        answered(invoke("plot", path), f"{path}: not a run directory or a metrics.jsonl", 1)


def test_plot_out_without_extension_says_the_file_it_wrote(trained_run, tmp_path):
    pytest.importorskip("matplotlib")
    result = invoke("plot", trained_run, "--out", tmp_path / "curves")
    assert result.exit_code == 0, result.stderr
    assert f"wrote {tmp_path / 'curves.png'}" in result.stderr and (tmp_path / "curves.png").is_file()


def test_eval_skips_unseen_characters_on_request(trained_run, tmp_path):
    """--unknown skip scores the text with the unseen characters left out: the same figure
    as for that text written without them, and it says how many it left out."""
    other = tmp_path / "other.txt"
    other.write_text("ZZ[ROMEO] O, she ~doth teach the torches to burn bright!\n" * 20, encoding="utf-8")
    clean = tmp_path / "clean.txt"
    clean.write_text("[ROMEO] O, she doth teach the torches to burn bright!\n" * 20, encoding="utf-8")
    skipped = invoke("eval", trained_run, other, "--unknown", "skip")
    reference = invoke("eval", trained_run, clean)
    assert skipped.exit_code == 0 and reference.exit_code == 0, skipped.stderr + reference.stderr
    assert skipped.stdout.split(" over ")[0] == reference.stdout.split(" over ")[0]
    assert "(60 characters outside the vocabulary left out)" in skipped.stdout
    answered(invoke("eval", trained_run, other, "--unknown", "guess"), "--unknown must be 'error' or 'skip'", 2)


@pytest.mark.parametrize("tokenizer", ["chars", "bytes"])
def test_validation_file_without_two_characters_is_refused(text_file, tmp_path, tokenizer):
    bom_only = tmp_path / "bom-only.txt"
    bom_only.write_bytes(b"\xef\xbb\xbf")  # not empty on disk, empty as text
    one = tmp_path / "one.txt"
    one.write_text("a", encoding="utf-8")
    for path, count in ((bom_only, "0 characters"), (one, "1 character;")):
        args = ["train", text_file, "--val-file", path, "--tokenizer", tokenizer, "--out", tmp_path / "r", "--max-steps", 1, *TINY]
        answered(invoke(*args), f"the validation text (--val-file) holds {count}", 1)
        assert not (tmp_path / "r").exists()


def test_training_without_validation_warns_and_best_names_last(text_file, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", text_file, "--val-frac", 0, "--out", run, "--max-steps", 2, *TINY)
    assert result.exit_code == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning == [
        "warning: no validation text (--val-frac 0), so no best.pt will be written and `sample --best` "
        "will have nothing to load; pass --val-file FILE (or --val-frac) to track the best checkpoint"
    ]
    assert (run / "last.pt").exists() and not (run / "best.pt").exists()
    line = answered(invoke("sample", run, "--best"), "run directory has no best.pt (no validation ran", 1)
    assert "drop --best to use its last.pt" in line
    with_val = invoke("train", text_file, "--out", tmp_path / "val", "--max-steps", 2, *TINY)
    assert not [line for line in with_val.stderr.splitlines() if line.startswith("warning:")]


# ---------------------------------------------------------------------------- the README table


def test_reliability_table_names_real_tests():
    """Every row of the table names a test, and every test it names, with its parameter id
    where one is given, is one that pytest collects."""
    page = TABLE_PAGE.read_text(encoding="utf-8")
    assert TABLE_HEADING in page, f"{TABLE_PAGE} has no section {TABLE_HEADING!r}"
    section = page.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| bad input |")]
    assert len(rows) >= 40, f"the table in {TABLE_PAGE} lost rows: {len(rows)} left"
    named = []
    for row in rows:
        found = NAMED_TEST.findall(row.rstrip().rstrip("|").rsplit(" | ", 1)[-1])
        assert found, f"a row of the table names no test: {row[:100]}"
        named += found
    files = sorted({file for file, _, _ in named})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    ids = {line.strip() for line in collected.stdout.splitlines() if "::" in line}
    for file, function, param in named:
        test = f"{file}::{function}"
        if param:
            wanted = re.compile(re.escape(f"{test}[") + ".*".join(map(re.escape, param.split("..."))) + r"\]")
            assert any(wanted.fullmatch(i) for i in ids), f"{test}[{param}] is named in {TABLE_PAGE.name} but not collected"
        else:
            assert test in ids or any(i.startswith(f"{test}[") for i in ids), f"{test} is named in {TABLE_PAGE.name} but does not exist"
