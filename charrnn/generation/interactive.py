"""The interactive prompt loop of ``charrnn sample --interactive``.

Each line read primes a fresh state and the continuation streams back; lines starting with
``/`` change the settings between prompts. Input and output are passed in as callables, so
the loop is the same for a terminal, a pipe or a test.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable

import torch

from charrnn.ranges import MAX_SEED
from charrnn.errors import CharRNNError, ConfigError
from charrnn.text import require_valid
from charrnn.model.network import CharRNN
from charrnn.generation.sample import SampleConfig, stream
from charrnn.data.vocab import Vocab

# command -> (SampleConfig field, parser, what it sets)
SETTINGS: dict[str, tuple[str, Callable[[str], object], str]] = {
    "/temp": ("temperature", float, "sampling temperature (0 = greedy)"),
    "/len": ("length", int, "characters per reply"),
    "/topk": ("top_k", int, "top-k (0 = off)"),
    "/topp": ("top_p", float, "nucleus mass (1 = off)"),
    "/minp": ("min_p", float, "min-p (0 = off)"),
    "/penalty": ("repetition_penalty", float, "repetition penalty (1 = off)"),
    "/seed": ("seed", int, "seed of the next reply (each reply adds 1)"),
}

HELP = (
    "type text and press Enter: the model continues it. Commands: "
    + ", ".join(f"{name} VALUE ({what})" for name, (_, _, what) in SETTINGS.items())
    + ", /show (current settings), /help, /quit (or end of input). "
    "Start a line with // to send a literal '/'."
)


# A terminal's key code (CSI or SS3 sequence, or ESC and one key): what arrow and function
# keys send when nothing edits the line.
KEY_CODE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|O.|.)?", re.DOTALL)


@dataclass
class InteractiveIO:
    # "" at end of input, like file.readline(); KeyboardInterrupt (Ctrl-C) drops the line.
    read_line: Callable[[], str]
    write: Callable[[str], None]  # generated text (stdout)
    tell: Callable[[str], None]  # status and messages, one line each (stderr)
    prompt: Callable[[], None] = lambda: None  # shown before each read


def settings_line(config: SampleConfig) -> str:
    return ", ".join(f"{name} {getattr(config, field)}" for name, (field, _, _) in SETTINGS.items())


class InteractiveSession:
    def __init__(self, model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str) -> None:
        self.model = model
        self.vocab = vocab
        self.config = config
        self.device = device
        self.replies = 0

    def command(self, line: str, io: InteractiveIO) -> bool:
        """Apply a /command; False means the session ends."""
        name, _, value = line.strip().partition(" ")
        value = value.strip()
        if name in ("/quit", "/exit", "/q"):
            return False
        if name == "/help":
            io.tell(HELP)
        elif name == "/show":
            io.tell(settings_line(self.config))
        elif name in SETTINGS:
            field, parse, what = SETTINGS[name]
            try:
                parsed = parse(value)
            except ValueError:
                io.tell(f"{name} needs a number ({what}), for example: {name} {getattr(self.config, field)}")
                return True
            try:
                self.config = dataclasses.replace(self.config, **{field: parsed})
            except ConfigError as exc:
                io.tell(f"{name}: {exc}; unchanged")
                return True
            io.tell(f"{field.replace('_', ' ')} = {parsed}")
        else:
            io.tell(f"unknown command {name}; /help lists them")
        return True

    def reply(self, prime: str, io: InteractiveIO) -> None:
        """Stream the continuation of ``prime``; Ctrl-C ends it early, back at the prompt."""
        config = dataclasses.replace(self.config, prime=prime, num_samples=1)
        pieces = stream(self.model, self.vocab, config, self.device)
        try:
            first = next(pieces, "")  # a bad prompt fails here, before anything is written
        except KeyboardInterrupt:
            io.tell("(reply interrupted)")
            return
        # The next reply gets the next seed: a seeded session is repeatable, replies differ.
        self.config = dataclasses.replace(self.config, seed=(self.config.seed + 1) % (MAX_SEED + 1))
        self.replies += 1
        try:
            io.write(first)
            for piece in pieces:
                io.write(piece)
        except KeyboardInterrupt:
            io.write("\n")
            io.tell("(reply interrupted)")
            return
        io.write("\n")

    def run(self, io: InteractiveIO) -> int:
        """Serve prompts until /quit or end of input; returns the number of replies. Ctrl-C
        at the prompt drops the line being typed and prompts again."""
        interrupted = False
        while True:
            try:
                if interrupted:
                    interrupted = False
                    io.tell("")  # the next prompt starts on a line of its own
                if not self.serve_one(io):
                    return self.replies
            except KeyboardInterrupt:
                # Everything that may take a second Ctrl-C runs inside the try.
                interrupted = True

    def serve_one(self, io: InteractiveIO) -> bool:
        """Read one line and act on it; False means the session ends."""
        io.prompt()
        line = io.read_line()
        if line == "":
            return False
        line = line.rstrip("\r\n")
        key = KEY_CODE.search(line)
        if key:
            # Without line editing the keys arrive as text; fed to the model they would be
            # refused as unknown characters, or (with --unknown skip) half of them kept.
            io.tell(
                f"that line holds the terminal key code {key.group()!r} (an arrow or function key), "
                "not text, so nothing was sent; type it again without such keys "
                "(line editing works when stdin and stdout are a terminal)"
            )
            return True
        if line.startswith("/") and not line.startswith("//"):
            return self.command(line, io)
        if line.startswith("//"):
            line = line[1:]
        try:
            require_valid(line, "that line")
            self.reply(line, io)
        except CharRNNError as exc:
            io.tell(f"{exc}; try another prompt")
        return True
