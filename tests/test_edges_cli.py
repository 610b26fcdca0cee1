"""Odd requests a new user makes, each answered in one line before any work: a run directory
that holds other files, text options that are not UTF-8, numbers that are not numbers,
options that a resumed run or a checkpoint file cannot honour, and Ctrl-C at any moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from tests.conftest import REPO

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "8", "--embed", "4", "--batch-size", "4", "--seq-len", "16", "--max-steps", "2"]


def one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_directory_of_other_files_is_not_a_run_directory(text_file, tmp_path):
    """A run writes config.json, config.toml, metrics.jsonl, samples.txt, last.pt and best.pt:
    a directory that holds the user's own file of such a name is refused, the file kept."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "config.json").write_text('{"mine": true}')
    line = one_line(runner.invoke(app, ["train", str(text_file), "--out", str(project), *TINY]))
    assert "holds config.json, which a run would write over, and is not a run directory" in line
    assert (project / "config.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in project.iterdir()) == ["config.json"]


def test_an_unknown_or_undecodable_encoding_is_an_invalid_option(trained_run, text_file, tmp_path):
    for command in (["train", str(text_file), "--out", str(tmp_path / "r"), *TINY], ["eval", str(trained_run), str(text_file)]):
        line = one_line(runner.invoke(app, [*command, "--encoding", "klingon-8"]))
        assert line == "charrnn: invalid options: --encoding klingon-8: unknown text encoding; name one such as utf-8, latin-1 or utf-16"
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", str(text_file), "--encoding", os.fsdecode(b"utf\xff8"), "--out", str(tmp_path / "r"), *TINY],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2 and result.stderr.strip() == "charrnn: invalid text: --encoding is not valid UTF-8 text: byte 0xff at character 3"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option", ["--extend-steps", "--extend-epochs", "--extend-minutes"])
def test_an_extension_that_is_not_a_number_is_refused(trained_run, option):
    value = "nan" if option != "--extend-steps" else "1" + "0" * 30
    line = one_line(runner.invoke(app, ["train", "--resume", str(trained_run), option, value]))
    assert line.startswith("charrnn: invalid options: ") and option in line


def test_a_preset_with_resume_is_refused(trained_run):
    before = (trained_run / "last.pt").read_bytes()
    line = one_line(runner.invoke(app, ["train", "--resume", str(trained_run), "--preset", "large", "--max-steps", "500"]))
    assert "--preset sizes a new model: a resumed run keeps its own model" in line
    assert (trained_run / "last.pt").read_bytes() == before


@pytest.mark.parametrize("command", [["sample", "--length", "5"], ["info"], ["eval", "TEXT"], ["export"], ["inspect", "--gates"]])
def test_best_with_a_checkpoint_file_is_refused(trained_run, text_file, command):
    name, *rest = command
    args = [name, str(trained_run / "last.pt"), *(str(text_file) if word == "TEXT" else word for word in rest), "--best"]
    line = one_line(runner.invoke(app, args))
    assert "--best picks a run directory's best.pt, and " in line and "is a checkpoint file: drop --best, or name its run directory" in line


def test_a_separator_of_two_lines_is_refused(trained_run):
    line = one_line(runner.invoke(app, ["sample", str(trained_run), "--num-samples", "2", "--separator", "--\n--"]))
    assert line == "charrnn: invalid options: --separator must be one line: scripts split the samples on a line equal to it"


def test_eval_says_how_much_was_left_out_when_nothing_is_left(trained_run, tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("QQQQ", encoding="utf-8")
    line = one_line(runner.invoke(app, ["eval", str(trained_run), str(odd), "--unknown", "skip"]), code=1)
    assert line == "charrnn: corpus: the text to evaluate needs at least 2 characters; 0 are left, after the 4 outside the vocabulary were left out"


def test_ctrl_c_while_the_command_line_loads_is_never_a_traceback(trained_run):
    """SIGINT at moments from the loading of the command line (its modules, typer's parsing)
    to generation: always one line and exit 130 within a second, never a traceback (the
    console script imports the app inside its handler; typer's own exit 130 is said too)."""
    from tests.test_input_sweep import _catches_sigint

    script = [sys.executable, "-c", "from charrnn.cli import main; main()", "sample", str(trained_run), "--length", "100000000", "--seed", "1"]
    for delay in (0.02, 0.05, 0.08, 0.11, 0.14, 0.2, 0.3, 0.5, 1.0):
        process = subprocess.Popen(
            script, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job's parent may ignore it
        )
        # From the moment Python itself handles SIGINT (before, the signal's default action
        # ends any program, and Python's own start-up is no code of charrnn's).
        started = time.monotonic()
        while not _catches_sigint(process.pid) and process.poll() is None and time.monotonic() < started + 10:
            time.sleep(0.002)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        text = stderr.decode()
        assert time.monotonic() - sent < 1.5, delay
        assert "Traceback" not in text, (delay, text)
        assert process.returncode == 130, (delay, process.returncode, text)
        assert text.strip().splitlines()[-1].startswith("charrnn: interrupted"), (delay, text)
