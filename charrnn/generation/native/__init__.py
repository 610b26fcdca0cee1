"""The bf16 step in C (``bf16_step.c``; why: its opening comment), compiled on first use with
the system's C compiler for this CPU (``-march=native``) and loaded through ctypes: one row
with AVX512_BF16's dot products, several rows with AMX where the CPU and the OS allow it.

The library is kept in the cache directory (``charrnn.data.cache``), named by a hash of its
source, the compiler and the CPU's flags, so it is built once per machine; where the cache
cannot be written it is built in a temporary directory for the process. Where there is no
compiler, or it fails, or ``CHARRNN_NATIVE=off``, ``load_kernel`` gives None and the fast
stepper multiplies in numpy as before: the kernel makes a step faster, never different in
kind.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from charrnn.c_compiler import find_compiler
from charrnn.data.cache import cache_dir
from charrnn.device import cpu_flags
from charrnn.outputs import written_whole

NATIVE_ENV = "CHARRNN_NATIVE"  # "off": never build or load the kernel
SOURCE = "bf16_step.c"
FLAGS = ("-O3", "-march=native", "-std=c99", "-fPIC", "-shared", "-fno-math-errno")
# The kernel reads 32 bf16 values at a time: every row and input is padded to this many.
COLUMN_MULTIPLE = 32
CELL_CODES = {"lstm": 0, "gru": 1, "rnn": 2}

_u16p = ctypes.POINTER(ctypes.c_uint16)
_f32p = ctypes.POINTER(ctypes.c_float)


class _Net(ctypes.Structure):
    """``struct charrnn_net`` of bf16_step.c, field for field."""

    _fields_ = [
        ("cell", ctypes.c_int32),
        ("layers", ctypes.c_int32),
        ("hidden", ctypes.c_int32),
        ("stride", ctypes.c_int32),
        ("vocab", ctypes.c_int32),
        ("gates", ctypes.c_int32),
        ("table", _f32p),
        ("w", ctypes.POINTER(_u16p)),
        ("b", ctypes.POINTER(_f32p)),
        ("w_ih", ctypes.POINTER(_u16p)),
        ("b_ih", ctypes.POINTER(_f32p)),
        ("w_dec", _u16p),
        ("b_dec", _f32p),
        ("sum", _f32p),
        ("sum_ih", _f32p),
        ("input", _u16p),
    ]


class _Batch(ctypes.Structure):
    """``struct charrnn_batch`` of bf16_step.c, field for field."""

    _fields_ = [
        ("capacity", ctypes.c_int32),
        ("width", ctypes.c_int32),
        ("w", ctypes.POINTER(_u16p)),
        ("w_ih", ctypes.POINTER(_u16p)),
        ("w_dec", _u16p),
        ("sum", _f32p),
        ("sum_ih", _f32p),
        ("input", _u16p),
    ]


# Rows of a batch are handled in blocks of this many (an AMX tile's rows).
ROW_BLOCK = 16


@functools.cache
def load_kernel() -> ctypes.CDLL | None:
    """The compiled kernel, built if need be; None where it cannot be had (module docstring)."""
    if _turned_off():
        return None
    compiler = find_compiler()
    if compiler is None:
        return None
    source = resources.files(__package__).joinpath(SOURCE).read_bytes()
    name = f"bf16_step-{_build_key(source, compiler)}.so"
    base = cache_dir()
    library = base / "native" / name if base is not None else None
    if library is not None and library.is_file():
        loaded = _load(library)
        if loaded is not None:
            return loaded
    with tempfile.TemporaryDirectory(prefix="charrnn-native-") as scratch:
        built = _compile(compiler, source, Path(scratch))
        if built is None:
            return None
        if library is not None:
            try:
                library.parent.mkdir(parents=True, exist_ok=True)
                with written_whole(library) as staged:  # a reader never sees half a library
                    staged.write_bytes(built.read_bytes())
                built = library
            except OSError:
                pass  # an unwritable cache: use the copy in the temporary directory
        return _load(built)  # dlopen keeps its mapping once the temporary file is gone


def describe_kernel() -> str:
    """How one row steps in bf16 here, for reports."""
    kernel = load_kernel()
    if kernel is None:
        why = f"{NATIVE_ENV}=off" if _turned_off() else "no C compiler, or it failed"
        return f"numpy on bf16 values widened to fp32 (native kernel: {why})"
    return "native kernel, " + ("AVX512_BF16 dot products" if kernel.charrnn_bf16_native() else "plain C (no AVX512_BF16)")


def describe_batched() -> str:
    """How several rows step in bf16 here, for reports."""
    kernel = load_kernel()
    if kernel is not None and kernel.charrnn_amx_ready():
        return "native kernel, AMX tiles"
    return "torch's bf16 product" + ("" if kernel is None else " (no AMX here)")


def _turned_off() -> bool:
    return os.environ.get(NATIVE_ENV, "").lower() in ("off", "0", "no", "false")


def _build_key(source: bytes, compiler: str) -> str:
    material = [source, compiler.encode(), platform.machine().encode(), (cpu_flags() or platform.processor()).encode()]
    try:
        material.append(str(os.stat(compiler).st_mtime_ns).encode())
    except OSError:
        pass
    return hashlib.sha256(b"\0".join(material)).hexdigest()[:24]


def _compile(compiler: str, source: bytes, directory: Path) -> Path | None:
    (directory / SOURCE).write_bytes(source)
    library = directory / "kernel.so"
    for flags in (FLAGS, tuple(f for f in FLAGS if f != "-march=native")):
        try:
            done = subprocess.run(
                [compiler, *flags, "-o", str(library), str(directory / SOURCE), "-lm"],
                capture_output=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode == 0:
            return library
    return None


def _load(library: Path) -> ctypes.CDLL | None:
    try:
        kernel = ctypes.CDLL(str(library))
        kernel.charrnn_bf16_step.argtypes = [ctypes.POINTER(_Net), ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        kernel.charrnn_bf16_step.restype = None
        kernel.charrnn_bf16_native.restype = ctypes.c_int
        kernel.charrnn_amx_ready.restype = ctypes.c_int
        kernel.charrnn_amx_outputs.restype = ctypes.c_int
        kernel.charrnn_amx_outputs.argtypes = [ctypes.c_int]
        kernel.charrnn_amx_pack.restype = None
        kernel.charrnn_amx_pack.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        kernel.charrnn_bf16_steps.restype = None
        kernel.charrnn_bf16_steps.argtypes = [ctypes.POINTER(_Net), ctypes.POINTER(_Batch), ctypes.c_int] + [ctypes.c_void_p] * 4
    except (OSError, AttributeError):
        return None
    return kernel


def bf16_bits(w: np.ndarray, blocks: int = 1) -> np.ndarray:
    """The bf16 bits of a float32 matrix whose values are already bf16 (``round_to_bf16_``),
    its columns cut into ``blocks`` equal parts, each padded with zeros to COLUMN_MULTIPLE."""
    rows, cols = w.shape
    width = cols // blocks
    stride = padded(width)
    bits = (np.ascontiguousarray(w, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    out = np.zeros((rows, blocks * stride), np.uint16)
    for block in range(blocks):
        out[:, block * stride : block * stride + width] = bits[:, block * width : (block + 1) * width]
    return out


def padded(width: int) -> int:
    return -(-width // COLUMN_MULTIPLE) * COLUMN_MULTIPLE


class NativeStep:
    """One row's step in bf16 through the kernel: ``(id, h, c, logits)``, all in place; and
    where ``batched``, several rows' (``rows``).

    Takes the fast stepper's layout (``charrnn.generation.stepper.FastStepper``): ``table``
    (ids, gates); ``w`` per layer (LSTM/RNN: stacked [input, own] for layers after the first;
    GRU: the recurrent matrices) and ``b`` its biases (None for layer 0 of an LSTM/RNN);
    ``w_ih``/``b_ih`` the GRU's input side (None for layer 0); every matrix float32 holding
    bf16 values. Keeps its own copies of everything it is given."""

    def __init__(
        self,
        kernel: ctypes.CDLL,
        cell: str,
        hidden: int,
        table: np.ndarray,
        w: list[np.ndarray],
        b: list[np.ndarray | None],
        w_dec: np.ndarray,
        b_dec: np.ndarray,
        w_ih: list[np.ndarray | None] | None = None,
        b_ih: list[np.ndarray | None] | None = None,
    ) -> None:
        self.kernel = kernel
        layers, gates = len(w), table.shape[1]
        stacked = cell != "gru"
        self._keep = []  # every array the struct points into, alive as long as the struct

        def floats(a: np.ndarray | None):
            if a is None:
                return None
            a = np.ascontiguousarray(a, dtype=np.float32)
            self._keep.append(a)
            return a.ctypes.data_as(_f32p)

        def bits(a: np.ndarray | None, blocks: int = 1) -> np.ndarray | None:
            if a is None:
                return None
            a = bf16_bits(a, blocks)
            self._keep.append(a)
            return a

        def pointer(a: np.ndarray | None):
            return None if a is None else a.ctypes.data_as(_u16p)

        w_bits = [bits(m, 2 if stacked and l > 0 else 1) for l, m in enumerate(w)]
        w_ptrs = (_u16p * layers)(*[pointer(m) for m in w_bits])
        b_ptrs = (_f32p * layers)(*[floats(v) for v in b])
        ih = w_ih or [None] * layers
        ihb = b_ih or [None] * layers
        ih_bits = [bits(m) for m in ih]
        w_ih_ptrs = (_u16p * layers)(*[pointer(m) for m in ih_bits])
        dec_bits = bits(w_dec)
        b_ih_ptrs = (_f32p * layers)(*[floats(v) for v in ihb])
        self._keep += [w_ptrs, b_ptrs, w_ih_ptrs, b_ih_ptrs]
        self.net = _Net(
            CELL_CODES[cell],
            layers,
            hidden,
            padded(hidden),
            len(b_dec),
            gates,
            floats(table),
            w_ptrs,
            b_ptrs,
            w_ih_ptrs,
            b_ih_ptrs,
            pointer(dec_bits),
            floats(b_dec),
            floats(np.zeros(gates)),
            floats(np.zeros(gates)),
        )
        scratch = np.zeros(2 * padded(hidden), np.uint16)
        self._keep.append(scratch)
        self.net.input = scratch.ctypes.data_as(_u16p)
        self._net_ref = ctypes.byref(self.net)
        self._arrays: tuple = ()
        self._addresses: tuple | None = ()
        # Several rows: the same matrices in AMX's layout, where AMX can be had.
        self.batched = bool(kernel.charrnn_amx_ready())
        if self.batched:
            packed = [self._packed(m) for m in w_bits]
            packed_ih = [self._packed(m) for m in ih_bits]
            outputs = max(kernel.charrnn_amx_outputs(gates), kernel.charrnn_amx_outputs(len(b_dec)))
            self._w_amx = (_u16p * layers)(*packed)
            self._w_ih_amx = (_u16p * layers)(*packed_ih)
            self.batch = _Batch(0, outputs, self._w_amx, self._w_ih_amx, self._packed(dec_bits))
            self._batch_ref = ctypes.byref(self.batch)
            self._batch_scratch: tuple = ()

    def _packed(self, bits: np.ndarray | None):
        """A bf16 matrix (rows, k) in AMX's layout (``charrnn_amx_pack``), kept alive."""
        if bits is None:
            return None
        rows, k = bits.shape
        out = np.zeros(self.kernel.charrnn_amx_outputs(rows) * k, np.uint16)
        self.kernel.charrnn_amx_pack(bits.ctypes.data, rows, k, out.ctypes.data)
        self._keep.append(out)
        return out.ctypes.data_as(_u16p)

    @staticmethod
    def takes(*arrays: np.ndarray | None) -> bool:
        """Whether the kernel can step these arrays in place (C-contiguous float32)."""
        return all(a is None or (a.dtype == np.float32 and a.flags.c_contiguous) for a in arrays)

    def __call__(self, token: int, h: np.ndarray, c: np.ndarray | None, logits: np.ndarray) -> np.ndarray | None:
        """Feed ``token``: ``h`` (1, layers*hidden) and ``c`` (layers, 1, hidden) become the
        next state, ``logits`` (1, vocab) the next character's. None, with nothing changed,
        where the kernel cannot step these arrays in place (not ``takes``)."""
        arrays = (h, c, logits)
        if not self._arrays or any(a is not b for a, b in zip(arrays, self._arrays)):
            # The sampling loop steps the same arrays every time: they are checked, and their
            # addresses looked up, once.
            self._arrays = arrays
            self._addresses = tuple(None if a is None else a.ctypes.data for a in arrays) if self.takes(*arrays) else None
        if self._addresses is None:
            return None
        self.kernel.charrnn_bf16_step(self._net_ref, token, *self._addresses)
        return logits

    def rows(self, ids: np.ndarray, h: np.ndarray, c: np.ndarray | None, logits: np.ndarray) -> np.ndarray | None:
        """``__call__`` for several rows at once (only where ``batched``): ``ids`` (N,), ``h``
        (N, layers*hidden), ``c`` (layers, N, hidden), ``logits`` (N, vocab), in place. None,
        with nothing changed, where the kernel cannot step these arrays in place."""
        n = len(ids)
        if not self.takes(h, c, logits) or h.shape[0] != n or logits.shape[0] != n:
            return None
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if n > self.batch.capacity:
            self._grow(n)
        self.kernel.charrnn_bf16_steps(
            self._net_ref, self._batch_ref, n, ids.ctypes.data, h.ctypes.data, None if c is None else c.ctypes.data, logits.ctypes.data
        )
        return logits

    def _grow(self, n: int) -> None:
        """Scratch for ``n`` rows and more: a batch that grows one stream at a time reallocates
        at each doubling only."""
        capacity = -(-max(n, 2 * self.batch.capacity) // ROW_BLOCK) * ROW_BLOCK
        stride = self.net.stride
        total = np.zeros(capacity * self.batch.width, np.float32)
        total_ih = np.zeros(capacity * self.batch.width, np.float32)
        inputs = np.zeros(capacity * 2 * stride, np.uint16)
        self._batch_scratch = (total, total_ih, inputs)
        self.batch.sum = total.ctypes.data_as(_f32p)
        self.batch.sum_ih = total_ih.ctypes.data_as(_f32p)
        self.batch.input = inputs.ctypes.data_as(_u16p)
        self.batch.capacity = capacity
