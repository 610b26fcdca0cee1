"""Options whose values no machine can honour or that a command would silently drop: a thread
count in the hundred thousands (from --threads or OMP_NUM_THREADS), a benchmark corpus bigger
than the disk or the memory, a --text that is not a readable text file, two of bench's
"instead" benchmarks at once or an option the chosen one does not read, and a --cors value
that is not an origin. Each is answered in one line through the real command line, before the
command's work starts: the functions that would start it are replaced by ones that fail the
test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import namedtuple

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.errors import ConfigError
from charrnn.threads import available_cores, most_threads
from tests.conftest import REPO

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]
ABSURD = 100_000


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def answered(result, fragment: str, code: int = 2) -> str:
    """Exit ``code``, nothing on stdout, one line on stderr containing ``fragment``."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]
    return lines[0]


def _started(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} started")

    return fail


@pytest.fixture
def no_work(monkeypatch):
    """Every measurement bench could start, and the reading of training text, fail the test."""
    import charrnn.bench.contention
    import charrnn.bench.export_speed
    import charrnn.bench.serve_load
    import charrnn.bench.speed
    import charrnn.bench.startup
    import charrnn.threads
    import charrnn.training.runs

    monkeypatch.setattr(charrnn.bench.speed, "_bench_training", _started("the training measurement"))
    monkeypatch.setattr(charrnn.bench.speed, "_bench_memory", _started("the memory measurement"))
    monkeypatch.setattr(charrnn.bench.contention, "run_contention", _started("the contention bench"))
    monkeypatch.setattr(charrnn.bench.startup, "run_startup", _started("the startup bench"))
    monkeypatch.setattr(charrnn.bench.serve_load, "run_serve_load", _started("the serve bench"))
    monkeypatch.setattr(charrnn.bench.export_speed, "run_export_bench", _started("the export bench"))
    monkeypatch.setattr(charrnn.training.runs, "resolve_sources", _started("reading the training text"))
    # A count past the limit set in this process would stay set for the tests after it.
    monkeypatch.setattr(charrnn.threads, "set_threads", _started("setting the thread count"))
    monkeypatch.setattr(charrnn.bench.speed, "set_threads", _started("setting the thread count"))


# ------------------------------------------------------------------------------ thread counts


def _threads_refused(source: str, count: int) -> str:
    cores = available_cores()
    return f"{source} is more than this machine can run: it has {cores} core{'s' if cores != 1 else ''}; "


@pytest.mark.parametrize("command", ["train", "sample", "bench", "serve"])
def test_an_absurd_thread_count_is_refused_before_any_work(command, text_file, trained_run, tmp_path, no_work):
    args = {
        "train": ["train", text_file, *TINY, "--out", tmp_path / "run"],
        "sample": ["sample", trained_run, "--length", "50"],
        "bench": ["bench"],
        # A run that is not there: the options are checked before the model is looked for.
        "serve": ["serve", tmp_path / "no-run"],
    }[command]
    line = answered(invoke(*args, "--threads", ABSURD), _threads_refused(f"--threads {ABSURD}", ABSURD))
    assert line.startswith("charrnn: invalid options: ") and line.endswith(f"give at most {most_threads()}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_an_absurd_thread_count_in_the_environment_names_the_variable(variable, text_file, tmp_path, no_work):
    result = invoke("train", text_file, *TINY, "--out", tmp_path / "run", env={variable: str(ABSURD)})
    line = answered(result, _threads_refused(f"{variable}={ABSURD}", ABSURD))
    assert line.endswith(f"set it to at most {most_threads()}")
    assert not (tmp_path / "run").exists()


def test_the_thread_limit_allows_eight_per_core_and_at_least_64():
    assert most_threads(1) == 64 and most_threads(2) == 64 and most_threads(16) == 128


def test_oversubscription_up_to_the_limit_still_runs(text_file, tmp_path):
    # In a process of its own: the count stays set in the process that runs it.
    limit = most_threads()
    command = [sys.executable, "-m", "charrnn", "train", str(text_file), *TINY, "--max-steps", "1",
               "--eval-every", "1", "--out", str(tmp_path / "run"), "--threads", str(limit)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, NO_COLOR="1"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"threads: {limit} (--threads)" in done.stderr


# ------------------------------------------------------------------------- bench's corpus


def test_a_corpus_bigger_than_the_disk_is_refused_before_measuring(no_work):
    line = answered(invoke("bench", "--corpus-mb", 1_000_000_000), "--corpus-mb 1000000000 needs about ")
    assert "the corpus and its encoded ids" in line and "pass --no-memory" in line


def test_a_corpus_bigger_than_the_memory_is_refused_before_measuring(monkeypatch, no_work):
    import charrnn.memory

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(2**50, 0, 2**50))
    monkeypatch.setattr(charrnn.memory, "usable_memory", lambda device=None: 2**30)
    # 2,000 MB of one-byte ids, gathered and then joined: about 3.8 GiB against 1 GiB.
    line = answered(invoke("bench", "--corpus-mb", 2000), "encoding a 2,000 MB corpus (--corpus-mb) would need about ", code=1)
    assert line.startswith("charrnn: out of memory: ") and "give a smaller --corpus-mb (at most " in line


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    return tmp_path / "pipe.txt"


def _written(name: str, data: bytes):
    def make(tmp_path):
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    return make


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda tmp_path: tmp_path / "nope.txt", "nope.txt: no such file"),
        (lambda tmp_path: tmp_path, ": is a directory; name a text file"),
        (_fifo, "pipe.txt: not a regular file (a pipe, socket or device)"),
        (_written("empty.txt", b""), "empty.txt: file is empty"),
        (_written("latin.txt", b"caf\xe9\n"), "latin.txt: not UTF-8 text (byte 0xe9 at byte 3)"),
        (_written("image.txt", b"PNG\0\0"), "image.txt: looks like a binary file (it contains a NUL byte at byte 3)"),
    ],
    ids=["missing", "directory", "fifo", "empty", "not-utf8", "binary"],
)
def test_a_text_bench_cannot_repeat_is_refused_before_measuring(make, fragment, tmp_path, no_work):
    path = make(tmp_path)
    line = answered(invoke("bench", "--text", path), fragment)
    assert line.startswith(f"charrnn: invalid options: --text {path}")


