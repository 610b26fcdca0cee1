"""Every path a command writes goes through one check (charrnn.outputs) before any work: this
walks every output option of every command (found by its parser, cli.shared.output_path, so
a new option cannot be missed) through the paths that must never be written: a directory, a
FIFO, a device, the checkpoint the command reads, a text it reads, a run's own files. Each is
refused in one line that names the option, and is left exactly as it was."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.cli.shared import output_path
from tests.conftest import small_text

runner = CliRunner()

# How to reach each output option: the command line before the option's value.
# RUN is the trained run, TEXT a text file the command reads.
REACH = {
    ("train", "--out"): ["train", "TEXT", "--layers", "1", "--hidden", "8", "--embed", "4", "--max-steps", "1"],
    ("vocab", "--out"): ["vocab", "RUN"],
    ("export", "--out"): ["export", "RUN"],
    ("plot", "--out"): ["plot", "RUN"],
    ("gradients", "--png"): ["gradients", "RUN", "--text", "TEXT", "--steps", "8"],
    ("inspect", "--png"): ["inspect", "RUN", "--text", "TEXT", "--chars", "40", "--gates"],
    ("inspect", "--html"): ["inspect", "RUN", "--text", "TEXT", "--chars", "40", "--neuron", "0:0"],
    ("inspect", "--dump-states"): ["inspect", "RUN", "--text", "TEXT", "--chars", "40"],
    ("bench", "--json"): ["bench", "--startup", "--text", "TEXT"],
}
# What must never be written, and a fragment of the answer.
TARGETS = {
    "directory": "is a directory",
    "fifo": "is a FIFO, not a regular file",
    "device": "is a character device, not a regular file",
    "checkpoint": "charrnn checkpoint",
    "read-checkpoint": ("one of this command's inputs", "charrnn checkpoint"),
    "input-text": "one of this command's inputs",
    "run-metrics": ("one of the files of the run", "one of this command's inputs"),
}
# A run directory is an output too: there the directory target is the trained run itself
# (another run), and every file-like target is refused as not a directory.
DIRECTORY_OUTPUTS = {("train", "--out")}
IN_A_DIRECTORY = {"directory": "already holds a run"}


def output_options() -> set[tuple[str, str]]:
    """Every (command, option) whose value is parsed by output_path."""
    import typer.main

    found = set()
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            info = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
            if getattr(info, "parser", None) is output_path:
                found.add((name, max(param.opts, key=len)))
    return found


def test_every_output_option_is_walked_here():
    assert output_options() == set(REACH), "an output option was added or removed: reach it in REACH"


def fingerprint(path: Path) -> tuple:
    info = os.lstat(path)
    if stat.S_ISREG(info.st_mode):
        return ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    if stat.S_ISDIR(info.st_mode):
        return ("dir", tuple(sorted(p.name for p in path.iterdir())))
    return (stat.S_IFMT(info.st_mode), info.st_rdev)


@pytest.fixture(scope="module")
def places(trained_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    text = root / "text.txt"
    text.write_text(small_text(3), encoding="utf-8")
    fifo = root / "pipe"
    os.mkfifo(fifo)
    empty_dir = root / "empty"
    empty_dir.mkdir()
    copied = root / "copy.pt"
    copied.write_bytes((trained_run / "last.pt").read_bytes())
    return {
        "RUN": trained_run,
        "TEXT": text,
        "directory": empty_dir,
        "fifo": fifo,
        "device": Path("/dev/null"),
        "checkpoint": copied,
        "read-checkpoint": trained_run / "last.pt",
        "input-text": text,
        "run-metrics": trained_run / "metrics.jsonl",
    }


# Every output option against every target; a text the command reads only where it reads one.
WALK = [
    (command, option, target)
    for command, option in sorted(REACH)
    for target in TARGETS
    if target != "input-text" or "TEXT" in REACH[(command, option)]
]


@pytest.mark.parametrize("command,option,target", WALK, ids=[f"{c}{o}-{t}" for c, o, t in WALK])
def test_output_that_must_not_be_written_is_refused_before_any_work(command, option, target, places):
    if target == "device" and not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    args = [str(places.get(word, word)) for word in REACH[(command, option)]]
    directory_output = (command, option) in DIRECTORY_OUTPUTS
    destination = places["RUN"] if directory_output and target == "directory" else places[target]
    before = {name: fingerprint(places[name]) for name in ("RUN", "checkpoint", "read-checkpoint", "input-text", "run-metrics", "fifo", "directory")}
    before["destination"] = fingerprint(destination)
    result = runner.invoke(app, [*args, option, str(destination)])
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("charrnn: invalid options: ") and option in lines[0], lines[0]
    expected = IN_A_DIRECTORY.get(target, "not a directory") if directory_output else TARGETS[target]
    assert any(fragment in lines[0] for fragment in ((expected,) if isinstance(expected, str) else expected)), lines[0]
    after = {name: fingerprint(places[name]) for name in ("RUN", "checkpoint", "read-checkpoint", "input-text", "run-metrics", "fifo", "directory")}
    after["destination"] = fingerprint(destination)
    assert after == before


def test_two_outputs_of_one_command_may_not_name_the_same_file(trained_run, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(small_text(3), encoding="utf-8")
    result = runner.invoke(
        app,
        ["inspect", str(trained_run), "--text", str(text), "--chars", "40", "--neuron", "0:0",
         "--html", str(tmp_path / "same.png"), "--png", str(tmp_path / "same.png")],
    )
    assert result.exit_code == 2 and "--png and --html both name" in result.stderr, result.stderr
    assert not (tmp_path / "same.png").exists()


def test_a_copied_checkpoint_is_not_the_default_export_output(trained_run, tmp_path):
    """`export ck.pt2` would write ck.pt2 beside itself: the checkpoint, which it must not
    destroy; `--out RUN/last.pt` likewise."""
    copied = tmp_path / "ck.pt2"
    copied.write_bytes((trained_run / "last.pt").read_bytes())
    before = copied.read_bytes()
    result = runner.invoke(app, ["export", str(copied)])
    assert result.exit_code == 2 and "the default --out" in result.stderr and "one of this command's inputs" in result.stderr
    assert copied.read_bytes() == before
    result = runner.invoke(app, ["export", str(trained_run), "--format", "onnx", "--out", str(trained_run / "last.pt")])
    assert result.exit_code == 2 and "--out" in result.stderr, result.stderr
    assert (trained_run / "last.pt").read_bytes() == (trained_run / "last.pt").read_bytes()


def test_a_figure_named_without_extension_is_checked_under_the_name_written(trained_run, tmp_path):
    """`--png RUN/last` writes RUN/last.png: the check reads that name, and a real file there
    that is an input (here the text, named text.png) is refused."""
    text = tmp_path / "text.png"
    text.write_text(small_text(3), encoding="utf-8")
    result = runner.invoke(app, ["gradients", str(trained_run), "--text", str(text), "--steps", "8", "--png", str(tmp_path / "text")])
    assert result.exit_code == 2 and "one of this command's inputs" in result.stderr, result.stderr


def test_the_c_export_takes_a_directory_or_a_c_file_and_refuses_the_rest(trained_run, tmp_path):
    """--format c writes DIR/model.c (DIR created) or a named .c file: a file or a FIFO where
    the directory would be is refused before the export, and so is a directory's model.c
    that is a FIFO."""
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    result = runner.invoke(app, ["export", str(trained_run), "--format", "c", "--out", str(plain)])
    assert result.exit_code == 2 and "is a file, not a directory; name a directory for the C source" in result.stderr, result.stderr
    assert plain.read_text() == "keep me"
    inside = tmp_path / "dir"
    inside.mkdir()
    os.mkfifo(inside / "model.c")
    result = runner.invoke(app, ["export", str(trained_run), "--format", "c", "--out", str(inside)])
    assert result.exit_code == 2 and "model.c is a FIFO" in result.stderr, result.stderr
    assert stat.S_ISFIFO(os.lstat(inside / "model.c").st_mode)
