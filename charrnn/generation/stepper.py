"""One generation step at a time: ``step(ids, state) -> logits, state``.

Two interchangeable steppers, so that the sampling loop and its filters live in one place
(``charrnn.generation.sample``) whichever runs the model:

- ``EagerStepper`` calls the model itself: the reference path, and cuDNN on a GPU.
- ``FastStepper`` (CPU) runs the same equations on weights laid out once for single steps.

Why the fast path is faster, measured on a 2-core CPU (torch 2.13): a stock ``nn.LSTM``
called with one character re-lays-out its weights for oneDNN at every call, and even a
hand-written torch cell spends most of a step in per-operator dispatch (3-5 us each) and in
MKL's one-row ``addmm`` (13-19 GFLOP/s, against 28-48 GFLOP/s for OpenBLAS's matrix-vector
product through numpy). So the fast path is numpy: the embedding is folded into the first
layer's input projection (a (V, gates) table: layer 0 is one row lookup plus one
matrix-vector product), a deeper LSTM/RNN layer's input and recurrent weights are stacked
so the layer is one product, the LSTM's gate rows are reordered so that i, f, o are one
slice, and every elementwise operation writes in place. Sigmoid gates use
sigmoid(x) = (1 + tanh(x/2)) / 2 with the halving folded into their weight rows (exact: a
power of two), so one ``tanh`` covers all of a layer's gates.

Both start from the same primed state (the prompt always runs through the model, which is
fast for many characters at once) and their logits agree to float rounding (~1e-7), so for
the same seed they draw the same characters; the tests check this on trained models.

In bf16 (``--precision bf16``, a CPU with native bf16 instructions) the eager stepper runs the
model under autocast, and the fast one multiplies bf16 copies of its weights in a small C
kernel compiled on first use (``charrnn.generation.native``: the whole step in one call):
one row with AVX512_BF16's dot products on weights read as bf16, several rows with AMX tiles
(a 2x256 LSTM's step of 32 rows in 0.17 ms against 0.63 ms through torch's product). Where
the kernel cannot be built, one row multiplies in numpy on the same bf16 values widened to
fp32 (torch's one-row bf16 product took 2-5x numpy's fp32 one), and where the CPU or the OS
offers no AMX, several rows multiply in one torch product (oneDNN's bf16 kernels ran
2.8-3.7x fp32's at 32-64 rows). Every path rounds a product's input to bf16 first and its result
after, as torch's product rounds them, so a row's products are the same bf16 numbers summed
in fp32 (in another order: a rounding edge is rarely crossed) and a seeded stream gives the
same text alone or beside others; the gates and the states stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from charrnn.cells import CELLS
from charrnn.generation.native import NativeStep, load_kernel
from charrnn.model.network import CharRNN, State
from charrnn.options import SamplingEngine
from charrnn.precision import autocast, faster_precision, resolve_inference_precision


class Stepper(Protocol):
    # True: ``initial_state(n)`` and ``advance(ids, state) -> logits`` also step numpy ids
    # in place and give numpy logits, which a loop that owns its state may use instead of
    # ``step`` (see FastStepper.advance).
    numpy_steps: bool

    def prime(self, ids: torch.Tensor) -> tuple[torch.Tensor, object]:
        """Run a prompt (N, T) from the initial state: logits of its last step (N, V), state."""

    def step(self, ids: torch.Tensor, state: object | None) -> tuple[torch.Tensor, object]:
        """Feed one id per sample (N,): logits (N, V) and the new state (``state`` is left
        unchanged, so a caller may keep it; None is the initial state)."""

    def select(self, state: object, index: torch.Tensor) -> object:
        """The state of samples ``index`` (reorder, repeat or drop samples: beam search)."""


class EagerStepper:
    """The reference path: the model's own forward, one character at a time."""

    numpy_steps = False

    def __init__(self, model: CharRNN, dtype: torch.dtype = torch.float32) -> None:
        self.model = model.eval()
        self.dtype = dtype

    @torch.no_grad()
    def prime(self, ids: torch.Tensor) -> tuple[torch.Tensor, State]:
        with autocast(ids.device, self.dtype):
            logits, _, state = self.model(ids)
        return logits[:, -1].float(), state

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        with autocast(ids.device, self.dtype):
            logits, _, state = self.model(ids.unsqueeze(1), state)
        return logits[:, -1].float(), state

    def select(self, state: State, index: torch.Tensor) -> State:
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)


