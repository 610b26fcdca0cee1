"""The benchmark's corpus-sized figures: a large text generated (or repeated from a file),
how fast it is encoded, the peak memory of a training process on it (a subprocess, so the
figure is that process's alone), and `charrnn sample`'s batched run against a single one."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Samples in one batch, for the batched-sampling figures.
BATCHED_SAMPLES = 64


def cli_sampling_ratio(run: Path, samples: int = BATCHED_SAMPLES, length: int = 1000) -> dict:
    """Wall time of ``charrnn sample`` for one sample and for ``samples`` in one batch: N
    separate runs take N times the first, so the ratio of rates is N * t1 / tN."""

    def wall(n: int) -> float:
        command = [sys.executable, "-m", "charrnn", "sample", str(run), "--length", str(length),
                   "--seed", "1", "--num-samples", str(n)]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started

    one, batched = wall(1), wall(samples)
    return {"one_run_s": one, "batched_run_s": batched, "ratio": samples * one / batched}


# -- memory and encoding -----------------------------------------------------------------


def write_corpus(path: Path, megabytes: int, source: Path | None = None) -> int:
    """A text of about ``megabytes`` MB: ``source`` repeated, or generated words."""
    if source is not None and source.is_file():
        block = source.read_bytes()
    else:
        rng = np.random.default_rng(0)
        words = ["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(1, 9))) for _ in range(5000)]
        lines = [" ".join(rng.choice(words, 12)).capitalize() + ".\n" for _ in range(20000)]
        block = "".join(lines).encode("utf-8")
    target = megabytes * 1_000_000
    with open(path, "wb") as handle:
        written = 0
        while written < target:
            piece = block[: target - written]
            if len(piece) < len(block):
                # The last piece ends on a character boundary, so the text stays valid UTF-8.
                piece = piece.decode("utf-8", errors="ignore").encode("utf-8")
                target = written + len(piece)
            handle.write(piece)
            written += len(piece)
    return written


def encode_speed(path: Path) -> dict:
    """Both passes (vocabulary, then ids) without the cache, in M chars/s."""
    from charrnn.data import corpus

    previous = os.environ.get("CHARRNN_CACHE")
    os.environ["CHARRNN_CACHE"] = "off"
    try:
        started = time.perf_counter()
        points = corpus.collect_codepoints([path], "utf-8")
        vocab_s = time.perf_counter() - started
        from charrnn.data.vocab import Vocab

        vocab = Vocab.from_codepoints(points)
        started = time.perf_counter()
        ids = corpus.encode_files([path], vocab, "utf-8")
        encode_s = time.perf_counter() - started
    finally:
        if previous is None:
            os.environ.pop("CHARRNN_CACHE", None)
        else:
            os.environ["CHARRNN_CACHE"] = previous
    chars = len(ids)
    return {
        "chars": chars,
        "vocab_pass_mchars_per_s": chars / vocab_s / 1e6,
        "encode_pass_mchars_per_s": chars / encode_s / 1e6,
        "both_passes_mchars_per_s": chars / (vocab_s + encode_s) / 1e6,
    }


def training_peak_rss(path: Path, cache: Path, out: Path, steps: int = 3) -> dict:
    """Peak RSS (bytes) of ``charrnn train`` on ``path`` for a few steps, in its own process."""
    command = [
        sys.executable, "-m", "charrnn", "train", str(path), "--preset", "small",
        "--max-steps", str(steps), "--eval-chars", "20000", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    env = dict(os.environ, CHARRNN_CACHE=str(cache), NO_COLOR="1")
    started = time.perf_counter()
    peaks: dict[str, int] = {}
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        # The child's own high-water mark, polled from /proc: ru_maxrss from wait4 would
        # count the pages this (large) benchmark process had when it forked the child.
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name in ("VmHWM", "RssAnon", "RssFile"):
                        peaks[name] = max(peaks.get(name, 0), int(value.split()[0]) * 1024)
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.02)
        if process.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-500:]
            raise RuntimeError(f"the training subprocess failed: {tail}")
    return {
        "peak_rss_bytes": peaks.get("VmHWM"),
        "peak_anon_bytes": peaks.get("RssAnon"),
        "peak_file_bytes": peaks.get("RssFile"),
        "seconds": time.perf_counter() - started,
    }


# -- the whole benchmark ---------------------------------------------------------------


# A GPU's throughput row: cuDNN's step is launch-bound at the training default, so the
# second row shows what the hardware does once a step carries enough work (large corpora).
