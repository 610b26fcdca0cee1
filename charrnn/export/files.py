"""Where an export writes: checked before the (seconds-long) export starts, and written whole
or not at all."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from charrnn.errors import ExportError


def check_writable(path: Path) -> None:
    """Refuse an output path whose directory is missing or cannot take a new file, naming it."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a directory; name the file to write with --out")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent or Path("."), prefix=".charrnn-export-"):
            pass
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}; choose another --out") from None


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends
    without an error, removed otherwise, so a failed export never leaves a torn file."""
    path = Path(path)
    # The temporary name ends as ``path`` does: torch.export.save and load insist on ".pt2".
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".charrnn-", suffix=f"-{path.name}")
    os.close(handle)
    # mkstemp makes the file private (0600); an export is as readable as any file the user writes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def total_size(paths: list[Path]) -> int:
    return sum(Path(p).stat().st_size for p in paths)
