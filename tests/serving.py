"""Real `charrnn serve` processes on loopback ports for the tests, and small HTTP helpers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import REPO

URL_LINE = re.compile(r"serving .* on (http://\S+)")


class ServerProcess:
    """``python -m charrnn serve RUN --port 0 ...``; ``url`` once it listens."""

    COMMAND = ("serve",)  # what follows `python -m charrnn`, before the run

    def __init__(self, run: Path, *options: str, env: dict | None = None, timeout: float = 60.0) -> None:
        # The tests say which API key the server has: never one from the environment.
        environ = {k: v for k, v in os.environ.items() if k != "CHARRNN_API_KEY"}
        environ.update({"PYTHONPATH": str(REPO), **(env or {})})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "charrnn", *self.COMMAND, str(run), "--port", "0", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
        )
        self.stderr_lines: list[str] = []
        self._url_seen = threading.Event()
        self.url = ""
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._url_seen.wait(timeout):
            self.stop()
            raise AssertionError(f"charrnn {self.COMMAND[0]} did not start:\n" + "".join(self.stderr_lines))

    @staticmethod
    def url_in(line: str) -> str | None:
        """The address a line of the server's stderr announces, if it does."""
        found = URL_LINE.search(line)
        return found.group(1) if found else None

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.append(line)
            url = self.url_in(line)
            if url and not self.url:
                self.url = url
                self._url_seen.set()
        self._url_seen.set()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def call(url: str, body=None, method: str | None = None, headers: dict | None = None, raw: bytes | None = None, timeout: float = 30.0):
    """(status, parsed JSON or text, headers) of one request; errors are answers too."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, text, head = reply.status, reply.read().decode(), reply.headers
    except urllib.error.HTTPError as error:
        status, text, head = error.code, error.read().decode(), error.headers
    try:
        return status, json.loads(text), head
    except json.JSONDecodeError:
        return status, text, head


def sse_events(text: str) -> list:
    """The data of each server-sent event: parsed JSON, or the string "[DONE]"."""
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def open_stream(port: int, path: str, body: dict, headers: dict | None = None) -> socket.socket:
    """A raw connection that sent a request and reads nothing yet: it holds its stream open."""
    payload = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n{extra}\r\n".encode() + payload
    )
    return sock


def health(url: str) -> dict:
    return call(url + "/health")[1]


def wait_until(condition, timeout: float = 10.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return condition()
