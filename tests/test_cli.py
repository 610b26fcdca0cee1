"""The real command line: typer's CliRunner in-process, and a few subprocesses for the exact
stdout/stderr/exit-code contract."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from tests.conftest import small_text

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, fragment, code=None):
    assert result.exit_code != 0, result.stdout
    if code is not None:
        assert result.exit_code == code
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert fragment in result.stderr, result.stderr


def test_train_sample_info_eval_vocab_happy_path(text_file, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", text_file, "--out", run, "--max-steps", 30, "--eval-every", 10, *TINY)
    assert result.exit_code == 0, result.stderr
    assert "done (step budget reached) at step 30" in result.stderr
    assert result.stdout == ""  # progress and logs never touch stdout

    result = invoke("sample", run, "--length", 50, "--seed", 3, "--prime", "[ROMEO]")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("[ROMEO]")  # raw text: brackets are not rich markup
    assert len(result.stdout) == len("[ROMEO]") + 50 + 1
    assert "seed 3" in result.stderr
    assert invoke("sample", run, "--length", 50, "--seed", 3, "--prime", "[ROMEO]").stdout == result.stdout

    result = invoke("sample", run, "--best", "--length", 20, "--num-samples", 3, "--seed", 1)
    assert result.exit_code == 0 and len(result.stdout.splitlines()) >= 3

    result = invoke("info", run, "--json")
    facts = json.loads(result.stdout)
    assert facts["step"] == 30 and facts["vocab_size"] == len(set(small_text()))
    assert facts["model"]["hidden"] == 32

    result = invoke("eval", run, text_file)
    assert result.exit_code == 0 and " bpc (" in result.stdout

    result = invoke("vocab", run, "--out", tmp_path / "tok.json")
    assert result.exit_code == 0 and (tmp_path / "tok.json").is_file()


def test_resume_from_the_command_line_continues_the_step_count(text_file, tmp_path):
    run = tmp_path / "run"
    assert invoke("train", text_file, "--out", run, "--max-steps", 10, *TINY).exit_code == 0
    result = invoke("train", "--resume", run, "--max-steps", 20)
    assert result.exit_code == 0, result.stderr
    assert "resuming" in result.stderr and "at step 10" in result.stderr
    assert json.loads(invoke("info", run, "--json").stdout)["step"] == 20


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        (b"good text " * 20 + b"\xc3\x28 bad", "not valid utf-8 at byte 200"),
        (b"short", "too few for one window"),
    ],
)
def test_bad_training_text_gets_one_clear_line(tmp_path, content, fragment):
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    result = invoke("train", path, "--out", tmp_path / "run", "--max-steps", 1, *TINY)
    one_line_error(result, fragment)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_missing_file_and_textless_directory(tmp_path):
    one_line_error(invoke("train", tmp_path / "nope.txt", "--max-steps", 1), "no such file")
    (tmp_path / "d").mkdir()
    one_line_error(invoke("train", tmp_path / "d", "--max-steps", 1), "no non-empty text files")
    one_line_error(invoke("train"), "name a text file")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--layers", "0"], "--layers"),
        (["--seq-len", "100000"], "too few for one window"),
        (["--lr", "-1"], "--lr"),
        (["--val-frac", "1.5"], "--val-frac"),
        (["--cell", "transformer"], "--cell"),
    ],
)
def test_nonsense_training_options(text_file, tmp_path, args, fragment):
    one_line_error(invoke("train", text_file, "--out", tmp_path / "r", "--max-steps", 1, *args), fragment)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--length", "-5"], "--length"),
        (["--temperature", "-0.5"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--prime", "Quixotic"], "'Q'"),
        (["--unknown", "guess"], "--unknown"),
    ],
)
def test_nonsense_sampling_options(trained_run, args, fragment):
    one_line_error(invoke("sample", trained_run, *args), fragment)


def test_bad_checkpoints(tmp_path, trained_run):
    one_line_error(invoke("sample", tmp_path / "missing.pt"), "no such checkpoint")
    (tmp_path / "foreign.pt").write_text("hello")
    one_line_error(invoke("sample", tmp_path / "foreign.pt"), "not a charrnn checkpoint")
    data = (trained_run / "last.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 3])
    one_line_error(invoke("info", tmp_path / "trunc.pt"), "truncated or was modified")
    (tmp_path / "empty_run").mkdir()
    one_line_error(invoke("sample", tmp_path / "empty_run"), "has no last.pt")


def test_gpu_asked_for_where_there_is_none(trained_run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_line_error(invoke("sample", trained_run, "--device", "cuda"), "no usable CUDA GPU")


def _charrnn(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "charrnn", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        timeout=300,
    )


def test_subprocess_streams_raw_text_to_stdout_and_status_to_stderr(trained_run):
    proc = _charrnn("sample", trained_run, "--length", 40, "--seed", 11, "--prime", "[JULIET]")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[JULIET]") and len(proc.stdout) == len("[JULIET]") + 41
    assert "seed 11" in proc.stderr and "\x1b[" not in proc.stderr


def test_subprocess_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    proc = _charrnn("sample", tmp_path / "missing.pt")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no such checkpoint" in proc.stderr
    proc = _charrnn("sample", tmp_path / "missing.pt", env={"DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr
