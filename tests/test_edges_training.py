"""Edges of training and of what reads its text: run directories inside the text's directory,
a run that diverges before its first checkpoint, file names that are not UTF-8, one answer from
every command for a file that is not text, and the ranges of the exported C program's options.
Each goes through the real command line, with real training on a small text."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from charrnn import checkpoint
from tests.conftest import TINY_MODEL, TINY_TRAIN, small_text, train_small_run
from tests.test_bad_inputs import answered, invoke

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]
# A learning rate that makes the loss NaN within the first few steps (test_crash.py uses it too).
BLOW_UP = ["--lr", "1e30", "--warmup-steps", "0"]


def stopped(result, fragment: str) -> str:
    """A run that started and then stopped: the progress it printed, then one line of error."""
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("charrnn:")]
    assert len(lines) == 1 and result.stderr.rstrip().endswith(lines[0]), result.stderr
    assert fragment in lines[0], lines[0]
    return lines[0]


def trained(result):
    assert result.exit_code == 0, result.stderr
    return result


def corpus_of(run: Path) -> dict:
    return json.loads((run / "config.json").read_text(encoding="utf-8"))["corpus"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A two-step run: enough for every command that reads a model."""
    root = tmp_path_factory.mktemp("edges")
    os.environ.setdefault("CHARRNN_CACHE", str(root / "cache"))  # never the user's cache
    return train_small_run(root, dict(TINY_MODEL), {**TINY_TRAIN, "max_steps": 2})


# ------------------------------------------------------------- runs inside the text's directory


def test_a_run_directory_inside_the_text_directory_is_never_training_text(tmp_path, monkeypatch):
    """A run written into the directory a run trains on (with --out, or under checkpoints/
    when that directory is the working one) is left out of the next run's text, and says so."""
    text = tmp_path / "text"
    text.mkdir()
    (text / "verse.txt").write_text(small_text(), encoding="utf-8")
    trained(invoke("train", text, "--out", text / "run1", "--max-steps", 2, *TINY))
    first = corpus_of(text / "run1")

    monkeypatch.chdir(text)  # the default run directory, checkpoints/NAME, now lies inside the text
    again = trained(invoke("train", ".", "--max-steps", 2, *TINY))
    assert f"charrnn: warning: {Path('run1')} is a charrnn run directory, not text: left out of the training text" in again.stderr
    (default_run,) = (text / "checkpoints").iterdir()

    third = trained(invoke("train", text, "--out", tmp_path / "run3", "--max-steps", 2, *TINY))
    for run in (default_run, tmp_path / "run3"):
        assert [Path(f).name for f in corpus_of(run)["train_files"]] == ["verse.txt"]
        assert corpus_of(run)["fingerprint"] == first["fingerprint"]
    assert "checkpoints" in third.stderr and "run1" in third.stderr  # both skipped, both said
    assert first["fingerprint"]["train_ids"] + first["fingerprint"]["val_ids"] == len(small_text())


def test_a_checkpoint_or_a_run_directory_named_as_text_is_refused(tmp_path, text_file):
    trained(invoke("train", text_file, "--out", tmp_path / "run", "--max-steps", 2, *TINY))
    copied = tmp_path / "notes.txt"  # a checkpoint under a text file's name
    copied.write_bytes((tmp_path / "run" / checkpoint.LAST).read_bytes())
    answered(
        invoke("train", copied, "--out", tmp_path / "r2", "--max-steps", 1, *TINY),
        f"charrnn: corpus: {copied}: is a charrnn checkpoint, not text",
        1,
    )
    answered(
        invoke("train", tmp_path / "run", "--out", tmp_path / "r3", "--max-steps", 1, *TINY),
        f"charrnn: corpus: {tmp_path / 'run'}: is a charrnn run directory, not text; name the text it was trained on",
        1,
    )


# ------------------------------------------------------------ divergence and the run it leaves


def test_a_run_that_diverges_before_its_first_checkpoint_says_to_start_again(tmp_path, text_file):
    """No checkpoint: the message does not send the user to one; and training into the same
    directory again is refused instead of appending a second run to the first's metrics."""
    run = tmp_path / "run"
    result = invoke("train", text_file, "--out", run, "--max-steps", 20, *BLOW_UP, *TINY)
    line = stopped(result, "charrnn: training diverged: the ")
    assert "no checkpoint was written before it, so there is none to resume: start again with a lower --lr" in line
    assert f"with another --out (or remove {run}, which holds no checkpoint)" in line
    assert "Resume from" not in line and not (run / checkpoint.LAST).exists()
    metrics = (run / "metrics.jsonl").read_bytes()

    answered(
        invoke("train", text_file, "--out", run, "--max-steps", 2, *TINY),
        f"charrnn: invalid options: {run} already holds a run that wrote no checkpoint, so it cannot be resumed; "
        f"name another --out, or remove {run} to start again there",
        2,
    )
    assert (run / "metrics.jsonl").read_bytes() == metrics  # the diverged run's log is untouched


def test_a_run_that_diverges_after_a_checkpoint_names_its_step(tmp_path, text_file):
    run = tmp_path / "run"
    trained(invoke("train", text_file, "--out", run, "--max-steps", 2, *TINY))
    result = invoke("train", "--resume", run, "--max-steps", 40, "--checkpoint-every", 100, "--eval-every", 100, *BLOW_UP)
    line = stopped(result, "charrnn: training diverged:")
    assert "no checkpoint was written for it. Resume from the last checkpoint (step 2) with a lower --lr" in line
    assert checkpoint.load(run)["metrics"]["step"] == 2


def test_a_new_run_is_refused_where_a_run_has_only_its_best_checkpoint(tmp_path, text_file):
    run = tmp_path / "run"
    # An evaluation at step 2 writes best.pt; the periodic last.pt would come at step 5.
    trained(invoke("train", text_file, "--out", run, "--max-steps", 2, "--eval-every", 1, "--checkpoint-every", 5, *TINY))
    (run / checkpoint.LAST).unlink()  # as if stopped by a kill -9 before the first last.pt
    answered(
        invoke("train", text_file, "--out", run, "--max-steps", 2, *TINY),
        f"{run} already holds a run; continue it with --resume {run / checkpoint.BEST} or choose another --out",
        2,
    )


# ------------------------------------------------------------------- names that are not UTF-8


