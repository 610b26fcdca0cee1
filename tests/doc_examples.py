"""The documentation's runnable examples: found in README.md and docs/*.md, run as a reader
would run them, and compared with the output the page shows.

A fenced block is an example when the line before it is a marker:

    <!-- example: NAME [slow] [tol=R] [figures] [shorten='FROM=>TO'] -->

Every block marked with the same NAME on one page is one session: the blocks run in page order
in one fresh temporary directory, so an earlier block makes the files a later one uses (and a
reader who follows the page from the top has them too). Blocks by their info string:

- ``bash``: a script, run with ``bash -e``; it must exit 0. Comments are the reader's.
- ``console``: ``$ `` lines are commands; the lines after one, up to the next, are what it
  prints (stdout and stderr together, as a terminal shows them). A command that ends in
  ``# exit N`` must exit N, every other 0.
- ``python``: a script, run with charrnn's own Python.
- any block with ``file=NAME`` after the session's name: written to NAME (a C file a later
  block compiles, say), not run.

Shown output is compared line by line: a line ``...`` stands for any lines, ``...`` within a
line for any text, and a timing (a number before ``s``, ``ms``, ``µs``, ``min``, ``chars/s``,
``tokens/s``, ``kB/s``, or a clock ``0:00:02``) for any number, since it varies with the machine
and its load. Every other figure must be the one shown, or, with ``tol=R``, within R of it
(relative, absolute below 1): a model's figures (bits per character, with the seed fixed) are the same on every
run of one machine and torch, and move in the last digits on another.

``slow`` puts the session under pytest's ``slow`` mark. ``shorten='FROM=>TO'`` (repeatable)
runs every block of the session with FROM replaced by TO, for an example whose budget as
written is minutes; the page says so in a paragraph right after one of the session's blocks,
naming TO. ``figures``
makes the session one ``python -m tests.doc_examples --update`` (``make docs-figures``)
re-runs to rewrite its figures in place; its page states the machine in a line after its last
console block that starts with ``Output of charrnn``, which the update rewrites too.

The environment: charrnn's virtual environment first on PATH, named corpora from
``$CHARRNN_CORPORA`` (the test set-up's local copies, so nothing is downloaded), the encoded
corpus cache in the session's directory, ``NO_COLOR``, ``OMP_NUM_THREADS=1`` (so that a run's
figures repeat exactly; the pages' figures come from the same set-up).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHARED_CORPORA = Path(os.environ.get("CHARRNN_SHARED_CORPORA", REPO.parent / "shared" / "corpora"))
BLOCK_TIMEOUT = 600

MARKER = re.compile(r"^<!-- example: (.*?) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")
EXIT = re.compile(r"\s+#\s*exit (\d+)\s*$")
NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?"
TIMING = re.compile(rf"\d+:\d\d:\d\d|{NUMBER}(?=\s?k?\s?(?:s|ms|µs|min|chars/s|tokens/s|kB/s)\b)")
FIGURE = re.compile(NUMBER)
STAMP = re.compile(r"^Output of charrnn \S+ with torch \S+ on .+?, \d{4}-\d\d-\d\d")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    kind: str  # bash, console, python
    text: str  # the block's content
    end: int  # 1-based line of the closing fence
    file: str | None = None  # file=NAME: the block is a file the session writes, not run


@dataclass
class Session:
    page: Path
    name: str
    blocks: list[Block] = field(default_factory=list)
    slow: bool = False
    figures: bool = False
    tol: float | None = None
    shorten: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{_shown_path(self.page)}::{self.name}"


def sessions(pages=PAGES) -> list[Session]:
    """Every marked example of ``pages``, as sessions in page order."""
    found: dict[tuple[Path, str], Session] = {}
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        fence = None  # the backticks of the fenced block we are in: a marker there is its text
        for index, line in enumerate(lines):
            ticks = re.match(r"^(`{3,})", line)
            if ticks and (fence is None or (ticks.group(1).startswith(fence) and not line.strip("`").strip())):
                fence = ticks.group(1) if fence is None else None
                continue
            marker = None if fence else MARKER.match(line.strip())
            if not marker:
                continue
            words = shlex.split(marker.group(1))
            session = found.setdefault((page, words[0]), Session(page, words[0]))
            file = None
            for word in words[1:]:
                key, _, value = word.partition("=")
                if key == "slow":
                    session.slow = True
                elif key == "figures":
                    session.figures = True
                elif key == "tol":
                    session.tol = float(value)
                elif key == "file":
                    file = value
                elif key == "shorten":
                    before, arrow, after = value.partition("=>")
                    if not arrow:
                        raise ValueError(f"{page.name}:{index + 1}: shorten needs 'FROM=>TO'")
                    session.shorten.append((before, after))
                else:
                    raise ValueError(f"{page.name}:{index + 1}: unknown example option {word!r}")
            opening = FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
            if not opening or (file is None and opening.group(1) not in ("bash", "console", "python")):
                raise ValueError(f"{page.name}:{index + 1}: an example marker must stand right before a ```bash, ```console or ```python block (or any block, with file=NAME)")
            end = next(i for i in range(index + 2, len(lines)) if lines[i].startswith("```"))
            session.blocks.append(Block(page, index + 2, opening.group(1), "\n".join(lines[index + 2 : end]) + "\n", end + 1, file))
    return list(found.values())


# ---------------------------------------------------------------------------- running


def environment(directory: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CHARRNN_", "PYTEST_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if SHARED_CORPORA.is_dir():
        env["CHARRNN_CORPORA"] = str(SHARED_CORPORA)
    # One thread: the adaptive count, chosen by measured speed, moves a run's last digits
    # with the machine's load; one thread makes its figures repeat (and spares a busy machine).
    env.update(CHARRNN_CACHE=str(directory / ".cache"), NO_COLOR="1", TERM="dumb", COLUMNS="100", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def _run(command: list[str], directory: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, input=stdin, cwd=directory, env=environment(directory), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT,
    )


def _shown_path(page: Path) -> Path:
    return page.relative_to(REPO) if page.is_relative_to(REPO) else page


def shortened(text: str, session: Session) -> str:
    for before, after in session.shorten:
        text = text.replace(before, after)
    return text


@dataclass
class Command:
    """One command of a console block, with what the page shows it print."""

    line: int
    command: str
    exit: int
    shown: list[str]


def console_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    for offset, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            command, exit = line[2:], 0
            wanted = EXIT.search(command)
            if wanted:
                command, exit = command[: wanted.start()], int(wanted.group(1))
            commands.append(Command(block.line + 1 + offset, command, exit, []))
        elif commands:
            commands[-1].shown.append(line)
        elif line.strip():
            raise ValueError(f"{block.page.name}:{block.line + 1 + offset}: a console block starts with a `$ ` command")
    return commands


def run_block(block: Block, session: Session, directory: Path) -> list[tuple[Command, str]]:
    """Run ``block`` in ``directory``; a console block's commands with what each printed.
    Raises AssertionError with the output when a command exits otherwise than the page says."""
    where = f"{_shown_path(block.page)}:{block.line}"
    if block.file is not None:
        path = directory / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")
        return []
    if block.kind == "python":
        done = _run([sys.executable, "-"], directory, shortened(block.text, session))
        assert done.returncode == 0, f"{where}: the python block exited {done.returncode}:\n{done.stdout[-3000:]}"
        return []
    if block.kind == "bash":
        done = _run(["bash", "-e", "-c", shortened(block.text, session)], directory)
        assert done.returncode == 0, f"{where}: the bash block exited {done.returncode}:\n{done.stdout[-3000:]}"
        return []
    results = []
    for command in console_commands(block):
        done = _run(["bash", "-c", shortened(command.command, session)], directory)
        assert done.returncode == command.exit, (
            f"{_shown_path(block.page)}:{command.line}: `{command.command}` exited {done.returncode}, "
            f"the page says {command.exit}:\n{done.stdout[-3000:]}"
        )
        results.append((command, done.stdout))
    return results


# --------------------------------------------------------------------------- matching


def _pieces(shown: str):
    """A shown line as (literal text, figure) pairs: figure is ``...`` (any text), a number to
    compare, ("timing", text) for any number, or None after the last literal."""
    for part in re.split(r"(\.\.\.)", shown.rstrip()):
        if part == "...":
            yield "", "..."
            continue
        timings = {m.start(): m.end() for m in TIMING.finditer(part)}
        position = 0
        for m in FIGURE.finditer(part):
            if m.start() < position:  # inside a clock already taken
                continue
            end = timings.get(m.start(), m.end())
            yield part[position : m.start()], ("timing", part[m.start() : end]) if m.start() in timings else m.group()
            position = end
        yield part[position:], None


def line_pattern(shown: str) -> tuple[re.Pattern, list[str | None]]:
    """A shown line as a regex, with the figures it captures: each a number to compare, or
    None for a timing (any number)."""
    regex, figures = [], []
    for literal, figure in _pieces(shown):
        regex.append(re.escape(literal))
        if figure == "...":
            regex.append(".*?")
        elif isinstance(figure, tuple):
            regex.append(r"(\d+:\d\d:\d\d)" if ":" in figure[1] else f"({NUMBER})")
            figures.append(None)
        elif figure is not None:
            regex.append(f"({NUMBER})")
            figures.append(figure)
    return re.compile("".join(regex) + r"\Z"), figures


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def _same(shown: str, got: str, tol: float | None) -> bool:
    if tol is None:
        return shown == got
    # Relative, and absolute below 1: a difference of bpc (-0.0008) moves as much as a bpc.
    return abs(_value(got) - _value(shown)) <= tol * max(abs(_value(shown)), 1.0)


def match_lines(shown: list[str], printed: list[str], tol: float | None):
    """The match of the shown lines against the printed ones: for each shown line, the printed
    line it matched and its captures (None for ``...`` lines), or None when they differ."""
    patterns = [None if s.strip() == "..." else line_pattern(s) for s in shown]
    memo: dict[tuple[int, int], list | None] = {}

    def match(i: int, j: int):
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(shown):
            result = [] if j == len(printed) else None
        elif patterns[i] is None:
            result = None
            for k in range(j, len(printed) + 1):
                rest = match(i + 1, k)
                if rest is not None:
                    result = [None, *rest]
                    break
        else:
            result = None
            if j < len(printed):
                regex, figures = patterns[i]
                found = regex.match(printed[j].rstrip())
                if found and all(f is None or _same(f, g, tol) for f, g in zip(figures, found.groups())):
                    rest = match(i + 1, j + 1)
                    if rest is not None:
                        result = [(printed[j], found), *rest]
        memo[(i, j)] = result
        return result

    return match(0, 0)


def printed_lines(output: str) -> list[str]:
    # A progress line rewritten in place with \r reads, in a terminal, as its last state.
    return [line.rsplit("\r", 1)[-1] for line in output.rstrip("\n").split("\n")] if output.strip() else []


def check_output(command: Command, output: str, session: Session, where: str) -> None:
    shown = list(command.shown)
    while shown and not shown[-1].strip():
        shown.pop()
    printed = printed_lines(output)
    assert match_lines(shown, printed, session.tol) is not None, (
        f"{where}: `{command.command}` printed\n" + "\n".join(printed) + "\n\nwhere the page shows\n" + "\n".join(shown)
        + (f"\n\n(figures within {session.tol} of those shown)" if session.tol is not None else "")
    )


def measured_elsewhere(session: Session) -> str | None:
    """For a ``figures`` session, the machine its page names when that is not this one (another
    CPU model or torch rounds a model's arithmetic otherwise, so a chart or a sample may differ
    in a character); None where the figures were made here."""
    if not session.figures:
        return None
    lines = session.page.read_text(encoding="utf-8").splitlines()
    index = stamp_line(session, lines)
    if index is None:
        return None
    named = lines[index].split(" with torch ", 1)[-1].rsplit(", ", 1)[0]
    here = stamp().split(" with torch ", 1)[-1].rsplit(", ", 1)[0]
    return None if named == here else named


def run_session(session: Session, directory: Path) -> list[tuple[Block, list[tuple[Command, str]]]]:
    """Run every block of ``session`` in ``directory`` and check each shown output (a
    ``figures`` session made on another machine: that it runs and exits as shown)."""
    elsewhere = measured_elsewhere(session)
    if elsewhere is not None:
        warnings.warn(f"{session.id}: its figures come from torch {elsewhere}; on this machine the example is run and its output not compared (make docs-figures re-measures it here)")
    ran = []
    for block in session.blocks:
        results = run_block(block, session, directory)
        for command, output in results:
            if elsewhere is None:
                check_output(command, output, session, f"{_shown_path(block.page)}:{command.line}")
        ran.append((block, results))
    return ran


# ---------------------------------------------------------------------------- updating


def machine() -> str:
    """The CPU's model name, as lscpu gives it."""
    from charrnn.device import cpu_model

    return cpu_model()


