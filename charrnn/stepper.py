"""One generation step at a time: ``step(ids, state) -> logits, state``.

Two interchangeable steppers, so that the sampling loop and its filters live in one place
(``charrnn.sample``) whichever runs the model:

- ``EagerStepper`` calls the model itself (the reference path, and cuDNN on a GPU).
- ``FastStepper`` runs the same equations with weights laid out once for a single step.
  A stock ``nn.LSTM`` called with one character re-lays-out its weights for oneDNN at every
  call, which makes batch-1 sampling several times slower than reading the weights once.
  Here the embedding is folded into the first layer's input projection (a (V, gates) table,
  so layer 0 costs one lookup and one matrix-vector product), the input and recurrent
  weights of deeper LSTM/RNN layers are stacked so that each layer is one ``addmm``, gate
  rows are reordered so that one ``sigmoid_`` covers the LSTM's i, f, o gates, and every
  elementwise operation writes in place.

Both start from the same primed state (the prompt is always run through the model, which is
fast for many characters at once), and their logits agree to float rounding (~1e-6), so for
the same seed they draw the same characters; the tests check this on trained models.

A stepper's state is opaque to callers except for ``select``, which reorders or repeats the
samples of a batch (beam search), and ``from_model_state``, which takes a model's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import torch

from charrnn.model import CharRNN, State


class Engine(str, Enum):
    auto = "auto"  # fast on CPU, the model's own fused layers (cuDNN) on GPU
    fast = "fast"
    eager = "eager"


class Stepper(Protocol):
    def prime(self, ids: torch.Tensor) -> tuple[torch.Tensor, object]:
        """Run a prompt (N, T) from the initial state: logits of its last step (N, V), state."""

    def step(self, ids: torch.Tensor, state: object | None) -> tuple[torch.Tensor, object]:
        """Feed one id per sample (N,): logits (N, V) and the new state (``state`` is kept;
        None is the initial state)."""

    def select(self, state: object, index: torch.Tensor) -> object:
        """The state of samples ``index`` (reorder, repeat or drop samples)."""


class EagerStepper:
    """The reference path: the model's own forward, one character at a time."""

    def __init__(self, model: CharRNN) -> None:
        self.model = model.eval()

    @torch.no_grad()
    def prime(self, ids: torch.Tensor) -> tuple[torch.Tensor, State]:
        logits, _, state = self.model(ids)
        return logits[:, -1], state

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        logits, _, state = self.model(ids.unsqueeze(1), state)
        return logits[:, -1], state

    def select(self, state: State, index: torch.Tensor) -> State:
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)


@dataclass
class FastState:
    """``h`` (N, layers*hidden): every layer's output side by side, so that a deeper LSTM/RNN
    layer's input [h of the layer below (new), its own h (old)] is one contiguous slice.
    ``c`` (layers, N, hidden): LSTM cell states; None for GRU and RNN."""

    h: torch.Tensor
    c: torch.Tensor | None


def _lstm_gate_order(hidden: int, device) -> torch.Tensor:
    """PyTorch stores LSTM gates as i, f, g, o; reorder rows to i, f, o, g."""
    h = hidden
    return torch.cat(
        [torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)]
    ).to(device)


