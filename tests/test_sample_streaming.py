"""Several samples at once: each written out as soon as its text is final, in order, with a
separator line after it, and everything made kept when Ctrl-C stops the batch. Checked on a
real trained model, against the batched samples the library makes, and through the real CLI
(in process, and as a real process sent SIGINT)."""

import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.generation.sample import SampleConfig, generate_batch, generate_ids, stream, stream_samples

runner = CliRunner()
SEPARATOR = re.compile(r"^--- sample (\d+) of (\d+) (complete|cut short) ---$", re.M)


def split_samples(stdout: str) -> list[tuple[str, str]]:
    """(text, status) per sample, split on the default separator lines as a script would."""
    samples, start = [], 0
    for match in SEPARATOR.finditer(stdout):
        assert int(match.group(1)) == len(samples) + 1
        text = stdout[start : match.start()]
        assert text.endswith("\n")
        samples.append((text[:-1], match.group(3)))
        start = match.end() + 1
    assert stdout[start:] == ""
    return samples


def reference(model, vocab, config: SampleConfig) -> list[str]:
    """The batch's samples decoded straight from the ids it draws, each cut at its first stop
    string: what the text must be, independently of how it is given out."""
    ids = [step.tolist() for step in generate_ids(model, vocab, config)]
    texts = [vocab.decode([row[i] for row in ids]) for i in range(config.num_samples)]
    for stop in config.stop:
        texts = [text.split(stop, 1)[0] for text in texts]
    return texts