def stamp() -> str:
    import torch

    import charrnn

    return f"Output of charrnn {charrnn.__version__} with torch {torch.__version__} on {machine()}, {datetime.date.today().isoformat()}"


def updated_line(shown: str, found: re.Match) -> str:
    """``shown`` with each figure replaced by the one printed (timings too: they are the
    latest run's), its ``...`` kept."""
    values = iter(found.groups())
    pieces = []
    for literal, figure in _pieces(shown):
        pieces.append(literal)
        if figure == "...":
            pieces.append("...")
        elif figure is not None:
            pieces.append(next(values))
    return "".join(pieces)


def stamp_line(session: Session, lines: list[str]) -> int | None:
    """The index of the line that states the machine of ``session``'s figures: the first
    ``Output of charrnn`` line after its last console block."""
    shown = [b for b in session.blocks if b.kind == "console"]
    start = shown[-1].end if shown else session.blocks[-1].end
    return next((i for i in range(start, len(lines)) if STAMP.match(lines[i])), None)


def update(session: Session) -> None:
    """Re-run ``session`` and rewrite its shown figures and its stamp in the page."""
    lines = session.page.read_text(encoding="utf-8").splitlines()
    replaced: list[tuple[int, int, list[str]]] = []  # whole outputs, applied bottom-up at the end
    with tempfile.TemporaryDirectory(prefix="charrnn-docs-") as scratch:
        for block in session.blocks:
            for command, output in run_block(block, session, Path(scratch)):
                shown = list(command.shown)
                while shown and not shown[-1].strip():
                    shown.pop()
                printed = printed_lines(output)
                matched = match_lines(shown, printed, tol=float("inf"))
                first = command.line  # the $ line; its output follows
                if matched is None:
                    # The text itself changed (a chart's rows, a reworded line): the page gets
                    # the output whole, to be elided again by hand where it was.
                    print(f"{session.page.name}:{command.line}: output rewritten whole; check the diff", file=sys.stderr)
                    replaced.append((first, first + len(shown), printed))
                    continue
                for offset, (line, hit) in enumerate(zip(shown, matched)):
                    if hit is not None:
                        lines[first + offset] = updated_line(line, hit[1])
    # The stamp first, while the lines are where the page had them; then the whole outputs.
    index = stamp_line(session, lines)
    if index is None:
        raise SystemExit(f"{session.page.name}: no line starting 'Output of charrnn' after the {session.name} example's output")
    lines[index] = STAMP.sub(stamp(), lines[index])
    for start, end, printed in sorted(replaced, reverse=True):
        lines[start:end] = printed
    session.page.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.doc_examples", description="Run the docs' examples, or re-measure their figures.")
    parser.add_argument("--update", action="store_true", help="re-run the sessions marked `figures` and rewrite their figures in the pages")
    parser.add_argument("--list", action="store_true", help="list the examples")
    args = parser.parse_args(argv)
    found = sessions()
    if args.list or not args.update:
        for s in found:
            flags = " ".join(f for f, on in (("slow", s.slow), ("figures", s.figures), ("shortened", bool(s.shorten))) if on)
            print(f"{s.id}: {len(s.blocks)} block(s) {flags}".rstrip())
        return 0
    for session in (s for s in found if s.figures):
        print(f"re-measuring {session.id}", file=sys.stderr)
        update(session)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
