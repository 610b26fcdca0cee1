"""The prime read from a file (`sample --prime-file`): a long prime without shell quoting.
The file is checked before it is read: it must exist, be a file, hold valid UTF-8 text, and
its size must fit in memory with what the prime becomes (its text, its code points and ids);
the model's share of a long prime is checked with the batch (`batch_memory.sample_memory`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from charrnn.errors import ConfigError, InsufficientMemory
from charrnn.memory import largest_fitting, require_memory, size_text
from charrnn.text import decode, shown

# Bytes a prime takes per byte of its file before the model runs: the bytes read, the str
# (up to 4 bytes a character, at most one character a byte), the vocabulary's int64 code
# points, ids and their copy (3 x 8), and the list of ids the sampler makes (8 a pointer).
PRIME_BYTES_PER_BYTE = 1 + 4 + 3 * 8 + 8
READ_CHUNK = 1 << 20


def read_prime_file(path: Path) -> str:
    """The text of ``path``, refused in one line when it is missing, not a file, empty, not
    UTF-8 or too big for memory (the size of a regular file is checked before reading; a
    pipe is read no further than what fits)."""
    where = f"--prime-file {shown(path)}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where} is a directory: name a text file")
    fit = largest_fitting(PRIME_BYTES_PER_BYTE)
    advice = f"name a file of at most {size_text(fit)}" if fit else "free some memory"
    if stat.S_ISREG(info.st_mode):
        require_memory(info.st_size * PRIME_BYTES_PER_BYTE, f"a prime of {info.st_size:,} bytes ({where})", advice)
    try:
        data = _read_at_most(path, fit)
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if fit is not None and len(data) > fit:
        raise InsufficientMemory(f"{where} holds more than the {size_text(fit)} a prime may take now; {advice}")
    if not data:
        raise ConfigError(f"{where} is empty: give a prime, or drop the option")
    return decode(data, where)


def _read_at_most(path: Path, limit: int | None) -> bytes:
    """The file's bytes, stopping one past ``limit`` (None: no limit)."""
    chunks, total = [], 0
    with open(path, "rb") as handle:
        while limit is None or total <= limit:
            chunk = handle.read(READ_CHUNK if limit is None else min(READ_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks)
