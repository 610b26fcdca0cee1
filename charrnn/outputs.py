"""Where a command writes. Every path a command writes (a file or a run directory) is checked
here before any work starts, so that a command never destroys what it was given, a run's
checkpoint, or a special file, and never runs for minutes to fail at its last step.

A file output is refused when it is:
  - a directory, or inside something that is not a directory;
  - a special file (FIFO, device, socket): an atomic rename would replace the node itself;
  - one of the command's own inputs (the checkpoint it reads, the text it reads);
  - a charrnn checkpoint, or a name a run directory keeps for its own files;
  - in a directory that does not exist (unless the command creates it: then its nearest
    existing ancestor must be a writable directory) or cannot take a new file.
Each message names the option the user gave, so the fix is obvious. ``written_whole`` then
writes such a file whole or not at all.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from charrnn.errors import ConfigError
from charrnn.text import shown

# Files a run directory keeps for itself: writing any other output under these names there
# would replace part of the run.
RUN_FILES = frozenset({"last.pt", "best.pt", "metrics.jsonl", "config.json", "config.toml", "samples.txt"})
CHECKPOINT_MAGIC = b"CHARRNN\n"  # charrnn.checkpoint.MAGIC, read here without importing torch

_SPECIAL = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def check_output_file(
    path: Path,
    option: str,
    inputs: Iterable[Path] = (),
    example: str | None = None,
    default: bool = False,
    create_parent: bool = False,
) -> Path:
    """Refuse ``path`` as a file for ``option`` to write (see the module docstring), before any
    work. ``inputs`` are the paths the command reads; ``example`` a file name to suggest when a
    directory was given; ``default``: the path is the option's default, not one the user typed;
    ``create_parent``: the command creates a missing directory for it (exports do).
    Returns the path."""
    path = Path(path)
    where = f"the default {option} {shown(path)}" if default else f"{option} {shown(path)}"
    kind = _kind(path)
    if kind == "directory":
        hint = f", e.g. {option} {shown(path / example)}" if example else ""
        raise ConfigError(f"{where} is a directory; name the file to write{hint}")
    if kind is not None and kind != "file":
        raise ConfigError(f"{where} is {kind}, not a regular file; name a regular file to write")
    for given in inputs:
        if given is not None and _same_path(path, Path(given)):
            raise ConfigError(f"{where} is one of this command's inputs; writing it would destroy it: name another file with {option}")
    if kind == "file" and is_checkpoint(path):
        raise ConfigError(f"{where} is a charrnn checkpoint; writing it would destroy it: name another file with {option}")
    if path.name in RUN_FILES and is_run_directory(path.parent):
        raise ConfigError(f"{where} is one of the files of the run in {shown(path.parent)}: name another file with {option}")
    if create_parent and not os.path.lexists(path.parent):
        _check_creatable(path.parent, where, option)
    else:
        _check_directory_takes_files(path.parent, where)
    return path


def check_output_files(outputs: Iterable[tuple[Path | None, str, str | None]], inputs: Iterable[Path] = ()) -> None:
    """Check every ``(path, option, example)`` a command will write (None: not asked for),
    and that no two of them name the same file."""
    inputs = [Path(p) for p in inputs if p is not None]
    given = [(Path(path), option, example) for path, option, example in outputs if path is not None]
    for index, (path, option, example) in enumerate(given):
        check_output_file(path, option, inputs, example)
        for other, other_option, _ in given[:index]:
            if _same_path(path, other):
                raise ConfigError(f"{option} and {other_option} both name {shown(path)}: give each its own file")


def check_output_directory(path: Path, option: str, inputs: Iterable[Path] = (), what: str | None = None) -> Path:
    """Refuse ``path`` as a directory for ``option`` to create or write into: it must not be
    a file or a special file, nor one of the inputs. A run directory (``what`` None) must not
    be a directory of other files a run would write over; whether it already holds another
    run is the run's own rule (charrnn.training.runs). ``what`` says what else the directory
    is for."""
    path = Path(path)
    where = f"{option} {shown(path)}"
    kind = _kind(path)
    if kind is not None and kind != "directory":
        article = "a file" if kind == "file" else kind
        raise ConfigError(f"{where} is {article}, not a directory; name a directory {what or 'for the run'}")
    for given in inputs:
        if given is not None and _same_path(path, Path(given)):
            raise ConfigError(f"{where} is one of this command's inputs: name another directory")
    if what is None and kind == "directory" and not is_run_directory(path):
        taken = sorted(name for name in RUN_FILES if os.path.lexists(path / name))
        if taken:
            raise ConfigError(f"{where} holds {', '.join(taken)}, which a run would write over, and is not a run directory: choose another {option}")
    _check_creatable(path, where, option)
    return path


def _check_creatable(path: Path, where: str, option: str) -> None:
    """A directory that may not exist yet: what exists of it must be a writable directory."""
    ancestor = _nearest_existing(path)
    if ancestor is not None and _kind(ancestor) != "directory":
        raise ConfigError(f"{where}: {shown(ancestor)} is not a directory")
    if ancestor is not None and not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: {shown(ancestor)} is not writable; choose another {option}")


class NotCreated(OSError):
    """The temporary file beside the target could not be made: nothing was written."""


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


@contextmanager
def written_whole(path: Path, prefix: str = ".charrnn-", durable: bool = False, ending: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends
    without an error, removed otherwise (an exception, a Ctrl-C), so a reader never sees a
    part of the file and a failed write never leaves a torn one. ``durable`` fsyncs the
    directory after the rename, so that a power cut, too, leaves the old content or the new;
    the block fsyncs the file itself, on the descriptor that wrote it (``write_whole``).

    The temporary name ends with ``ending``; by default with ``-`` and the target's name, for
    a writer that reads the format from it (torch.export.save and load insist on ".pt2").
    Raises ``NotCreated`` (an OSError) when the temporary file cannot be made; any OSError of
    the write itself passes through."""
    path = Path(path)
    # The name is chosen before the file exists: an interrupt that lands while the file is
    # being created still knows what to remove. 64 random bits, and O_EXCL refuses a clash.
    ending = f"-{path.name}" if ending is None else ending
    temporary = path.parent / f"{prefix}{secrets.token_hex(8)}{ending}"
    created = True
    try:
        try:
            # The mode obeys the umask, like any file the user makes (mkstemp's would be 0600).
            os.close(os.open(temporary, _CREATE_FLAGS, 0o666))
        except OSError as exc:
            created = False  # nothing made: leave alone whatever holds the name
            raise NotCreated(exc.errno, exc.strerror, str(temporary)) from None
        yield temporary
        os.replace(temporary, path)
        if durable:
            _fsync_directory(path.parent)
    except BaseException:
        if created:
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass  # the directory turned read-only under us: the write's own error matters
        raise