class Counter:
    """A ``should_stop`` that answers True from its ``stop_at``-th question on."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.asked = 0
        self.stop_at = stop_at

    def __call__(self) -> bool:
        self.asked += 1
        return self.stop_at is not None and self.asked >= self.stop_at


def test_each_sample_comes_out_in_order_as_soon_as_its_text_is_final(model_and_vocab):
    model, vocab = model_and_vocab
    config = SampleConfig(length=300, seed=4, num_samples=4, temperature=1.0, prime="[", stop=("\n",))
    steps = Counter()  # asked once per character: how many characters were made so far
    seen = [(piece, steps.asked) for piece in stream_samples(model, vocab, config, should_stop=steps)]
    texts = reference(model, vocab, config)
    assert ["".join(p.text for p, _ in seen if p.sample == i) for i in range(4)] == texts
    assert generate_batch(model, vocab, config) == texts
    assert 1 < len({len(t) for t in texts})  # the stop string ends them at different places
    order = [p.sample for p, _ in seen]
    assert order == sorted(order)  # never a piece of a sample before the one before it ends
    assert [p.sample for p, _ in seen if p.last] == [0, 1, 2, 3] and not any(p.cut for p, _ in seen)
    # The first sample streams: a piece per character, given out as soon as it is made.
    first = [(p.text, at) for p, at in seen if p.sample == 0 and p.text]
    assert [at for _, at in first] == list(range(len(first))) and all(len(t) == 1 for t, _ in first)
    # A later sample's text made so far comes out when the one before it ends, not at the end.
    for i in range(1, 4):
        ended = max(at for p, at in seen if p.sample == i - 1)
        started = min(at for p, at in seen if p.sample == i)
        assert started == ended
    assert max(len(t) for t in texts) < config.length  # every sample met its stop string


@pytest.mark.parametrize("num_samples", [1, 3])
def test_stopping_gives_out_every_sample_as_made_so_far(model_and_vocab, num_samples):
    model, vocab = model_and_vocab
    options = dict(seed=11, num_samples=num_samples, temperature=1.0, prime="[R")
    pieces = list(stream_samples(model, vocab, SampleConfig(length=5000, **options), should_stop=Counter(40)))
    texts = ["".join(p.text for p in pieces if p.sample == i) for i in range(num_samples)]
    # The same characters as a batch asked for exactly as many: nothing lost, nothing changed.
    assert texts == reference(model, vocab, SampleConfig(length=40, **options))
    assert [(p.sample, p.cut) for p in pieces if p.last] == [(i, True) for i in range(num_samples)]
    if num_samples == 1:
        assert texts[0] == "".join(stream(model, vocab, SampleConfig(length=40, **options)))
    # Asked after the last character, the answer no longer matters: the samples are complete.
    done = list(stream_samples(model, vocab, SampleConfig(length=40, **options), should_stop=Counter(40)))
    assert not any(p.cut for p in done)


def test_cli_writes_a_separator_line_after_each_sample(trained_run, model_and_vocab):
    model, vocab = model_and_vocab
    args = ["sample", str(trained_run), "--num-samples", "3", "--length", "120", "--seed", "6", "--prime", "[J"]
    result = runner.invoke(app, args + ["--stop", "\n"])
    assert result.exit_code == 0, result.stderr
    expected = reference(model, vocab, SampleConfig(length=120, seed=6, num_samples=3, prime="[J", temperature=0.8, stop=("\n",)))
    assert split_samples(result.stdout) == [("[J" + text, "complete") for text in expected]
    assert "--- sample" not in result.stderr  # the separators are on stdout only

    custom = runner.invoke(app, args + ["--separator", "@@ {i}/{n} {status} {x} @@"])
    assert custom.exit_code == 0, custom.stderr
    lines = custom.stdout.split("\n")
    assert [line for line in lines if "@@" in line] == ["@@ 1/3 complete {x} @@", "@@ 2/3 complete {x} @@", "@@ 3/3 complete {x} @@"]
    assert lines[-2] == "@@ 3/3 complete {x} @@" and lines[-1] == ""
    one = runner.invoke(app, ["sample", str(trained_run), "--length", "30", "--seed", "6"])
    assert one.exit_code == 0 and "---" not in one.stdout and len(one.stdout) == 31


def test_cli_warns_when_a_sample_holds_a_separator_line(trained_run):
    # The prime is printed with each sample, so its first line is in every one of them.
    result = runner.invoke(
        app,
        ["sample", str(trained_run), "--num-samples", "2", "--length", "10", "--prime", "[ROMEO]\n", "--separator", "[ROMEO]"],
    )
    assert result.exit_code == 0, result.stderr
    assert "warning: sample 1, 2 has a line equal to a separator line; choose another with --separator" in result.stderr
    quiet = runner.invoke(app, ["sample", str(trained_run), "--num-samples", "2", "--length", "10", "--prime", "[ROMEO]\n"])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def _read_until(stream, predicate, timeout: float) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while not predicate(got):
        assert time.monotonic() < deadline, f"no such output in {timeout} s: {got[-300:]!r}"
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"the process ended early: {got[-300:]!r}"
            got += chunk
    return got


@pytest.mark.parametrize("num_samples", [1, 3])
def test_ctrl_c_writes_out_every_sample_made_so_far(trained_run, model_and_vocab, num_samples):
    model, vocab = model_and_vocab
    prime = "[MERCUTIO]"
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "sample", str(trained_run), "--num-samples", str(num_samples),
         "--length", "100000000", "--seed", "5", "--temperature", "1", "--prime", prime],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        # Text arrives while the batch is being made (it would take hours to finish).
        head = _read_until(proc.stdout, lambda got: len(got) > 200, timeout=120)
        proc.send_signal(signal.SIGINT)
        rest, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    stdout, stderr = (head + rest).decode("utf-8"), stderr.decode("utf-8")
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    if num_samples == 1:
        assert stdout.startswith(prime) and stdout.endswith("\n")
        texts = [stdout[len(prime) : -1]]
        assert stderr.splitlines()[-1] == "charrnn: interrupted: the sample was cut short; what was made is on stdout"
    else:
        samples = split_samples(stdout)
        assert [status for _, status in samples] == ["cut short"] * num_samples
        assert all(text.startswith(prime) for text, _ in samples)
        texts = [text[len(prime) :] for text, _ in samples]
        assert stderr.splitlines()[-1] == (
            "charrnn: interrupted: 3 of 3 samples cut short (1, 2, 3); what was made is on stdout"
        )
    made = len(texts[0])
    assert made >= 60 and all(len(text) == made for text in texts)  # 200+ bytes, 3 at most each
    # Exactly the characters the same seed makes when asked for that many: none lost.
    config = SampleConfig(length=made, seed=5, num_samples=num_samples, temperature=1.0, prime=prime)
    assert texts == reference(model, vocab, config)
