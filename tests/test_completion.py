"""Shell completion through Typer: the script it installs, and real completions from it."""

import os
import subprocess
import sys

from typer.testing import CliRunner

from charrnn.cli.app import app


def complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "_CHARRNN_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run([sys.executable, "-m", "charrnn"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_show_completion_prints_a_bash_script(monkeypatch):
    # Name the shell instead of letting Typer detect it from the parent process, which is
    # not a shell under every test runner (a detached job, a CI agent).
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="charrnn")
    assert result.exit_code == 0, result.stderr
    assert "complete -o default -F _charrnn_completion charrnn" in result.stdout
    assert "_CHARRNN_COMPLETE=complete_bash" in result.stdout


def test_completion_offers_commands_options_and_choices():
    assert complete("charrnn train --schedule ", 3) == ["cosine", "plateau", "constant"]
    assert "--interactive" in complete("charrnn sample run --inter", 3)
