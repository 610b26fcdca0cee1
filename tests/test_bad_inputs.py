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
    answered(invoke("train", text_file, "--encoding", "klingon-8", "--out", tmp_path / "r", "--max-steps", 1), "unknown text encoding 'klingon-8'", 1)


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
    answered(invoke("train", text_file, "--out", tmp_path / "taken", "--max-steps", 1, *TINY), "cannot create run directory", 1)
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
    from charrnn.training.runs import load_model

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
    answered(invoke("eval", trained_run, other), "characters not in the checkpoint's vocabulary", 1)


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
