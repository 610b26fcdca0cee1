"""How long a running stream waits between two pieces of its text while another client's
long prompt is primed: the measurement behind docs/serve.md's priming figures, and the
helper of the test that bounds it (tests/test_serve_edges.py).

    python -m tests.prime_gap RUN [PROMPT_CHARS ...]

starts `charrnn serve RUN` on a free loopback port, holds one stream open, sends each long
prompt in turn (one request at a time, max_tokens 1), and prints the stream's largest gap
with no long prompt and during each one."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

from tests.serving import ServerProcess, open_stream, wait_until

OPTIONS = ("--max-prompt", "1000000", "--max-body", "8000000", "--max-tokens-limit", "100000000")


class Reader:
    """Reads a held stream on its own thread, noting when each piece arrives."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.arrivals = sock, []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while self.sock.recv(65536):
                self.arrivals.append(time.perf_counter())
        except OSError:
            pass

    def largest_gap(self, start: float, end: float) -> float:
        """The longest wait between two arrivals that overlaps [start, end]."""
        times = list(self.arrivals)
        return max((b - a for a, b in zip(times, times[1:]) if b >= start and a <= end), default=float("inf"))


def post(port: int, path: str, body: bytes) -> tuple[int, dict]:
    """One request on a raw socket (the body is serialised before the clock starts)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def long_prompt(chars: int, text: str) -> str:
    return (text * (chars // len(text) + 1))[:chars]


def measure(port: int, sizes: list[int], text: str, quiet: float = 1.0, predict: int = 1, seed: int = 0) -> dict:
    """Against one held stream: {"no prompt": its largest gap over ``quiet`` seconds, size:
    (its largest gap while that prompt was sent and primed, the prompt's priming seconds,
    the /api/generate reply), ...}."""
    held = open_stream(port, "/v1/completions", {"max_tokens": 10**8, "stream": True, "seed": 1})
    reader = Reader(held)
    try:
        assert wait_until(lambda: len(reader.arrivals) > 5, timeout=30)
        start = time.perf_counter()
        time.sleep(quiet)
        results: dict = {"no prompt": reader.largest_gap(start, time.perf_counter())}
        for size in sizes:
            body = {"prompt": long_prompt(size, text), "stream": False, "options": {"num_predict": predict, "seed": seed}}
            raw = json.dumps(body).encode()
            start = time.perf_counter()
            status, reply = post(port, "/api/generate", raw)
            end = time.perf_counter()
            assert status == 200, reply
            time.sleep(0.05)  # the piece after the prompt ends the gap
            results[size] = (reader.largest_gap(start, end), reply["prompt_eval_duration"] / 1e9, reply)
        return results
    finally:
        held.close()


def main(run: str, sizes: list[int]) -> None:
    from tests.conftest import VERSE

    server = ServerProcess(Path(run), *OPTIONS)
    try:
        results = measure(server.port, sizes, VERSE)
    finally:
        server.stop()
    print(f"largest gap, no long prompt: {results.pop('no prompt') * 1e3:.1f} ms")
    for size, (gap, primed, _) in results.items():
        print(f"largest gap during a {size:,}-character prompt: {gap * 1e3:.1f} ms (prompt primed in {primed * 1e3:.0f} ms)")


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2:]] or [50_000, 900_000])
