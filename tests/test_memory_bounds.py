"""Commands that would hold more memory than the machine can give are refused before they take
it, with the figure and the option that makes it smaller; the figure is checked against the
peak RSS of the real command; a big batch of samples still stops at once on Ctrl-C.

Every command runs as a subprocess under an address-space limit (RLIMIT_AS), so that a
regression fails here instead of taking the machine's memory."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_TRAIN, small_text, train_small_run

GIB = 2**30
LIMIT = 3 * GIB

# Runs a command as its child and reports the child's peak RSS (ru_maxrss, KiB on Linux).
_MEASURED = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
    "sys.stderr.write(done.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    "sys.exit(done.returncode)\n"
)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(NO_COLOR="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def charrnn(*args) -> tuple[int, str, int, float]:
    """Exit code, stderr, peak RSS in bytes and seconds of ``charrnn ARGS`` under the limit."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, sys.executable, "-m", "charrnn", *map(str, args)],
        capture_output=True, text=True, env=_env(), preexec_fn=_limited, timeout=300,
    )  # fmt: skip
    return done.returncode, done.stderr, int(done.stdout.split()[-1]), time.perf_counter() - started


def refusal(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def long_text(tmp_path_factory) -> Path:
    """About 4 million characters of the verse (it holds non-Latin-1 characters)."""
    path = tmp_path_factory.mktemp("text") / "long.txt"
    verse = small_text()
    path.write_text(verse * (4_000_000 // len(verse) + 1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory) -> Path:
    """A 2x512 LSTM trained one step: a step of 60,000 samples is ~400 GFLOP, seconds of work."""
    root = tmp_path_factory.mktemp("wide")
    return train_small_run(
        root, {"layers": 2, "hidden": 512, "embed": 16, "dropout": 0.0}, {**TINY_TRAIN, "max_steps": 1, "eval_every": 1}, sample_chars=0
    )


# --------------------------------------------------------------------------- refusals


def _figure(line: str) -> float:
    found = re.search(r"would need about ([\d,.]+) (GiB|MiB)", line)
    assert found, line
    return float(found.group(1).replace(",", "")) * (GIB if found.group(2) == "GiB" else 2**20)


def _fits(line: str, option: str) -> int:
    found = re.search(rf"at most {option} ([\d,]+) fits", line)
    assert found, line
    return int(found.group(1).replace(",", ""))


def test_inspect_refuses_states_that_would_not_fit_naming_chars(trained_run, long_text):
    code, err, peak, seconds = charrnn("inspect", trained_run, "--gates", "--text", long_text, "--chars", 10**12)
    line = refusal(err)
    # Refused before the text is read: the states it would keep counted per character read.
    assert code == 1 and line.startswith("charrnn: out of memory: reading "), line
    assert _figure(line) > LIMIT  # ~4 million characters x 1,856 bytes of a 2x32 LSTM's states
    assert 0 < _fits(line, "--chars") < 4_000_000
    assert peak < 800 * 2**20 and seconds < 60, (peak, seconds)


def test_gradients_refuses_a_graph_that_would_not_fit_naming_steps(trained_run, long_text):
    code, err, peak, seconds = charrnn("gradients", trained_run, "--text", long_text, "--steps", 3_000_000)
    line = refusal(err)
    assert code == 1 and line.startswith("charrnn: out of memory: following the gradient back 3,000,000 steps"), line
    assert _figure(line) > 100 * GIB  # ~42 KB of autograd graph per step of a 2x32 LSTM
    assert 0 < _fits(line, "--steps") < 100_000
    assert peak < 800 * 2**20 and seconds < 60, (peak, seconds)


def test_sample_refuses_a_batch_that_would_not_fit_naming_num_samples(trained_run):
    code, err, peak, seconds = charrnn("sample", trained_run, "--num-samples", 10**8, "--length", 3, "--seed", 1)
    line = refusal(err)
    assert code == 1 and line.startswith("charrnn: out of memory: 100,000,000 samples of 3 characters"), line
    assert _figure(line) > 10 * GIB
    assert 0 < _fits(line, "--num-samples") < 10**8
    assert peak < 800 * 2**20 and seconds < 60, (peak, seconds)


def test_beam_search_refuses_beams_that_would_not_fit_naming_beam(trained_run):
    code, err, peak, seconds = charrnn("sample", trained_run, "--beam", 10**8, "--length", 3)
    line = refusal(err)
    assert code == 1 and line.startswith("charrnn: out of memory: 100,000,000 beams"), line
    assert 0 < _fits(line, "--beam") < 10**8
    assert peak < 800 * 2**20 and seconds < 60, (peak, seconds)


# --------------------------------------------------------------------------- estimates


def _growth(tiny: list, moderate: list) -> int:
    """Peak RSS of ``moderate`` less that of ``tiny``: what the size itself costs."""
    results = [charrnn(*args) for args in (tiny, moderate)]
    for code, err, _, _ in results:
        assert code == 0, err
    return results[1][2] - results[0][2]


def _in_band(measured: int, estimate: float) -> None:
    # Never far above the estimate (it refuses on it), and not so far below that it would
    # refuse work that fits.
    assert 0.4 * estimate <= measured <= 1.5 * estimate, (measured / 2**20, estimate / 2**20)


@pytest.mark.slow
def test_inspect_estimate_against_measured_peak(trained_run, long_text):
    from charrnn.inspect.replayed import replay_bytes_per_char
    from charrnn.inspect.text import TEXT_BYTES_PER_CHAR
    from charrnn.model.loading import load_model

    config = load_model(trained_run, device="cpu")[0].config
    chars, tiny = 200_000, 1_000
    args = ["inspect", trained_run, "--gates", "--text", long_text, "--threads", 1, "--chars"]
    per_char = TEXT_BYTES_PER_CHAR + replay_bytes_per_char(config.cell, config.layers, config.hidden)
    _in_band(_growth(args + [tiny], args + [chars]), (chars - tiny) * per_char)


@pytest.mark.slow
def test_gradients_estimate_against_measured_peak(trained_run, long_text):
    from charrnn.inspect.gradients import gradient_bytes_per_step
    from charrnn.model.loading import load_model

    config = load_model(trained_run, device="cpu")[0].config
    steps, tiny = 4_000, 10
    args = ["gradients", trained_run, "--text", long_text, "--threads", 1, "--steps"]
    per_step = gradient_bytes_per_step(config.cell, config.layers, config.hidden, config.embed)
    _in_band(_growth(args + [tiny], args + [steps]), (steps - tiny) * per_step)


@pytest.mark.slow
def test_sample_estimate_against_measured_peak(trained_run):
    from charrnn.generation.batch_memory import sample_memory
    from charrnn.generation.sample import SampleConfig
    from charrnn.model.loading import load_model

    model, vocab, _ = load_model(trained_run, device="cpu")
    n, tiny = 100_000, 2

    def estimate(count: int) -> int:
        return sample_memory(model.config, SampleConfig(num_samples=count, length=3, seed=1), "cpu", vocab)

    args = ["sample", trained_run, "--length", 3, "--seed", 1, "--threads", 1, "--num-samples"]
    _in_band(_growth(args + [tiny], args + [n]), estimate(n) - estimate(tiny))


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("options", [{}, {"prime": "[ROMEO] "}, {"top_k": 5, "repetition_penalty": 1.3, "prime": "Good"}, {"engine": "fast"}, {"temperature": 0}])
def test_a_batch_stepped_in_pieces_makes_the_same_text_as_stepped_whole(model_and_vocab, monkeypatch, options):
    import charrnn.generation.batch_memory as pieces
    import charrnn.generation.sample as sampling

    model, vocab = model_and_vocab
    config = sampling.SampleConfig(num_samples=37, length=40, seed=3, **options)
    whole = sampling.generate_batch(model, vocab, config)
    # Five samples a piece for every step, fewer for a prime.
    monkeypatch.setitem(pieces.PIECE_FLOPS, "cpu", pieces.step_flops(model.config) * 5)
    assert pieces.piece_rows(model.config) == 5
    assert sampling.generate_batch(model, vocab, config) == whole



@pytest.mark.slow
def test_ctrl_c_stops_a_big_batch_within_a_second_or_two(wide_run):
    """60,000 samples of a 2x512 LSTM: a step of the whole batch is seconds of work (4.6 s
    from Ctrl-C to the first cut sample when it was asked once per step), so the question
    has to come between pieces of a step. The samples made so far come out at once."""
    n = 60_000
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "sample", str(wide_run), "--num-samples", str(n), "--length", "100",
         "--seed", "1", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), preexec_fn=_limited,
    )  # fmt: skip
    first_output = threading.Event()
    first_cut: list[float] = []
    out = bytearray()

    def read() -> None:
        while chunk := proc.stdout.read1(65536):
            out.extend(chunk)
            first_output.set()
            if not first_cut and b"cut short ---" in out:
                first_cut.append(time.perf_counter())

    errors = bytearray()
    readers = [threading.Thread(target=read, daemon=True), threading.Thread(target=lambda: errors.extend(proc.stderr.read()), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        assert first_output.wait(180), "no sample began"
        time.sleep(0.5)  # well inside a step of the whole batch
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    for reader in readers:
        reader.join(10)
    err = errors.decode()
    assert first_cut, err
    assert first_cut[0] - sent < 2.0, first_cut[0] - sent
    assert proc.returncode == 130, err
    text = out.decode("utf-8")
    assert text.count(f" of {n} cut short ---") == n  # every sample was given out, marked cut
    assert err.strip().splitlines()[-1].startswith(f"charrnn: interrupted: {n} of {n} samples cut short")
