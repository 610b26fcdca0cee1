"""Encoded corpora cached as .npy files and memory-mapped.

A corpus is decoded and encoded once; later runs (and the second pass of the same run)
``np.load(..., mmap_mode="r")`` the result, so a 100 MB text costs page cache, not process
memory, and the ids are never held as Python objects or int64 tensors: training reads one
window at a time through views (``charrnn.data.batches``).

A cache entry is named by a hash of what determines its content: each file's resolved path,
size and modification time, the text encoding, the version of the reading rules
(``READER_VERSION``), and (for ids) the vocabulary. Editing a file
changes its size or mtime and so its key; stale entries are simply never read again.

The file is written in one streaming pass: the .npy header is reserved first and filled in
once the length is known, then the file is renamed into place, so a reader never sees a
half-written entry. Where the cache directory cannot be written, the array is built in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from charrnn.outputs import written_whole

CACHE_ENV = "CHARRNN_CACHE"  # a directory; "off" turns the cache off
HEADER_BYTES = 128  # a 1-D .npy v1.0 header with any realistic length fits in 128 bytes


def cache_dir() -> Path | None:
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.lower() in ("", "off", "0", "none") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charrnn"


def file_fingerprints(files: Iterable[Path]) -> list[list]:
    prints = []
    for path in files:
        stat = Path(path).stat()
        prints.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    return prints


def cache_key(**material) -> str:
    blob = json.dumps(material, sort_keys=True, ensure_ascii=True).encode("ascii")
    return hashlib.sha256(blob).hexdigest()[:32]


def _header(dtype: np.dtype, length: int) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer,
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)},
    )
    return buffer.getvalue()


def write_npy_stream(path: Path, dtype: np.dtype, chunks: Iterator[np.ndarray]) -> int:
    """Write ``chunks`` as one 1-D .npy file without holding them all; returns the length."""
    dtype = np.dtype(dtype)
    length = 0
    with open(path, "wb") as handle:
        handle.write(b"\0" * HEADER_BYTES)
        for chunk in chunks:
            handle.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
            length += len(chunk)
        header = _header(dtype, length)
        if len(header) != HEADER_BYTES:  # never for 1-D arrays below 10^40 items
            raise OSError("unexpected .npy header size")
        handle.seek(0)
        handle.write(header)
        handle.flush()
        os.fsync(handle.fileno())
    return length


def cached_array(
    kind: str,
    key: str,
    dtype: np.dtype,
    build: Callable[[], Iterator[np.ndarray]],
) -> np.ndarray:
    """The cached 1-D array named ``kind``-``key``, memory-mapped; built from ``build()``'s
    chunks when absent. Exceptions from ``build`` propagate and leave no entry behind."""
    directory = cache_dir()
    if directory is not None:
        target = directory / f"{kind}-{key}.npy"
        if target.exists():
            try:
                return np.load(target, mmap_mode="r")
            except (OSError, ValueError):
                pass  # damaged entry: rebuild it below
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with written_whole(target, prefix=f".{kind}-", ending=".tmp") as temporary:  # never a "*.npy" half-written
                write_npy_stream(temporary, dtype, build())
        except OSError:
            return _in_memory(build, dtype)  # disk full or unwritable: slower, but it works
        return np.load(target, mmap_mode="r")
    return _in_memory(build, dtype)


def _in_memory(build: Callable[[], Iterator[np.ndarray]], dtype: np.dtype) -> np.ndarray:
    parts = list(build())
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


# How files are read into text. Raised whenever reading changes what the same bytes become
# (2: a leading byte-order mark is dropped, NUL is refused), so that no entry made by the
# older reading is served for the same files.
READER_VERSION = 2


def files_material(files: Sequence[Path], encoding: str) -> dict:
    return {"files": file_fingerprints(files), "encoding": encoding, "reader": READER_VERSION}