class FastStepper:
    """The same model, weights laid out once for single-step inference (see module docstring)."""

    def __init__(self, model: CharRNN) -> None:
        self.model = model.eval()
        cfg = model.config
        self.cell, self.layers, self.hidden = cfg.cell, cfg.layers, cfg.hidden
        if self.cell == "rnn" and model.rnn.nonlinearity != "tanh":
            raise ValueError("the fast stepper implements tanh RNNs only")
        rnn, H = model.rnn, cfg.hidden
        with torch.no_grad():
            order = (
                _lstm_gate_order(H, model.decoder.weight.device)
                if self.cell == "lstm"
                else None
            )

            def rows(w: torch.Tensor) -> torch.Tensor:
                return w if order is None else w.index_select(0, order)

            def p(name: str, layer: int) -> torch.Tensor:
                return getattr(rnn, f"{name}_l{layer}").detach()

            emb = model.embedding.weight.detach()
            if self.cell == "gru":
                # GRU's candidate gate multiplies only the recurrent part by r: the input and
                # recurrent products stay separate.
                self.table = (emb @ p("weight_ih", 0).T + p("bias_ih", 0)).contiguous()
                self.w_ih = [None] + [p("weight_ih", l).T.contiguous() for l in range(1, self.layers)]
                self.b_ih = [None] + [p("bias_ih", l).unsqueeze(0) for l in range(1, self.layers)]
                self.w_hh = [p("weight_hh", l).T.contiguous() for l in range(self.layers)]
                self.b_hh = [p("bias_hh", l).unsqueeze(0) for l in range(self.layers)]
            else:
                bias0 = p("bias_ih", 0) + p("bias_hh", 0)
                self.table = rows((emb @ p("weight_ih", 0).T + bias0).T).T.contiguous()
                self.w = [rows(p("weight_hh", 0)).T.contiguous()]
                self.b = [None]
                for l in range(1, self.layers):
                    stacked = torch.cat([p("weight_ih", l), p("weight_hh", l)], dim=1)
                    self.w.append(rows(stacked).T.contiguous())
                    self.b.append(rows(p("bias_ih", l) + p("bias_hh", l)).unsqueeze(0))
            self.w_dec = model.decoder.weight.detach().T.contiguous()
            self.b_dec = model.decoder.bias.detach().unsqueeze(0)

    # -- state ---------------------------------------------------------------------

    def from_model_state(self, state: State) -> FastState:
        h_all = state[0] if isinstance(state, tuple) else state  # (layers, N, H)
        h = h_all.permute(1, 0, 2).reshape(h_all.size(1), -1).contiguous()
        c = state[1].contiguous() if isinstance(state, tuple) else None
        return FastState(h, c)

    def to_model_state(self, state: FastState) -> State:
        n = state.h.size(0)
        h = state.h.view(n, self.layers, self.hidden).permute(1, 0, 2).contiguous()
        return (h, state.c.clone()) if state.c is not None else h

    def select(self, state: FastState, index: torch.Tensor) -> FastState:
        c = None if state.c is None else state.c.index_select(1, index)
        return FastState(state.h.index_select(0, index), c)

    # -- steps ---------------------------------------------------------------------

    @torch.no_grad()
    def prime(self, ids: torch.Tensor) -> tuple[torch.Tensor, FastState]:
        logits, _, state = self.model(ids)
        return logits[:, -1], self.from_model_state(state)

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: FastState | None) -> tuple[torch.Tensor, FastState]:
        if state is None:
            state = self.from_model_state(self.model.initial_state(ids.size(0), ids.device))
        h = state.h.clone()
        c = None if state.c is None else state.c.clone()
        if self.cell == "lstm":
            self._lstm(ids, h, c)
        elif self.cell == "gru":
            self._gru(ids, h)
        else:
            self._rnn(ids, h)
        top = h[:, (self.layers - 1) * self.hidden :]
        return torch.addmm(self.b_dec, top, self.w_dec), FastState(h, c)

    def _lstm(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> None:
        H = self.hidden
        for l in range(self.layers):
            if l == 0:
                gates = torch.addmm(self.table[ids], h[:, :H], self.w[0])
            else:
                gates = torch.addmm(self.b[l], h[:, (l - 1) * H : (l + 1) * H], self.w[l])
            gates[:, : 3 * H].sigmoid_()
            g = gates[:, 3 * H :].tanh_()
            cl = c[l]
            cl.mul_(gates[:, H : 2 * H]).addcmul_(gates[:, :H], g)
            torch.mul(gates[:, 2 * H : 3 * H], torch.tanh(cl), out=h[:, l * H : (l + 1) * H])

    def _rnn(self, ids: torch.Tensor, h: torch.Tensor) -> None:
        H = self.hidden
        for l in range(self.layers):
            if l == 0:
                pre = torch.addmm(self.table[ids], h[:, :H], self.w[0])
            else:
                pre = torch.addmm(self.b[l], h[:, (l - 1) * H : (l + 1) * H], self.w[l])
            torch.tanh(pre, out=h[:, l * H : (l + 1) * H])

    def _gru(self, ids: torch.Tensor, h: torch.Tensor) -> None:
        H = self.hidden
        for l in range(self.layers):
            if l == 0:
                gi = self.table[ids]
            else:
                gi = torch.addmm(self.b_ih[l], h[:, (l - 1) * H : l * H], self.w_ih[l])
            hl = h[:, l * H : (l + 1) * H]
            gh = torch.addmm(self.b_hh[l], hl, self.w_hh[l])
            rz = torch.add(gi[:, : 2 * H], gh[:, : 2 * H]).sigmoid_()
            n = torch.addcmul(gi[:, 2 * H :], rz[:, :H], gh[:, 2 * H :]).tanh_()
            # h' = (1 - z) * n + z * h  ==  n + z * (h - n)
            hl.sub_(n).mul_(rz[:, H:]).add_(n)


def make_stepper(model: CharRNN, engine: str = "auto") -> Stepper:
    engine = Engine(engine).value
    device = model.decoder.weight.device
    if engine == "eager" or (engine == "auto" and device.type == "cuda"):
        return EagerStepper(model)
    if engine == "auto" and model.config.cell == "rnn" and model.rnn.nonlinearity != "tanh":
        return EagerStepper(model)
    return FastStepper(model)
