"""The benchmark's corpus-sized figures: a large text generated (or repeated from a file),
how fast it is encoded, the peak memory of a training process on it (a subprocess, so the
figure is that process's alone), and `charrnn sample`'s batched run against a single one."""

from __future__ import annotations

import codecs
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from charrnn.data.corpus import CHUNK_BYTES
from charrnn.data.vocab import Vocab, codepoints
from charrnn.errors import ConfigError
from charrnn.memory import largest_fitting, require_memory, size_text
from charrnn.text import shown

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
    if source is not None:
        block = source.read_bytes()
        if not block:
            # Repeating nothing would never reach the size asked for.
            raise ConfigError(f"--text {shown(source)}: file is empty")
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


# What the generated corpus's ids take each: its few letters and marks fit a uint8.
GENERATED_ID_BYTES = 1
# Beside the ids, ``encode_speed`` holds one piece of text at a time in several forms: the
# bytes read, the decoded str (up to 4 bytes a character), its UTF-32 code points, their ids
# as int32 and as the narrow type; 20 pieces' worth covers them with room to spare.
ENCODE_WORKING_BYTES = 20 * CHUNK_BYTES
# Beside the corpus and its ids the temporary directory gets two small training runs.
RUNS_BYTES = 64 * 2**20


def check_corpus(megabytes: int, source: Path | None, scratch: Path) -> None:
    """Refuse, before any measurement, the corpus ``_bench_memory`` would make: a ``source``
    (--text) that is not a readable UTF-8 text file, or a corpus that ``scratch``'s disk or
    this machine's memory cannot hold while it is encoded."""
    id_bytes = GENERATED_ID_BYTES
    if source is not None:
        check_source_file(source)
        # write_corpus holds the file, a piece of it the same size, and the last piece decoded.
        require_memory(3 * source.stat().st_size, f"repeating --text {shown(source)}", "name a smaller file")
        id_bytes = Vocab.from_codepoints(source_codepoints(source)).id_dtype.itemsize
    corpus = megabytes * 1_000_000
    per_mb = 1_000_000 * (1 + id_bytes)  # the text, and the ids training caches beside it
    free = shutil.disk_usage(scratch).free
    if corpus * (1 + id_bytes) + RUNS_BYTES > free:
        fits = (free - RUNS_BYTES) // per_mb
        smaller = f"give at most --corpus-mb {fits}, " if fits >= 1 else ""
        raise ConfigError(
            f"--corpus-mb {megabytes} needs about {size_text(corpus * (1 + id_bytes) + RUNS_BYTES)} free in "
            f"{shown(scratch)} (the corpus and its encoded ids), which has {size_text(free)}; "
            f"{smaller}set TMPDIR to a larger disk, or pass --no-memory"
        )
    # With the cache off, encode_files gathers every piece's ids and then joins them: the ids twice.
    per_byte = 2 * id_bytes
    fits = largest_fitting(per_byte * 1_000_000, fixed=ENCODE_WORKING_BYTES)
    smaller = f" (at most {fits})" if fits else ""
    require_memory(
        per_byte * corpus + ENCODE_WORKING_BYTES,
        f"encoding a {megabytes:,} MB corpus (--corpus-mb)",
        f"give a smaller --corpus-mb{smaller}, or pass --no-memory",
    )


def check_source_file(path: Path) -> None:
    """A ConfigError unless ``path`` is a regular file this process can read and is not empty."""
    where = f"--text {shown(path)}"
    if not path.exists():
        raise ConfigError(f"{where}: no such file")
    if path.is_dir():
        raise ConfigError(f"{where}: is a directory; name a text file")
    if not path.is_file():
        # Reading a FIFO, socket or device would block or never end.
        raise ConfigError(f"{where}: not a regular file (a pipe, socket or device), so not text to read")
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None
    if empty:
        raise ConfigError(f"{where}: file is empty")


def source_codepoints(path: Path) -> np.ndarray:
    """The distinct code points of the UTF-8 text ``path``, read in pieces; a
    ConfigError for bytes that are not UTF-8 or a NUL (the encoding pass refuses both, but
    only after the rest of the benchmark has run)."""
    where = f"--text {shown(path)}"
    decoder = codecs.getincrementaldecoder("utf-8")()
    present = np.zeros(0x110000, dtype=bool)
    consumed = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if (nul := chunk.find(b"\0")) >= 0:
                raise ConfigError(f"{where}: looks like a binary file (it contains a NUL byte at byte {consumed + nul}), not text")
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{where}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at byte "
                    f"{consumed - pending + exc.start}); bench reads its text as UTF-8"
                ) from None
            present[codepoints(text)] = True
            if not chunk:
                return np.flatnonzero(present)
            consumed += len(chunk)


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
