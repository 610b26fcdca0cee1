"""The command line: parse options, build a config, call the library, show the result. The only code that prints."""

import os
import signal
import sys

EXIT_INTERRUPTED = 130  # charrnn.cli.errors's, here before anything else is imported


def _interrupted_while_loading(signum, frame) -> None:
    # Nothing has started that needs cleaning up: say it in one line and leave at once.
    os.write(2, b"charrnn: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


# The console script pip writes runs a regular expression of its own between importing this
# package and calling main(); a Ctrl-C there would be a traceback from no code of charrnn's.
# Only for that script: a program that imports charrnn keeps its own handler.
if os.path.basename(sys.argv[0] if sys.argv else "") == "charrnn":
    signal.signal(signal.SIGINT, _interrupted_while_loading)


def _interrupted(signum, frame) -> None:
    """SIGINT once the app is loaded: a KeyboardInterrupt, as Python raises it, except inside
    an import. There it can be lost or fatal: raised while torch's C++ (pybind11) runs the
    Python code of its import, it ends the process with "terminate called after throwing an
    instance of 'pybind11::error_already_set'" (SIGABRT); raised in the callback that frees
    an import's lock, Python prints "Exception ignored" and the command runs on. Nothing that
    needs saving runs inside an import, so leave as while charrnn's own modules load."""
    if _inside_import(frame):
        try:
            sys.stdout.flush()  # text already made, as a KeyboardInterrupt would have left it
        except (OSError, ValueError, RuntimeError):
            pass
        _interrupted_while_loading(signum, frame)
    signal.default_int_handler(signum, frame)


def _inside_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_console_script = False  # main() is running: the process is charrnn's own


def main() -> None:
    """The console script. The app is imported inside, so that a Ctrl-C while its modules load
    ends in the same one line and exit code as a Ctrl-C anywhere else."""
    global _console_script
    _console_script = True
    # Before the app's modules load: a Ctrl-C while they do lands inside an import, where a
    # KeyboardInterrupt can be lost (``_interrupted``); `python -m charrnn` has had Python's
    # own handler until here.
    signal.signal(signal.SIGINT, _interrupted)
    try:
        from charrnn.cli.app import main as run

        run()
    except KeyboardInterrupt:
        if os.environ.get("DEBUG", "") not in ("", "0"):
            raise
        sys.stderr.write("charrnn: interrupted\n")
        _leave(EXIT_INTERRUPTED)
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED:
            _leave(EXIT_INTERRUPTED)
        raise


def leave_when_stopped() -> None:
    """A server stopped by Ctrl-C or SIGTERM, with nothing left to write, ends its process now:
    the interpreter's last garbage collection walks every object torch and the server made,
    seconds on a busy machine after the address is already closed. Only in charrnn's own
    process (a program or test that called the command goes on)."""
    if _console_script:
        _leave(0)


def _leave(code: int) -> None:
    """Exit with ``code`` now. After a Ctrl-C the interpreter's own shutdown was seen to end
    the process as killed by SIGINT instead (with a cold module cache), losing the 130 that
    says the interrupt was handled; what had to be saved is saved by then."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
