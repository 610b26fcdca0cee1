"""The one place where exceptions become what the user reads: a single line on stderr and a
non-zero exit code. Set DEBUG=1 to see the traceback instead."""

from __future__ import annotations

import functools
import os
import re
import sys

from charrnn.cli import EXIT_INTERRUPTED  # defined where the console script starts
from charrnn.errors import (
    CharRNNError,
    CheckpointError,
    ConfigError,
    CorpusError,
    DeviceError,
    DownloadError,
    ExportError,
    InsufficientMemory,
    InvalidText,
    TrainingDiverged,
    VocabError,
)

EXIT_ERROR = 1
EXIT_USAGE = 2

# Exception type -> (prefix, exit code). The first matching entry wins.
_MESSAGES: list[tuple[type[BaseException], str, int]] = [
    (CorpusError, "corpus", EXIT_ERROR),
    (VocabError, "vocabulary", EXIT_ERROR),
    (CheckpointError, "checkpoint", EXIT_ERROR),
    (InvalidText, "invalid text", EXIT_USAGE),
    (ConfigError, "invalid options", EXIT_USAGE),
    (DeviceError, "device", EXIT_ERROR),
    (InsufficientMemory, "out of memory", EXIT_ERROR),
    (TrainingDiverged, "training diverged", EXIT_ERROR),
    (DownloadError, "download", EXIT_ERROR),
    (ExportError, "export", EXIT_ERROR),
    (CharRNNError, "error", EXIT_ERROR),
    (MemoryError, "out of memory", EXIT_ERROR),
    (OSError, "system error", EXIT_ERROR),
]


def debug_enabled() -> bool:
    return os.environ.get("DEBUG", "") not in ("", "0")


def message_for(exc: BaseException) -> tuple[str, int]:
    exc = _allocation_failure(exc) or exc
    for kind, prefix, code in _MESSAGES:
        if isinstance(exc, kind):
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else kind.__name__
            return f"charrnn: {prefix}: {detail}", code
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"charrnn: internal error: {type(exc).__name__}: {detail} (run with DEBUG=1 for details)",
        EXIT_ERROR,
    )


# How torch says an allocation failed: the CPU allocator ("can't allocate memory: you tried to
# allocate 640000000000 bytes"), CUDA's ("CUDA out of memory. Tried to allocate 2.00 GiB").
_ALLOCATION_FAILED = re.compile(r"can't allocate memory|out of memory", re.I)
_ASKED_BYTES = re.compile(r"tried to allocate (\d+) bytes", re.I)
_ASKED_SIZE = re.compile(r"tried to allocate ([\d.]+ [KMGT]iB)", re.I)


def _allocation_failure(exc: BaseException) -> InsufficientMemory | None:
    """torch's RuntimeError for a failed allocation, as the one line every other bad input
    gets: how much was asked for, and which options make it smaller."""
    if not isinstance(exc, RuntimeError) or not _ALLOCATION_FAILED.search(str(exc)):
        return None
    text = str(exc)
    if (found := _ASKED_BYTES.search(text)) is not None:
        asked = f" {int(found.group(1)) / 2**30:,.1f} GiB"
    elif (found := _ASKED_SIZE.search(text)) is not None:
        asked = f" {found.group(1)}"
    else:
        asked = ""
    return InsufficientMemory(
        f"could not allocate{asked}; the model or batch does not fit in this machine's memory "
        "(choose a smaller --hidden, --layers, --batch-size or --seq-len)"
    )


def fail(message: str, code: int = EXIT_ERROR):
    """Print one line on stderr and exit."""
    import typer

    print(message, file=sys.stderr, flush=True)
    if code == EXIT_INTERRUPTED:
        interrupt_reported()
    raise typer.Exit(code)


_interrupt = {"reported": False}


def interrupt_reported() -> None:
    """Note that the command has said how it was interrupted, so that no second line does."""
    _interrupt["reported"] = True


def user_errors(command):
    """Decorator for CLI commands: known and unknown errors become one line, never a traceback."""
    import typer

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            fail("charrnn: interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (for example `| head`): not an error worth a message.
            _silence_stdout()
            raise typer.Exit(0)
        except Exception as exc:  # noqa: BLE001 - this is the one place that maps them all
            if debug_enabled():
                raise
            message, code = message_for(exc)
            fail(message, code)

    return wrapper


def _exit_interrupted() -> None:
    """Say it and exit with 130 (the console entry, charrnn.cli.main, makes that exit final)."""
    print("charrnn: interrupted", file=sys.stderr, flush=True)
    sys.exit(EXIT_INTERRUPTED)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _click_exception_type() -> type[BaseException]:
    """The base class of typer's usage errors, found through typer's own re-export (the CLI
    never imports click directly)."""
    import typer

    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineUsageErrors:
    """Mixin for the Typer group: an invalid option value, a missing argument or an unknown
    option is one line on stderr (exit 2), like every other bad input, instead of a usage box.
    ``charrnn`` alone still shows the help."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        import typer

        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
            # Typer turns a Ctrl-C outside the command (while options are parsed) into a
            # silent exit 130: say it as every other interrupt is said.
            if code == EXIT_INTERRUPTED and not _interrupt["reported"]:
                _exit_interrupted()
        except _click_exception_type() as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" or debug_enabled():
                from typer import rich_utils

                rich_utils.rich_format_error(exc)
                sys.exit(exc.exit_code)
            message = " ".join(exc.format_message().split())
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            print(f"charrnn: invalid options: {message}{hint}", file=sys.stderr, flush=True)
            sys.exit(exc.exit_code)
        except typer.Abort as exc:
            # Click turns a Ctrl-C while it parses into Abort: it is an interrupt like any other.
            if isinstance(exc.__context__, KeyboardInterrupt):
                _exit_interrupted()
            print("charrnn: aborted", file=sys.stderr, flush=True)
            sys.exit(EXIT_ERROR)
        sys.exit(code if isinstance(code, int) else 0)
