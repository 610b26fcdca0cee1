"""Checkpoint files: one self-contained, versioned, checksummed file per checkpoint.

Layout::

    b"CHARRNN\\n"             8-byte magic
    format version           4 bytes, little-endian
    sha256 of the payload    32 bytes
    payload                  torch.save() of a dict of tensors and plain values

Loading checks the magic, the version and the checksum before it unpickles anything, and then
unpickles with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers: a file crafted to run code is refused, never executed.

Writes are atomic: a temporary file in the same directory is written, flushed and fsynced,
renamed over the target, and the directory is fsynced, so a crash at any moment leaves
either the old checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from pathlib import Path

import torch

from charrnn.errors import CheckpointError, ConfigError
from charrnn.outputs import NotCreated, write_whole

MAGIC = b"CHARRNN\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sI32s")
TMP_PREFIX = ".tmp-ckpt-"
LAST = "last.pt"
BEST = "best.pt"


def encode(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, hashlib.sha256(body).digest()) + body


def save(payload: dict, path: Path) -> None:
    """Write ``payload`` to ``path`` atomically; on any failure the old file is untouched."""
    atomic_write(Path(path), encode(payload), what="checkpoint")


def atomic_write(path: Path, data: bytes, what: str = "file") -> None:
    """Replace ``path`` with ``data`` so that a crash at any moment leaves the old content or
    the new, never a torn file; the temporary file never outlives a failure or an interrupt."""
    path = Path(path)
    try:
        write_whole(path, data, prefix=TMP_PREFIX, durable=True)
    except NotCreated as exc:
        raise CheckpointError(f"cannot write a {what} in {path.parent}: {exc.strerror}") from None
    except OSError as exc:
        raise CheckpointError(
            f"could not save {what} {path}: {exc.strerror}; the previous {what} is intact"
        ) from None


def remove_stale_temporaries(directory: Path) -> int:
    """Delete half-written files a crash left behind; they are never valid checkpoints."""
    removed = 0
    for stale in Path(directory).glob(TMP_PREFIX + "*"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed


def resolve(path: Path, which: str = "last") -> Path:
    """A checkpoint file, or a run directory meaning its ``last`` (or ``best``) checkpoint."""
    path = Path(path)
    if path.is_dir():
        candidate = path / (BEST if which == "best" else LAST)
        if not candidate.is_file():
            if which == "best" and (path / LAST).is_file():
                # best.pt comes from validation: a run without validation text never has one.
                raise CheckpointError(
                    f"{path}: run directory has no {BEST} (no validation ran: --val-frac 0, a text "
                    f"too short to hold part out, or a stop before the first evaluation); drop "
                    f"--best to use its {LAST}"
                )
            raise CheckpointError(f"{path}: run directory has no {candidate.name}")
        return candidate
    if not path.exists():
        if path.is_symlink():
            raise CheckpointError(f"{path}: broken symbolic link (its target does not exist)")
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    if not path.is_file():
        # A FIFO or device would block or stream forever; a checkpoint is always a regular file.
        raise CheckpointError(f"{path}: not a regular file, so not a checkpoint")
    if which == "best":
        # --best names a run directory's best.pt; given a file, it would silently mean the file.
        raise ConfigError(f"--best picks a run directory's {BEST}, and {path} is a checkpoint file: drop --best, or name its run directory")
    return path


def load(path: Path, which: str = "last", map_location: str | torch.device = "cpu") -> dict:
    """Read and verify a checkpoint; every failure is a one-line ``CheckpointError``."""
    path = resolve(path, which)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) < _HEADER.size or not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a charrnn checkpoint")
    _, version, digest = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        newer = "newer" if version > FORMAT_VERSION else "older"
        raise CheckpointError(
            f"{path}: checkpoint format {version} is {newer} than this charrnn reads "
            f"({FORMAT_VERSION}); use a matching charrnn version"
        )
    body = data[_HEADER.size :]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{path}: checksum mismatch: the file is truncated or was modified")
    try:
        payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors ({first})"
        ) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint ({exc})") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"{path}: not a charrnn checkpoint")
    return payload
