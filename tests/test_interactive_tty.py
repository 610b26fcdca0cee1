"""`charrnn sample --interactive` at a real terminal (a pseudo-terminal): arrow keys edit the
line, history recalls it, Ctrl-C drops the line being typed or stops a reply and prompts
again, Ctrl-D ends; and key codes that arrive without a terminal are refused with a message."""

import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from tests.conftest import sample_text

pytest.importorskip("readline")  # line editing needs it; absent on some platforms

runner = CliRunner()
LENGTH = 30


def _controlling_terminal() -> None:
    """In the child: make the pseudo-terminal its controlling terminal, and let Ctrl-C act. A
    shell that starts a job in the background (`make test &`) sets SIGINT to ignored, and an
    ignored signal stays ignored across exec: the child would never see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A process on the slave side of a pseudo-terminal, which is its controlling terminal
    (so that Ctrl-C and Ctrl-D typed on it act as they do for a user)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=_controlling_terminal,
        )
        os.close(slave)
        self.output = b""
        self.seen = 0  # output before this was matched already

    def read(self, timeout: float = 0.2) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:  # the process ended and closed the terminal
                time.sleep(timeout)

    def expect(self, text: str, timeout: float = 120) -> str:
        """Wait for ``text`` after what was matched before; returns the output up to it, with
        the terminal's \\r\\n as \\n."""
        wanted = text.replace("\n", "\r\n").encode()
        deadline = time.monotonic() + timeout
        while (at := self.output.find(wanted, self.seen)) < 0:
            assert time.monotonic() < deadline, f"{text!r} not seen; output: {self.output[self.seen:][-500:]!r}"
            self.read()
        before = self.output[self.seen : at + len(wanted)]
        self.seen = at + len(wanted)
        return before.decode("utf-8", "replace").replace("\r\n", "\n")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_arrow_keys_history_ctrl_c_and_ctrl_d_at_a_terminal(trained_run, model_and_vocab, tmp_path):
    def reply(prime: str) -> str:
        return sample_text(model_and_vocab, length=LENGTH, temperature=0, prime=prime)

    assert reply("acb") != reply("abc")  # else the edit below could go unnoticed
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm", "CHARRNN_CACHE": str(cache)}
    args = [sys.executable, "-m", "charrnn", "sample", str(trained_run), "-i", "--temperature", "0", "--length", str(LENGTH)]
    term = Terminal(args, env)
    try:
        term.expect("> ")
        term.type("ab\x1b[Dc\n")  # b, left arrow, c: the line is "acb"
        assert reply("acb") + "\n> " in term.expect(reply("acb") + "\n> ")
        term.type("\x1b[A\n")  # up arrow: the last line again
        term.expect(reply("acb") + "\n> ")
        # Ctrl-C at the prompt drops what was typed ('z' is not in the model's vocabulary,
        # so a line kept would be refused) and prompts again.
        term.type("xyz")
        term.expect("xyz")
        # CPython's input() misses a SIGINT that lands between readline's echo of a key and
        # its next wait for input (until the next key): leave the gap a person leaves.
        time.sleep(0.5)
        term.type("\x03")
        term.expect("> ")
        term.type("ab\n")
        term.expect(reply("ab") + "\n> ")
        # Ctrl-C during a reply stops it and prompts again.
        term.type("/len 100000000\n")
        term.expect("length = 100000000\n> ")
        term.type("[ROMEO]\n")
        term.expect("[JULIET]")  # the reply is streaming
        term.type("\x03")
        term.expect("(reply interrupted)\n> ")
        term.type("\x04")  # Ctrl-D: end of input
        term.expect("4 replies\n")
        assert term.proc.wait(timeout=60) == 0
    finally:
        term.close()
    everything = term.output.decode("utf-8", "replace")
    assert "not in the model's vocabulary" not in everything and "key code" not in everything
    assert "Traceback" not in everything and "charrnn: interrupted" not in everything
    # The history is kept for the next session (a line repeated at once is kept once).
    assert (cache / "sample_history").read_text().splitlines() == ["acb", "ab", "/len 100000000", "[ROMEO]"]


def test_key_codes_without_a_terminal_are_refused_with_a_message(trained_run):
    lines = ["ab\x1b[Dc", "\x1bOA", "[ROMEO]"]
    result = runner.invoke(app, ["sample", str(trained_run), "-i", "--length", "12", "--seed", "1", "--unknown", "skip"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.stderr
    assert "that line holds the terminal key code '\\x1b[D' (an arrow or function key)" in result.stderr
    assert "key code '\\x1bOA'" in result.stderr
    assert "nothing was sent; type it again without such keys" in result.stderr
    # Neither line reached the model, not even in part (--unknown skip would keep "[D"); the
    # loop went on.
    assert [len(line) for line in result.stdout.splitlines()] == [12]
    assert "1 replies" in result.stderr and "Traceback" not in result.stderr