# -------------------------------------------------------------------------- bench's modes


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--contention", "--startup"], "--contention and --startup are separate benchmarks: give one of them"),
        (["--startup", "--serve"], "--startup and --serve are separate benchmarks"),
        (["--serve-run", "RUN", "--export", "RUN"], "--export and --serve-run are separate benchmarks"),
        (["--contention", "--startup", "--serve"], "--contention, --startup and --serve are separate benchmarks"),
        (["--contention", "--preset", "small", "--cell", "gru"], "--contention does not use --preset and --cell: drop them"),
        (["--startup", "--threads", "1"], "--startup does not use --threads: drop it"),
        (["--serve", "--batch-size", "4"], "--serve does not use --batch-size: drop it"),
        (["--serve", "--device", "cpu"], "--serve does not use --device: drop it"),
        (["--contention", "--no-memory"], "--contention does not use --no-memory: drop it"),
        (["--startup", "--no-sampling", "--grad-stats-cost"], "--startup does not use --no-sampling and --grad-stats-cost"),
        (["--contention", "--corpus-mb", "5", "--seq-len", "8"], "--contention does not use --seq-len and --corpus-mb"),
        (["--export", "RUN", "--long"], "--export does not use --long: drop it"),
        (["--contention", "--export-chars", "100"], "--contention does not use --export-chars"),
        (["--export-chars", "100"], "--export-chars sets what --export measures: give --export RUN too"),
        (["--no-memory", "--corpus-mb", "5"], "--corpus-mb sets the corpus that the memory figures measure, which --no-memory leaves out"),
        (["--no-memory", "--text", "t.txt"], "--text sets the corpus that the memory figures measure"),
    ],
    ids=[
        "contention-startup", "startup-serve", "serve-run-export", "three-at-once", "contention-preset-cell",
        "startup-threads", "serve-batch-size", "serve-device", "contention-no-memory", "startup-no-sampling-grad-stats",
        "contention-seq-len-corpus-mb", "export-long", "contention-export-chars", "export-chars-alone",
        "no-memory-corpus-mb", "no-memory-text",
    ],
)
def test_bench_refuses_two_benchmarks_and_options_the_chosen_one_ignores(args, fragment, no_work):
    answered(invoke("bench", *args), fragment)


@pytest.mark.parametrize(
    "args, reached",
    [
        (["--serve", "--serve-run", "RUN", "--long"], "run_serve_load"),
        (["--serve-run", "RUN"], "run_serve_load"),
        (["--startup", "--long"], "run_startup"),
        (["--contention", "--long"], "run_contention"),
        (["--export", "RUN", "--export-chars", "100"], "run_export_bench"),
    ],
    ids=["serve-serve-run-long", "serve-run", "startup-long", "contention-long", "export-export-chars"],
)
def test_each_benchmark_takes_the_options_it_reads(args, reached, monkeypatch, no_work):
    """The mode check refuses no option a benchmark reads: each of these reaches its benchmark
    (replaced here by one that answers with its own name)."""
    import charrnn.bench.contention
    import charrnn.bench.export_speed
    import charrnn.bench.serve_load
    import charrnn.bench.startup

    for module in (charrnn.bench.contention, charrnn.bench.export_speed, charrnn.bench.serve_load, charrnn.bench.startup):
        if hasattr(module, reached):

            def answer(*a, **k):
                raise ConfigError(f"reached {reached}")

            monkeypatch.setattr(module, reached, answer)
    answered(invoke("bench", *args), f"reached {reached}")


# ---------------------------------------------------------------------------- serve --cors


@pytest.mark.parametrize(
    "origin, hint",
    [
        ("not an origin", ""),
        ("example.com", ""),
        ("ftp://example.com", ""),
        ("http://example.com:99999", ""),
        ("http://example.com/", " (browsers send http://example.com)"),
        ("https://Example.COM/app", ""),
        ("HTTPS://Example.COM", " (browsers send https://example.com)"),
        ("https://example.com:443", " (browsers send https://example.com)"),
    ],
    ids=["words", "no-scheme", "ftp", "port-out-of-range", "trailing-slash", "path", "capitals", "default-port"],
)
def test_a_cors_value_that_is_not_an_origin_is_refused_before_serving(origin, hint, tmp_path):
    # A run that is not there: the options are checked before the model is looked for.
    line = answered(invoke("serve", tmp_path / "no-run", "--cors", origin), f"--cors {origin!r} is not an origin as a browser sends it")
    assert line.endswith("or * for every origin" + hint)


def test_origins_as_browsers_send_them_and_the_wildcard_are_taken(tmp_path):
    origins = ["http://localhost:8080", "https://example.com", "http://127.0.0.1:3000", "http://[::1]:5173", "*"]
    args = [part for origin in origins for part in ("--cors", origin)]
    # Past the options to the run, which is not there.
    answered(invoke("serve", tmp_path / "no-run", *args), "charrnn: checkpoint: ", code=1)