@dataclass
class FastState:
    """``h`` (N, layers*hidden): every layer's output side by side, so that a deeper LSTM/RNN
    layer's input [h of the layer below (already new), its own h (still old)] is one slice.
    ``c`` (layers, N, hidden): the LSTM's cell states; None for GRU and RNN."""

    h: np.ndarray
    c: np.ndarray | None

    def copy(self) -> FastState:
        return FastState(self.h.copy(), None if self.c is None else self.c.copy())


def _product(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out (N, M) = x (N, K) @ w (M, K).T; one row goes through OpenBLAS's matrix-vector
    kernel (numpy), several through torch's matrix product on the same memory, which ran
    1.4-2.3x faster for 8-64 rows of a 2x256 LSTM on one thread of a 2-core machine."""
    if x.shape[0] == 1:
        np.dot(w, x[0], out=out[0])
    else:
        torch.mm(torch.from_numpy(x), torch.from_numpy(w).t(), out=torch.from_numpy(out))
    return out


def round_to_bf16_(a: np.ndarray) -> np.ndarray:
    """In place: float32 values rounded to the nearest bf16 (ties to even), as torch's cast
    rounds them, kept as float32. For finite values, as the weights and states are."""
    bits = a.view(np.uint32)
    odd = (bits >> 16) & 1
    bits += 0x7FFF
    bits += odd
    bits &= 0xFFFF0000
    return a


class Weights:
    """A weight matrix w (M, K) and its product with inputs x (N, K): ``into(x, out)`` puts
    x @ w.T in ``out`` (N, M), in fp32 or in bf16 (module docstring)."""

    def __init__(self, w: np.ndarray, dtype: torch.dtype = torch.float32) -> None:
        self.bf16 = dtype == torch.bfloat16
        w = np.ascontiguousarray(w, dtype=np.float32)
        if self.bf16:
            w = round_to_bf16_(w.copy())
            self.torch_bf16 = torch.from_numpy(w).to(torch.bfloat16)  # exact: already bf16 values
        self.w = w

    def into(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if not self.bf16:
            return _product(x, self.w, out)
        if x.shape[0] == 1:
            np.dot(self.w, round_to_bf16_(x[0].copy()), out=out[0])
            round_to_bf16_(out)
        else:
            product = torch.mm(torch.from_numpy(x).to(torch.bfloat16), self.torch_bf16.t())
            torch.from_numpy(out).copy_(product)
        return out


def _sigmoid_from_tanh_(t: np.ndarray) -> np.ndarray:
    """In place: tanh(x/2) -> sigmoid(x). Weight rows of sigmoid gates are pre-halved."""
    t *= 0.5
    t += 0.5
    return t


class FastStepper:
    """The same model on the CPU, weights laid out once for single steps (module docstring)."""

    numpy_steps = True

    def __init__(self, model: CharRNN, dtype: torch.dtype = torch.float32, native: bool = True) -> None:
        """``native``: one row in bf16 steps through the compiled kernel where it can be had
        (``charrnn.generation.native``); False keeps numpy, the reference the tests compare with."""
        if model.decoder.weight.device.type != "cpu":
            raise ValueError("the fast stepper runs on the CPU; use the eager stepper on a GPU")
        if model.config.cell == "rnn" and model.rnn.nonlinearity != "tanh":
            raise ValueError("the fast stepper implements tanh RNNs only")
        self.model = model.eval()
        self.dtype = dtype
        cfg = model.config
        self.cell, self.layers, self.hidden = cfg.cell, cfg.layers, cfg.hidden
        H = cfg.hidden
        # PyTorch stores LSTM gates as i, f, g, o: reorder rows to i, f, o, g.
        order = (
            np.r_[0 : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H] if self.cell == "lstm" else slice(None)
        )
        # Rows of sigmoid gates (in PyTorch's order), halved: see _sigmoid_from_tanh_.
        halve = {"lstm": np.r_[0 : 2 * H, 3 * H : 4 * H], "gru": np.r_[0 : 2 * H]}.get(self.cell)

        def get(name: str, layer: int) -> np.ndarray:
            w = getattr(model.rnn, f"{name}_l{layer}").detach().numpy().astype(np.float32)
            if halve is not None:
                w[halve] *= 0.5
            return w

        emb = model.embedding.weight.detach().numpy().astype(np.float32)
        if self.cell == "gru":
            # The GRU's candidate gate scales only the recurrent product by r, so the input
            # and recurrent products stay separate.
            self.table = np.ascontiguousarray(emb @ get("weight_ih", 0).T + get("bias_ih", 0))
            self.w_ih = [None] + [Weights(get("weight_ih", l), dtype) for l in range(1, self.layers)]
            self.b_ih = [None] + [get("bias_ih", l) for l in range(1, self.layers)]
            self.w_hh = [Weights(get("weight_hh", l), dtype) for l in range(self.layers)]
            self.b_hh = [get("bias_hh", l) for l in range(self.layers)]
        else:
            bias0 = get("bias_ih", 0) + get("bias_hh", 0)
            self.table = np.ascontiguousarray((emb @ get("weight_ih", 0).T + bias0)[:, order])
            self.w = [Weights(get("weight_hh", 0)[order], dtype)]
            self.b = [None]
            for l in range(1, self.layers):
                stacked = np.concatenate([get("weight_ih", l), get("weight_hh", l)], axis=1)
                self.w.append(Weights(stacked[order], dtype))
                self.b.append((get("bias_ih", l) + get("bias_hh", l))[order])
        self.w_dec = Weights(model.decoder.weight.detach().numpy(), dtype)
        self.b_dec = model.decoder.bias.detach().numpy().astype(np.float32)
        self.gates = CELLS[self.cell].weight_blocks * H
        self._scratch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.native = self._native_step() if native and dtype == torch.bfloat16 else None

    def _native_step(self) -> NativeStep | None:
        kernel = load_kernel()
        if kernel is None:
            return None
        if self.cell == "gru":
            w_ih = [None if w is None else w.w for w in self.w_ih]
            recurrent = [w.w for w in self.w_hh]
            return NativeStep(kernel, "gru", self.hidden, self.table, recurrent, self.b_hh, self.w_dec.w, self.b_dec, w_ih, self.b_ih)
        return NativeStep(kernel, self.cell, self.hidden, self.table, [w.w for w in self.w], self.b, self.w_dec.w, self.b_dec)

    # -- state ---------------------------------------------------------------------

    def from_model_state(self, state: State) -> FastState:
        h_all = state[0] if isinstance(state, tuple) else state  # (layers, N, H)
        h = h_all.detach().cpu().float().permute(1, 0, 2).reshape(h_all.size(1), -1).numpy()
        c = state[1].detach().cpu().float().numpy() if isinstance(state, tuple) else None
        return FastState(np.array(h, dtype=np.float32), None if c is None else np.array(c, dtype=np.float32))

    def to_model_state(self, state: FastState) -> State:
        n = state.h.shape[0]
        h = torch.from_numpy(state.h.reshape(n, self.layers, self.hidden).transpose(1, 0, 2).copy())
        return (h, torch.from_numpy(state.c.copy())) if state.c is not None else h

    def initial_state(self, n: int) -> FastState:
        c = np.zeros((self.layers, n, self.hidden), np.float32) if self.cell == "lstm" else None
        return FastState(np.zeros((n, self.layers * self.hidden), np.float32), c)

    def select(self, state: FastState, index: torch.Tensor) -> FastState:
        i = index.cpu().numpy()
        return FastState(state.h[i], None if state.c is None else state.c[:, i])

    # -- steps ---------------------------------------------------------------------

    @torch.no_grad()
    def prime(self, ids: torch.Tensor) -> tuple[torch.Tensor, FastState]:
        with autocast(ids.device, self.dtype):
            logits, _, state = self.model(ids)
        return logits[:, -1].float(), self.from_model_state(state)

    def step(self, ids: torch.Tensor, state: FastState | None) -> tuple[torch.Tensor, FastState]:
        logits, state = self.step_numpy(ids.numpy(), state)
        return torch.from_numpy(logits), state

    def step_numpy(self, x: np.ndarray, state: FastState | None) -> tuple[np.ndarray, FastState]:
        """``step`` on numpy arrays: ids (N,) in, logits (N, V) out."""
        if state is None:
            state = self.initial_state(len(x))
        state = state.copy()
        return self.advance(x, state).copy(), state

    def advance(self, x: np.ndarray, state: FastState) -> np.ndarray:
        """``step_numpy`` in place, for a loop that owns its state: ``state`` becomes the next
        state, and the logits (N, V) come in a buffer that the next call overwrites. At one
        sample the copies and allocations this saves are a tenth of a character's time."""
        gates, tmp, logits = self._buffers(len(x))
        if self.native is not None:
            if not (state.h.flags.c_contiguous and (state.c is None or state.c.flags.c_contiguous)):
                # Rows dropped by indexing c's middle axis (a stream that ended, a beam cut)
                # come back strided; the kernel steps C-ordered arrays, so the state is put in
                # that order once rather than every later step leaving the kernel.
                state.h = np.ascontiguousarray(state.h)
                state.c = None if state.c is None else np.ascontiguousarray(state.c)
            if len(x) == 1:
                stepped = self.native(int(x[0]), state.h, state.c, logits)
            else:
                stepped = self.native.rows(x, state.h, state.c, logits) if self.native.batched else None
            if stepped is not None:
                return stepped
        if self.cell == "lstm":
            self._lstm(x, state.h, state.c, gates, tmp)
        elif self.cell == "gru":
            self._gru(x, state.h, gates, tmp)
        else:
            self._rnn(x, state.h, gates)
        top = state.h[:, (self.layers - 1) * self.hidden :]
        self.w_dec.into(top, logits)
        logits += self.b_dec
        return logits

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scratch arrays for ``n`` samples, made once: gates, a second gates-sized array
        (the GRU's input side, or the LSTM's (N, H) temporary), and the logits."""
        if self._scratch is None or self._scratch[0].shape[0] != n:
            tmp_width = self.gates if self.cell == "gru" else self.hidden
            self._scratch = (
                np.empty((n, self.gates), np.float32),
                np.empty((n, tmp_width), np.float32),
                np.empty((n, len(self.b_dec)), np.float32),
            )
        return self._scratch

    def _layer_input(self, x: np.ndarray, h: np.ndarray, layer: int, gates: np.ndarray) -> None:
        """gates = W [input; h] + b for an LSTM/RNN layer (layer 0: table row for the input)."""
        H = self.hidden
        if layer == 0:
            self.w[0].into(h[:, :H], gates)
            gates += self.table[x]
        else:
            self.w[layer].into(h[:, (layer - 1) * H : (layer + 1) * H], gates)
            gates += self.b[layer]

    def _lstm(self, x: np.ndarray, h: np.ndarray, c: np.ndarray, gates: np.ndarray, tmp: np.ndarray) -> None:
        H = self.hidden
        for l in range(self.layers):
            self._layer_input(x, h, l, gates)
            np.tanh(gates, out=gates)
            _sigmoid_from_tanh_(gates[:, : 3 * H])
            g = gates[:, 3 * H :]
            cl = c[l]
            cl *= gates[:, H : 2 * H]
            np.multiply(gates[:, :H], g, out=tmp)
            cl += tmp
            np.tanh(cl, out=tmp)
            np.multiply(gates[:, 2 * H : 3 * H], tmp, out=h[:, l * H : (l + 1) * H])

    def _rnn(self, x: np.ndarray, h: np.ndarray, gates: np.ndarray) -> None:
        H = self.hidden
        for l in range(self.layers):
            self._layer_input(x, h, l, gates)
            np.tanh(gates, out=h[:, l * H : (l + 1) * H])

    def _gru(self, x: np.ndarray, h: np.ndarray, gh: np.ndarray, gi: np.ndarray) -> None:
        H = self.hidden
        for l in range(self.layers):
            if l == 0:
                gi[:] = self.table[x]
            else:
                self.w_ih[l].into(h[:, (l - 1) * H : l * H], gi)
                gi += self.b_ih[l]
            hl = h[:, l * H : (l + 1) * H]
            self.w_hh[l].into(hl, gh)
            gh += self.b_hh[l]
            rz = np.add(gi[:, : 2 * H], gh[:, : 2 * H])
            _sigmoid_from_tanh_(np.tanh(rz, out=rz))
            n = gh[:, 2 * H :]
            n *= rz[:, :H]
            n += gi[:, 2 * H :]
            np.tanh(n, out=n)
            # h' = (1 - z) * n + z * h  ==  n + z * (h - n)
            hl -= n
            hl *= rz[:, H:]
            hl += n


# "auto" uses the fast path for this many samples at most. Batched sampling is a matrix-matrix
# product per layer, where torch's own kernels are as good as OpenBLAS's, and numpy's
# products for several rows met other threads on a busy 2-core machine far worse than
# torch's (measured 2.4k against 27k chars/s at 64 samples for 2x256).
FAST_MAX_SAMPLES = 1


def make_stepper(model: CharRNN, engine: str = "auto", num_samples: int = 1, dtype: torch.dtype = torch.float32) -> Stepper:
    """``fast`` on the CPU (``auto``: for a single sample); on a GPU always the eager one,
    which runs cuDNN's fused layers. ``dtype``: the precision of the products (float32 or
    bfloat16; see ``charrnn.precision``)."""
    if uses_fast_stepper(model, engine, num_samples):
        return FastStepper(model, dtype)
    return EagerStepper(model, dtype)


def uses_fast_stepper(model: CharRNN, engine: str, num_samples: int) -> bool:
    """Whether ``make_stepper`` gives the fast stepper for these arguments."""
    engine = SamplingEngine(engine).value
    on_cpu = model.decoder.weight.device.type == "cpu"
    nonlinear_ok = model.config.cell != "rnn" or model.rnn.nonlinearity == "tanh"
    wanted = engine == "fast" or (engine == "auto" and num_samples <= FAST_MAX_SAMPLES)
    return wanted and on_cpu and nonlinear_ok


# The most rows ``choose_precision`` times: a bigger batch is stepped in pieces of about this
# many rows or more (charrnn.generation.batch_memory), and bf16's lead only grows with rows.
PROBE_ROWS = 256
# ``auto`` times bf16 only for the fast stepper from this many rows up. Below, and on the
# model's own layers, it stays fp32 without a probe. On the model's own layers, and at a few
# rows, bf16 never gained on a 2-core Xeon with AMX (the own layers at 64 rows 1.00x;
# docs/performance.md), and a probe that cannot find a gain could only find noise: a busy
# machine would flip the text a seed gives. One row through the native kernel does gain
# (1.5-2x for 2x256), but there ``auto`` keeps fp32 so that a seed gives the text it always
# has, and a served stream the text ``charrnn sample`` gives: ``--precision bf16`` asks.
PROBE_MIN_ROWS = 16


def choose_precision(
    model: CharRNN, engine: str, num_samples: int, choice: str, device: torch.device
) -> tuple[torch.dtype, dict[torch.dtype, float] | None]:
    """The precision to sample ``num_samples`` rows in: ``choice`` where it names one, else
    (``auto`` on a CPU with native bf16, the fast stepper, ``PROBE_MIN_ROWS`` rows or more)
    whichever of fp32 and bf16 a probe of this model's step at this batch finds faster
    (``charrnn.precision.faster_precision``), fp32 otherwise; with the probe's seconds per
    step, None where nothing was timed."""
    dtype = resolve_inference_precision(choice, device)
    if dtype is not None:
        return dtype, None
    rows = min(num_samples, PROBE_ROWS)
    if rows < PROBE_MIN_ROWS or not uses_fast_stepper(model, engine, rows):
        return torch.float32, None
    steps = {d: _probe_step(make_stepper(model, engine, rows, d), rows) for d in (torch.float32, torch.bfloat16)}
    return faster_precision(steps)


def _probe_step(stepper: Stepper, rows: int) -> Callable[[], object]:
    """One step of ``rows`` samples as the sampling loop takes it, for timing."""
    if stepper.numpy_steps:
        ids, state = np.zeros(rows, np.int64), stepper.initial_state(rows)
        return lambda: stepper.advance(ids, state)
    ids = torch.zeros(rows, dtype=torch.long)
    return lambda: stepper.step(ids, None)
