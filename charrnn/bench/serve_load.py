"""The serving benchmark (``charrnn bench --serve``): many streaming clients at once against
a real ``charrnn serve`` process.

The server runs as its own process (``python -m charrnn serve RUN --port 0``), as it would in
use; the clients are one asyncio loop in this process, each a raw HTTP/1.1 connection that
posts a streaming ``/v1/completions`` request, reads the server-sent events as they arrive
and starts its next request when one ends, until the level's time is up. Raw sockets rather
than an HTTP library: on a 2-core machine the clients share the cores with the server, and
a lean client takes less from it.

For each number of clients it reports the characters received per second by all of them
together, the time from sending a request to its first character (p50, p99) and the longest
gaps between the arrivals of characters (p99), and accounts for every request: completed,
answered with an error status, or failed (broken or hung past a timeout).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

CLIENTS = (1, 8, 32, 64)
PROMPT = "ROMEO:"
# A request still open this long after its level ended counts as hung.
HANG_SECONDS = 30.0
URL_LINE = re.compile(r"serving .* on http://([\d.]+):(\d+)")


@dataclass
class Level:
    clients: int
    seconds: float = 0.0
    sent: int = 0
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # HTTP status -> count
    failed: int = 0  # broken connection, bad stream, or hung
    chars: int = 0
    chars_per_s: float = 0.0
    ttfc_p50_ms: float | None = None
    ttfc_p99_ms: float | None = None
    gap_p99_ms: float | None = None
    busiest_step: int = 0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def accounted(self) -> bool:
        return self.completed + sum(self.errors.values()) + self.failed == self.sent


@dataclass
class ServeLoadResult:
    model: str
    precision: str  # the server's --precision: fp32 or bf16
    max_tokens: int
    level_seconds: float
    cpus: int
    levels: list[Level]
    # The served model's bare batched step on one thread (FastStepper.advance, the scheduler's
    # step), median ms by rows: N rows make N * step[1] / step[N] times the characters per
    # second of one row. Where one stream's speed is the step's (a model as large as the small
    # preset), that bounds what N clients can gain over one, before any sampling, HTTP or
    # client work is counted.
    step_ms: dict[int, float] = field(default_factory=dict)
    # How the step multiplies in bf16 here (one row; several rows), "" in fp32.
    step_path: str = ""

    def ceiling(self, rows: int) -> float | None:
        """Characters per second of ``rows`` rows stepped together, as a multiple of one row's."""
        if 1 not in self.step_ms or rows not in self.step_ms:
            return None
        return rows * self.step_ms[1] / self.step_ms[rows]

    def to_dict(self) -> dict:
        data = asdict(self)
        for level, row in zip(self.levels, data["levels"]):
            row["accounted"] = level.accounted
        data["ceiling"] = {rows: self.ceiling(rows) for rows in self.step_ms}
        return data


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@dataclass
class _Tally:
    chars: int = 0
    ttfc: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)


async def _one_request(host: str, port: int, body: bytes, level: Level, tally: _Tally) -> None:
    level.sent += 1
    started = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        status = int((await reader.readline()).split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if status != 200:
            await reader.read()
            level.errors[str(status)] = level.errors.get(str(status), 0) + 1
            return
        last, finished = None, False
        buffer = b""
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)  # chunked transfer coding
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            arrived = time.perf_counter()
            buffer += data[:-2]
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                payload = event[len(b"data: "):]
                if payload == b"[DONE]":
                    finished = True
                    continue
                choices = json.loads(payload).get("choices") or []
                made = sum(len(c["text"]) for c in choices)
                if made:
                    tally.chars += made
                    if last is None:
                        tally.ttfc.append(arrived - started)
                    else:
                        tally.gaps.append(arrived - last)
                    last = arrived
        if finished:
            level.completed += 1
        else:
            level.failed += 1
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
        level.failed += 1
    finally:
        if writer is not None:
            writer.close()


async def _client(host: str, port: int, body: bytes, until: float, level: Level, tally: _Tally) -> None:
    while time.perf_counter() < until:
        await _one_request(host, port, body, level, tally)


async def _level(host: str, port: int, clients: int, seconds: float, max_tokens: int, prompt: str) -> Level:
    level = Level(clients=clients, load_before=os.getloadavg())
    tally = _Tally()
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8, "stream": True}).encode()
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(_client(host, port, body, started + seconds, level, tally)) for _ in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=seconds + HANG_SECONDS)
    for task in pending:  # hung: its request is counted as failed
        task.cancel()
        level.failed += 1
    level.seconds = time.perf_counter() - started
    level.chars = tally.chars
    level.chars_per_s = tally.chars / level.seconds
    ms = lambda value: None if value is None else value * 1000  # noqa: E731
    level.ttfc_p50_ms, level.ttfc_p99_ms = ms(percentile(tally.ttfc, 50)), ms(percentile(tally.ttfc, 99))
    level.gap_p99_ms = ms(percentile(tally.gaps, 99))
    return level


def _health(host: str, port: int) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=10) as reply:
        return json.loads(reply.read())


STEP_REPEATS = 300


