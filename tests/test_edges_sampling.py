"""sample at its edges: text that is not UTF-8 in every text option and on the interactive
prompt, and options that a mode would silently ignore."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from tests.conftest import REPO

runner = CliRunner()
NOT_UTF8 = os.fsdecode(b"ab\xff")  # what Python makes of the argument $'ab\xff'


def charrnn(*args, stdin: bytes | None = None):
    """The real CLI in a subprocess whose stdout and stderr are strict UTF-8, as in a
    UTF-8 locale."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    env.pop("DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "charrnn", *map(os.fsencode, map(str, args))],
        input=stdin, capture_output=True, cwd=REPO, env=env, timeout=120,
    )


def one_line(result) -> str:
    stderr = result.stderr.decode("utf-8")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("option", ["--prime", "--stop", "--separator"])
def test_an_option_whose_text_is_not_utf8_is_refused_in_one_line(trained_run, option):
    result = charrnn("sample", trained_run, option, NOT_UTF8, "--length", 5)
    assert result.returncode == 2
    assert one_line(result) == f"charrnn: invalid text: {option} is not valid UTF-8 text: byte 0xff at character 2"


@pytest.mark.parametrize("mode", [[], ["--unknown", "skip"], ["--beam", "2"], ["-i"]])
def test_a_prime_that_is_not_utf8_is_refused_in_every_mode(trained_run, mode):
    result = charrnn("sample", trained_run, "--prime", NOT_UTF8, *mode, stdin=b"")
    assert result.returncode == 2
    assert "--prime is not valid UTF-8 text: byte 0xff" in one_line(result)


def test_a_serve_option_whose_text_is_not_utf8_is_refused(trained_run):
    result = charrnn("serve", trained_run, "--api-key", NOT_UTF8)
    assert result.returncode == 2 and "--api-key is not valid UTF-8 text" in one_line(result)


def test_a_typed_line_that_is_not_utf8_is_refused_and_the_session_goes_on(trained_run):
    result = charrnn("sample", trained_run, "-i", "--length", 8, "--seed", 3, stdin=b"ab\xffcd\n[ROMEO]\n")
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode("utf-8")
    assert "that line is not valid UTF-8 text: byte 0xff at character 2; try another prompt" in stderr
    assert "1 replies" in stderr
    assert len(result.stdout.decode("utf-8").splitlines()) == 1


@pytest.mark.parametrize(
    "given,answer",
    [
        (["--beam", "2", "--temperature", "5", "--top-k", "3"], "--beam does not use --temperature, --top-k: drop them"),
        (["--beam", "2", "--seed", "4"], "--beam does not use --seed: drop it"),
        (["--beam", "2", "--engine", "eager"], "--beam does not use --engine: drop it"),
        (["-i", "--num-samples", "3"], "--interactive does not use --num-samples: drop it"),
        (["-i", "--separator", "=="], "--interactive does not use --separator: drop it"),
        (["--copy-min-run", "5"], "--copy-min-run sets what --check-copying counts"),
    ],
    ids=["beam-temperature-top-k", "beam-seed", "beam-engine", "interactive-num-samples", "interactive-separator", "copy-min-run-alone"],
)
def test_an_option_the_mode_would_ignore_is_refused(trained_run, given, answer):
    result = runner.invoke(app, ["sample", str(trained_run), *given], input="")
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and answer in lines[0], result.stderr


def test_an_option_at_its_default_value_given_with_beam_is_still_refused(trained_run):
    """Given is given: --temperature 1.0 (the default) with --beam is as ignored as any other."""
    result = runner.invoke(app, ["sample", str(trained_run), "--beam", "2", "--temperature", "1.0"])
    assert result.exit_code == 2 and "--beam does not use --temperature" in result.stderr


def test_beam_search_writes_the_separator_after_each_sample(trained_run):
    result = runner.invoke(app, ["sample", str(trained_run), "--beam", "3", "--num-samples", "2", "--length", "10", "--separator", "=={i}/{n}=="])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1::2] == ["==1/2==", "==2/2=="]
