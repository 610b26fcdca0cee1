"""The recurrent layers of a fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` replayed one step at a
time from the module's own weights, so that every gate and every per-step state the fused
kernel keeps to itself can be read, and differentiated against, one step at a time.

The formulas are PyTorch's (the documentation of each module); ``tests/test_inspect_cells.py``
checks that the replay reproduces the fused module's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from charrnn.cells import CELLS

# The gates each cell computes, in the order PyTorch stacks their weights, and those squashed
# by a sigmoid into (0, 1), by cell name (from the registry, charrnn.cells).
GATES = {name: cell.gates for name, cell in CELLS.items()}
SIGMOID_GATES = {name: cell.sigmoid_gates for name, cell in CELLS.items()}


def cell_kind(rnn: nn.RNNBase) -> str:
    """The registry's name of a fused torch module's cell."""
    return next(name for name, cell in CELLS.items() if type(rnn).__name__ == cell.module)


@dataclass
class Trace:
    """Everything the layers computed on one sequence, step by step.

    ``hidden[l][t]`` is layer ``l``'s output h at step ``t``, shape (B, H); ``cell[l][t]`` the
    LSTM's c (empty for the other cells); ``gates[l][name][t]`` the gate's activation (B, H).
    The lists hold the tensors the computation used, so gradients can be taken against them.
    """

    kind: str
    inputs: list[torch.Tensor]
    hidden: list[list[torch.Tensor]] = field(default_factory=list)
    cell: list[list[torch.Tensor]] = field(default_factory=list)
    gates: list[dict[str, list[torch.Tensor]]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.inputs)

    def stacked(self, which: str) -> torch.Tensor:
        """``hidden`` or ``cell`` as one tensor (layers, B, T, H), detached."""
        per_layer = getattr(self, which)
        return torch.stack([torch.stack(steps, dim=1) for steps in per_layer]).detach()

    def stacked_gate(self, layer: int, name: str) -> torch.Tensor:
        """One gate of one layer as (B, T, H), detached."""
        return torch.stack(self.gates[layer][name], dim=1).detach()

    def output(self) -> torch.Tensor:
        """The top layer's h at every step, (B, T, H): what the fused module returns."""
        return torch.stack(self.hidden[-1], dim=1)


def _weights(rnn: nn.RNNBase, layer: int):
    suffix = f"_l{layer}"
    w_ih = getattr(rnn, "weight_ih" + suffix)
    w_hh = getattr(rnn, "weight_hh" + suffix)
    b_ih = getattr(rnn, "bias_ih" + suffix, None) if rnn.bias else None
    b_hh = getattr(rnn, "bias_hh" + suffix, None) if rnn.bias else None
    return w_ih, w_hh, b_ih, b_hh


def _check_supported(rnn: nn.RNNBase) -> None:
    if rnn.bidirectional or getattr(rnn, "proj_size", 0):
        raise ValueError("step-by-step replay covers unidirectional layers without projections")
    if not rnn.batch_first:
        raise ValueError("step-by-step replay expects batch_first layers, as charrnn builds them")


def replay(rnn: nn.RNNBase, inputs: list[torch.Tensor] | torch.Tensor, state=None) -> Trace:
    """Run ``rnn`` over ``inputs`` ((B, T, E), or a list of T tensors (B, E)) one step and one
    layer at a time, as its fused kernel would in evaluation mode (no dropout between layers).
    ``state`` is what the module takes: h0 (L, B, H), or (h0, c0) for an LSTM."""
    _check_supported(rnn)
    kind = cell_kind(rnn)
    steps = list(inputs.unbind(1)) if isinstance(inputs, torch.Tensor) else list(inputs)
    if not steps:
        raise ValueError("nothing to replay: the sequence is empty")
    batch, hidden = steps[0].shape[0], rnn.hidden_size
    zeros = steps[0].new_zeros(rnn.num_layers, batch, hidden)
    if state is None:
        h0, c0 = zeros, zeros
    elif kind == "lstm":
        h0, c0 = state
    else:
        h0, c0 = state, zeros
    trace = Trace(kind=kind, inputs=steps)
    below = steps
    for layer in range(rnn.num_layers):
        w_ih, w_hh, b_ih, b_hh = _weights(rnn, layer)
        h, c = h0[layer], c0[layer]
        hs, cs = [], []
        gates = {name: [] for name in GATES[kind]}
        for x in below:
            h, c, step_gates = _step(kind, rnn, x, h, c, w_ih, w_hh, b_ih, b_hh)
            hs.append(h)
            if kind == "lstm":
                cs.append(c)
            for name, value in step_gates.items():
                gates[name].append(value)
        trace.hidden.append(hs)
        trace.gates.append(gates)
        if kind == "lstm":
            trace.cell.append(cs)
        below = hs
    return trace


def _step(kind, rnn, x, h, c, w_ih, w_hh, b_ih, b_hh):
    from_input = F.linear(x, w_ih, b_ih)
    from_state = F.linear(h, w_hh, b_hh)
    if kind == "lstm":
        i, f, g, o = (from_input + from_state).chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c, {"i": i, "f": f, "g": g, "o": o}
    if kind == "gru":
        xr, xz, xn = from_input.chunk(3, dim=-1)
        hr, hz, hn = from_state.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        return h, c, {"r": r, "z": z, "n": n}
    squash = torch.tanh if rnn.nonlinearity == "tanh" else torch.relu
    return squash(from_input + from_state), c, {}