def bench_prompt(vocab) -> str:
    """PROMPT where the model's vocabulary holds its characters, else none (the model starts
    from its zero state, as at the start of a line): a request must not be refused for them."""
    from charrnn.errors import CharRNNError

    try:
        vocab.encode(PROMPT)
    except CharRNNError:
        return ""
    return PROMPT


def step_times(model, rows: tuple[int, ...], precision: str = "fp32") -> dict[int, float]:
    """Median ms of the served model's batched step (one thread) at each number of rows."""
    import numpy as np
    import torch

    from charrnn.generation.stepper import FastStepper
    from charrnn.precision import DTYPES
    from charrnn.threads import set_threads

    before = torch.get_num_threads()
    set_threads(1)
    try:
        stepper = FastStepper(model, DTYPES[precision])
        times = {}
        for n in sorted({1, *rows}):
            state, ids = stepper.initial_state(n), np.zeros(n, np.int64)
            for _ in range(STEP_REPEATS // 10):  # warm the caches and the BLAS
                stepper.advance(ids, state)
            samples = []
            for _ in range(STEP_REPEATS):
                started = time.perf_counter()
                stepper.advance(ids, state)
                samples.append(time.perf_counter() - started)
            times[n] = float(np.median(samples)) * 1000
        return times
    finally:
        set_threads(before)


def fresh_small_run(directory: Path) -> Path:
    """A small-preset run trained for one step on printable ASCII: the model's speed is what
    is measured, and a step does not change it."""
    from charrnn.training.runs import RunRequest, prepare_run, train_run

    text = directory / "ascii.txt"
    text.write_text("".join(chr(c) for c in range(32, 127)) * 200 + "\n", encoding="utf-8")
    run = prepare_run(RunRequest(sources=[str(text)], out=directory / "small", preset="small", train={"max_steps": 1}, device="cpu"))
    train_run(run, sample_chars=0)
    return directory / "small"


def run_serve_load(
    run: Path,
    clients: tuple[int, ...] = CLIENTS,
    seconds: float = 6.0,
    max_tokens: int = 400,
    progress: Callable[[str], None] = lambda message: None,
    precision: str = "fp32",
) -> ServeLoadResult:
    """The levels of clients against a server of ``run`` that computes in ``precision``, and
    its bare step at each level's rows (``run_serve_loads`` makes a model when none is given)."""
    from charrnn.model.loading import load_model

    # The bench's own copy: its vocabulary chooses the prompt, its step is the reference.
    served, vocab, _ = load_model(run, device="cpu")
    prompt = bench_prompt(vocab)
    most = max(clients)
    command = [
        sys.executable, "-m", "charrnn", "serve", str(run), "--port", "0",
        "--max-streams", str(most), "--max-queue", str(most), "--max-tokens-limit", str(max_tokens),
        "--precision", precision,
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        host, port = _wait_for_url(server)
        model = _health(host, port)["model"]
        levels = []
        for count in clients:
            progress(f"{precision}: {count} client{'s' if count > 1 else ''} for {seconds:g} s")
            level = asyncio.run(_level(host, port, count, seconds, max_tokens, prompt))
            level.busiest_step = _health(host, port)["streams"]["busiest_step"]
            levels.append(level)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    progress(f"{precision}: the bare batched step, one thread, for comparison")
    steps = step_times(served, clients, precision)
    return ServeLoadResult(
        model=model, precision=precision, max_tokens=max_tokens, level_seconds=seconds, cpus=os.cpu_count() or 1, levels=levels, step_ms=steps,
        step_path=_step_path(precision),
    )


def _step_path(precision: str) -> str:
    if precision != "bf16":
        return ""
    from charrnn.generation.native import describe_batched, describe_kernel

    return f"one row: {describe_kernel()}; several rows: {describe_batched()}"


def serving_precisions() -> tuple[str, ...]:
    """The precisions a server is measured in: fp32, and bf16 beside it where the CPU has
    native bf16 instructions."""
    from charrnn.device import cpu_bf16_flags

    return ("fp32", "bf16") if cpu_bf16_flags() else ("fp32",)


def run_serve_loads(run: Path | None, precisions: tuple[str, ...], progress: Callable[[str], None] = lambda message: None, **levels) -> list[ServeLoadResult]:
    """``run_serve_load`` in each precision, one server after the other, on one model."""
    with tempfile.TemporaryDirectory(prefix="charrnn-serve-bench-") as scratch:
        if run is None:
            progress("making a small-preset model (one training step)")
            run = fresh_small_run(Path(scratch))
        return [run_serve_load(run, progress=progress, precision=precision, **levels) for precision in precisions]


def _wait_for_url(server: subprocess.Popen, timeout: float = 120.0) -> tuple[str, int]:
    from charrnn.errors import CharRNNError

    found: list[tuple[str, int]] = []
    lines: list[str] = []

    def read() -> None:
        for line in server.stderr:
            lines.append(line)
            if (match := URL_LINE.search(line)) and not found:
                found.append((match.group(1), int(match.group(2))))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not found:
        raise CharRNNError("the server did not start: " + (lines[-1].strip() if lines else "no output"))
    return found[0]