def write_whole(path: Path, data: bytes, prefix: str = ".charrnn-", durable: bool = False) -> None:
    """Replace ``path`` with ``data`` through ``written_whole``. The temporary file's name
    does not end as the target's: a half-written checkpoint is never one of a run's "*.pt"."""
    with written_whole(path, prefix, durable, ending="") as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())  # on the writing descriptor: it sees every write error


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some filesystems refuse to open a directory; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # nor can every filesystem fsync a directory
    finally:
        os.close(fd)


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a file that starts like a charrnn checkpoint."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(CHECKPOINT_MAGIC)) == CHECKPOINT_MAGIC
    except OSError:
        return False


def is_run_directory(path: Path) -> bool:
    """Whether ``path`` is a charrnn run directory: it holds a checkpoint, or the metrics log
    and configuration a run writes before its first checkpoint."""
    path = Path(path)
    try:
        if not path.is_dir():
            return False
        if any(is_checkpoint(path / name) for name in ("last.pt", "best.pt")):
            return True
        return (path / "metrics.jsonl").is_file() and (path / "config.json").is_file()
    except OSError:
        return False


def _kind(path: Path) -> str | None:
    """What is at ``path`` (following links): None, "file", "directory" or a special kind."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return _SPECIAL.get(stat.S_IFMT(mode), "a special file")


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def _check_directory_takes_files(directory: Path, where: str) -> None:
    directory = directory if str(directory) else Path(".")
    kind = _kind(directory)
    if kind is None:
        raise ConfigError(f"{where}: the directory {shown(directory)} does not exist; create it first")
    if kind != "directory":
        raise ConfigError(f"{where}: {shown(directory)} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".charrnn-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{where}: cannot write in {shown(directory)} ({exc.strerror or exc})") from None
