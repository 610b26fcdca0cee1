"""`charrnn --help`, every command's --help and shell completion start without torch or numpy
(importing torch alone takes seconds), and without pydantic, which typer would import to check
option values that were never given (60 ms of a 0.2 s start); the time itself is measured by
hand (docs/performance.md), not here."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
import sys
from charrnn.cli.app import main
sys.argv = ["charrnn", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "numpy", "pydantic") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
"""


def heavy_modules(*args: str, env: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    line = [l for l in result.stderr.splitlines() if l.startswith("HEAVY:")]
    assert line, result.stderr
    return line[-1][len("HEAVY:"):]


def test_importing_the_command_line_imports_neither_torch_nor_numpy():
    code = "import sys, charrnn.cli.app; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    [[], ["train"], ["sample"], ["eval"], ["info"], ["export"], ["plot"], ["vocab"], ["bench"], ["serve"],
     ["gradients"], ["inspect"], ["explore"], ["corpus"], ["corpus", "list"], ["corpus", "suite"]],
)
def test_help_imports_neither_torch_numpy_nor_pydantic(command):
    assert heavy_modules(*command, "--help") == ""


def test_completion_imports_neither_torch_numpy_nor_pydantic():
    import os

    env = {**os.environ, "_CHARRNN_COMPLETE": "complete_bash", "COMP_WORDS": "charrnn train --pre", "COMP_CWORD": "2"}
    assert heavy_modules(env=env) == ""


TRAINING_PROBE = """
import sys
from charrnn.cli.app import main
sys.argv = ["charrnn", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    print(f"EXIT:{exc.code}", file=sys.stderr)
print("TRAINING:" + ",".join(sorted(m for m in sys.modules if m.startswith("charrnn.training"))), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "{run}", "--length", "20", "--seed", "1"],
        ["sample", "{run}", "--length", "20", "--seed", "1", "--check-copying"],
        ["info", "{run}"],
        ["eval", "{run}", "{text}"],
        ["export", "{run}", "--out", "{tmp}/model.pt2"],
        ["vocab", "{run}", "--out", "{tmp}/tokenizer.json"],
    ],
    ids=lambda command: "-".join(a for a in command if not a.startswith("{"))[:40],
)
def test_inference_commands_never_import_the_training_package(trained_run, tmp_path, command):
    """Sampling, info, eval, export and vocab load a model through charrnn.model.loading: the
    trainer, runs and DDP code stay out of the process."""
    args = [a.format(run=trained_run, text=trained_run.parent / "verse.txt", tmp=tmp_path) for a in command]
    result = subprocess.run(
        [sys.executable, "-c", TRAINING_PROBE, *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert "EXIT:0" in result.stderr or "EXIT:None" in result.stderr, result.stderr
    line = [l for l in result.stderr.splitlines() if l.startswith("TRAINING:")]
    assert line == ["TRAINING:"], result.stderr