def charrnn(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in its own process, with arguments that may hold undecodable bytes (as lone
    surrogates, which subprocess encodes back to the bytes), and a stdout that refuses what is
    not UTF-8, as in an en_US.UTF-8 locale."""
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env["PYTHONIOENCODING"] = "utf-8:strict"
    return subprocess.run(
        [sys.executable, "-m", "charrnn", *map(str, args)], cwd=cwd, env=env, capture_output=True, timeout=300
    )


def succeeded(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0 and "Traceback" not in err and "internal error" not in err, err
    return err


def test_a_file_whose_name_is_not_utf8_trains_resumes_and_is_read_by_every_command(tmp_path):
    name = os.fsdecode(b"caf\xe9.txt")
    (tmp_path / name).write_text(small_text(30), encoding="utf-8")
    succeeded(charrnn("train", name, "--out", "run", "--max-steps", 2, *TINY, cwd=tmp_path))

    recorded = corpus_of(tmp_path / "run")["train_files"]
    assert recorded == [str((tmp_path / name).resolve())]  # the same bytes, through JSON's escapes
    toml_text = (tmp_path / "run" / "config.toml").read_text(encoding="utf-8")
    options = tomllib.loads(toml_text)
    assert "paths" not in options and options["layers"] == 1
    assert "'paths' is left out:" in toml_text and "caf\\xe9.txt is not a UTF-8 name" in toml_text

    succeeded(charrnn("train", "--resume", "run", "--extend-steps", 1, cwd=tmp_path))
    assert checkpoint.load(tmp_path / "run")["metrics"]["step"] == 3
    scored = charrnn("eval", "run", name, cwd=tmp_path)
    succeeded(scored)
    assert b" bpc " in scored.stdout
    succeeded(charrnn("inspect", "run", "--text", name, "--gates", "--chars", 50, cwd=tmp_path))
    succeeded(charrnn("inspect", "run", "--gates", "--chars", 50, cwd=tmp_path))  # the run's own text
    succeeded(charrnn("gradients", "run", "--text", name, "--steps", 20, cwd=tmp_path))

    # Without --out the run is named after the file: the name keeps its byte.
    succeeded(charrnn("train", name, "--max-steps", 1, *TINY, cwd=tmp_path))
    (made,) = (tmp_path / "checkpoints").iterdir()
    assert os.fsencode(made.name).startswith(b"caf\xe9-")


def test_a_bad_file_whose_name_is_not_utf8_is_named_with_its_byte_escaped(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")
    (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    done = charrnn("train", name, "--out", "run", "--max-steps", 1, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.decode("utf-8").strip() == (
        "charrnn: corpus: caf\\xe9.png: looks like a binary file (it contains a NUL byte at byte 8), not text"
    )


# ------------------------------------------------------- one answer for a file that is not text


def _binary(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    return path, "picture.png: looks like a binary file (it contains a NUL byte at byte 8), not text"


def _empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    return path, "empty.txt: file is empty"


def _latin1(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("[ROMEO] café\n".encode("latin-1"))
    return path, "latin1.txt: not valid utf-8 at byte 11 (invalid continuation byte); pass --encoding"


def _missing(tmp_path):
    return tmp_path / "nope.txt", "nope.txt: no such file, directory or corpus"


def _directory(tmp_path):
    path = tmp_path / "images"
    path.mkdir()
    (path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return path, "images: directory holds no non-empty text files"


def _fifo(tmp_path):
    path = tmp_path / "pipe.txt"
    os.mkfifo(path)
    return path, "pipe.txt: not a regular file (a pipe, socket or device)"


@pytest.mark.parametrize("make", [_binary, _empty, _latin1, _missing, _directory, _fifo], ids=lambda f: f.__name__[1:])
def test_train_eval_inspect_and_gradients_answer_a_file_that_is_not_text_alike(tiny_run, tmp_path, make):
    path, says = make(tmp_path)
    lines = {
        command[0]: answered(invoke(*command), f"charrnn: corpus: {tmp_path}/{says}", 1)
        for command in (
            ["train", path, "--out", tmp_path / "run", "--max-steps", 1, *TINY],
            ["eval", tiny_run, path],
            ["inspect", tiny_run, "--text", path, "--gates"],
            ["gradients", tiny_run, "--text", path],
        )
    }
    assert len(set(lines.values())) == 1, lines


# ------------------------------------------------------------- the exported C program's options


@pytest.fixture(scope="module")
def c_program(tiny_run, tmp_path_factory):
    from charrnn.export.c_model import find_compiler
    from tests.test_export_c import build

    if find_compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) on this machine, and CC is not set")
    return build(tiny_run, tmp_path_factory.mktemp("c"))[1]


LONG_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_long) - 1) - 1
INT_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_int) - 1) - 1
ULLONG_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_ulonglong)) - 1


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--length", "0", f"--length must be a whole number from 1 to {LONG_MAX}, not 0"),
        ("--length", str(LONG_MAX + 1), f"--length must be a whole number from 1 to {LONG_MAX}, not {LONG_MAX + 1}"),
        ("--length", "1e3", f"--length must be a whole number from 1 to {LONG_MAX}, not 1e3"),
        ("--length", "-5", f"--length must be a whole number from 1 to {LONG_MAX}, not -5"),
        ("--bench", "0", f"--bench must be a whole number from 1 to {LONG_MAX} (steps), not 0"),
        ("--top-k", str(INT_MAX + 1), f"--top-k must be a whole number from 0 to {INT_MAX} (0 keeps every character), not {INT_MAX + 1}"),
        ("--top-k", "2.5", f"--top-k must be a whole number from 0 to {INT_MAX} (0 keeps every character), not 2.5"),
        ("--seed", str(ULLONG_MAX + 1), f"--seed must be a whole number from 0 to {ULLONG_MAX}, not {ULLONG_MAX + 1}"),
        ("--seed", "", f"--seed must be a whole number from 0 to {ULLONG_MAX}, not "),
        ("--temperature", "nan", "--temperature must be a number >= 0 (0 is greedy), not nan"),
        ("--temperature", "-1", "--temperature must be a number >= 0 (0 is greedy), not -1"),
    ],
)
def test_the_c_programs_options_state_their_range(c_program, option, value, says):
    done = subprocess.run([str(c_program), option, value], capture_output=True, timeout=60)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == f"model: {says} (model --help lists the options)\n"


def test_the_c_program_takes_every_value_of_its_ranges_exactly(c_program):
    def draw(*args):
        done = subprocess.run([str(c_program), "--length", "200", "--temperature", "1", *args], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert draw("--seed", str(ULLONG_MAX), "--top-k", str(INT_MAX))
    # Through a double both would be 2**53: read as digits, they are two seeds.
    assert draw("--seed", str(2**53)) != draw("--seed", str(2**53 + 1))
    assert draw("--seed", str(2**53 + 1)) == draw("--seed", str(2**53 + 1))
