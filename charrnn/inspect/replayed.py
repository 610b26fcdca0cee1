"""A model's recurrent layers replayed over a whole text, without gradients: every layer's
states and gates at every step, as numpy arrays.

The arrays are all that is kept: (layers, T, H) float32 each, allocated once and filled a
piece of the text at a time. Each piece runs through the layer's own fused kernel (the h the
model computes), the gates are then computed for the whole piece at once from the h of the
step before, and an LSTM's cell state follows c = f * c + i * g, the one recurrence that
stays a loop. A tensor per step (what ``cells.replay`` keeps, so that it can be
differentiated against) costs about 580 bytes of object beside 128 bytes of data for 32
units: 5.4 KB per character for a 1x32 LSTM, where the arrays take 768 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from charrnn.cells import CELLS
from charrnn.inspect.cells import GATES, cell_kind
from charrnn.memory import largest_fitting, require_memory
from charrnn.model.network import CharRNN

# Values of a piece's temporaries (gates of every step of the piece): at most 4 Mi, so a
# piece's own memory stays under ~100 MB whatever the model.
PIECE_VALUES = 1 << 22
PIECE_STEPS = 8192

# Bytes per character the views of ``charrnn inspect`` add beside the replayed arrays, at
# most: the five float64 text features --find computes and one centred copy (48), the text
# as a numpy string array for --dump-states (4 per character of a piece) and a pointer to each
# piece (8); plus, for an LSTM, tanh(c) as a whole (layers x units x 4) for --state c.
VIEW_BYTES_PER_CHAR = 64


@dataclass(frozen=True)
class Replayed:
    """``hidden`` (layers, T, H); ``cell`` the same for an LSTM, else None; ``gates`` maps a
    gate's name to (layers, T, H). All float32."""

    kind: str
    hidden: np.ndarray
    cell: np.ndarray | None
    gates: dict[str, np.ndarray]

    @property
    def layers(self) -> int:
        return self.hidden.shape[0]

    @property
    def units(self) -> int:
        return self.hidden.shape[2]

    def state(self, which: str) -> np.ndarray:
        """``h``, or for an LSTM ``c`` squashed by tanh (what reaches h, in [-1, 1])."""
        if which == "h":
            return self.hidden
        if self.cell is None:
            raise ValueError(f"a {self.kind.upper()} has no cell state")
        return np.tanh(self.cell)


def replay_bytes_per_char(cell: str, layers: int, hidden: int) -> int:
    """What ``replay_text`` and the views after it keep per character of text: h, the LSTM's
    c and every gate, float32, for every layer, and the views' own arrays."""
    arrays = CELLS[cell].state_parts + len(GATES[cell])
    views = VIEW_BYTES_PER_CHAR + (layers * hidden * 4 if CELLS[cell].has_cell_state else 0)
    return arrays * layers * hidden * 4 + views


def shape_name(cell: str, layers: int, hidden: int) -> str:
    """"an LSTM 2x256", "a GRU 1x32": the model as the messages name it."""
    article = "a" if cell == "gru" else "an"
    return f"{article} {cell.upper()} {layers}x{hidden}"


def check_replay_memory(config, chars: int, held_per_char: int = 0) -> None:
    """Refuse to replay ``chars`` characters through a model of ``config``'s shape when its
    states and gates would not fit in memory, naming the largest --chars that would.
    ``held_per_char``: bytes per character the text already read takes (it shrinks too with
    a smaller --chars)."""
    per_char = replay_bytes_per_char(config.cell, config.layers, config.hidden)
    need = chars * per_char
    fit = largest_fitting(per_char + held_per_char, held=chars * held_per_char)
    require_memory(
        need,
        f"replaying {chars:,} characters through {shape_name(config.cell, config.layers, config.hidden)} "
        f"({per_char:,} bytes of states and gates per character)",
        f"at most --chars {fit:,} fits" if fit else "free some memory or use a smaller model",
    )


def replay_text(model: CharRNN, ids: np.ndarray) -> Replayed:
    """Every layer's h (and c) and gates at every character of ``ids``; refused before any
    allocation when they would not fit in memory."""
    rnn = model.rnn
    kind = cell_kind(rnn)
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    steps, layers, hidden = ids.numel(), rnn.num_layers, rnn.hidden_size
    if steps == 0:
        raise ValueError("nothing to replay: the sequence is empty")
    check_replay_memory(model.config, steps, held_per_char=16)
    hidden_out = np.empty((layers, steps, hidden), np.float32)
    cell_out = np.empty((layers, steps, hidden), np.float32) if CELLS[kind].has_cell_state else None
    gates = {name: np.empty((layers, steps, hidden), np.float32) for name in GATES[kind]}
    gate_width = max(1, len(GATES[kind])) * hidden
    piece = max(64, min(PIECE_STEPS, PIECE_VALUES // gate_width))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            embedding = model.embedding.weight.detach().float().cpu()
            for layer in range(layers):
                fused = _one_layer(rnn, layer)
                h = torch.zeros(1, 1, hidden)
                c = torch.zeros(1, 1, hidden)
                c_numpy = np.zeros(hidden, np.float32)
                for start in range(0, steps, piece):
                    end = min(start + piece, steps)
                    if layer == 0:
                        x = embedding.index_select(0, ids[start:end])
                    else:
                        x = torch.from_numpy(hidden_out[layer - 1, start:end])
                    before = h[0, 0]
                    if kind == "lstm":
                        out, (h, c) = fused(x.unsqueeze(0), (h, c))
                    else:
                        out, h = fused(x.unsqueeze(0), h)
                    out = out[0]
                    hidden_out[layer, start:end] = out.numpy()
                    previous = torch.cat([before.unsqueeze(0), out[:-1]])
                    views = {name: gates[name][layer, start:end] for name in gates}
                    _gates(kind, fused, x, previous, views)
                    if kind == "lstm":
                        c_numpy = _cell_states(views, cell_out[layer, start:end], c_numpy)
    finally:
        model.train(was_training)
    return Replayed(kind, hidden_out, cell_out, gates)


def _one_layer(rnn: nn.RNNBase, layer: int) -> nn.RNNBase:
    """Layer ``layer`` of ``rnn`` as a module of its own, sharing its weights, so that the h of
    every layer comes from the fused kernel the model itself runs."""
    width = rnn.input_size if layer == 0 else rnn.hidden_size
    options = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    single = type(rnn)(width, rnn.hidden_size, num_layers=1, bias=rnn.bias, batch_first=True, **options)
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
    single.load_state_dict({f"{name}_l0": getattr(rnn, f"{name}_l{layer}").detach().float().cpu() for name in names})
    return single.eval()


def _gates(kind: str, layer: nn.RNNBase, x: torch.Tensor, previous: torch.Tensor, out: dict[str, np.ndarray]) -> None:
    """Each gate of a piece of steps, from its inputs ``x`` (S, E) and the h of the step before
    each (S, H), written into ``out`` (PyTorch's formulas, as in ``cells._step``)."""
    if kind == "rnn":
        return
    from_input = F.linear(x, layer.weight_ih_l0, getattr(layer, "bias_ih_l0", None))
    from_state = F.linear(previous, layer.weight_hh_l0, getattr(layer, "bias_hh_l0", None))
    target = {name: torch.from_numpy(values) for name, values in out.items()}
    if kind == "lstm":
        i, f, g, o = (from_input + from_state).chunk(4, dim=-1)
        torch.sigmoid(i, out=target["i"])
        torch.sigmoid(f, out=target["f"])
        torch.tanh(g, out=target["g"])
        torch.sigmoid(o, out=target["o"])
        return
    xr, xz, xn = from_input.chunk(3, dim=-1)
    hr, hz, hn = from_state.chunk(3, dim=-1)
    torch.sigmoid(xr + hr, out=target["r"])
    torch.sigmoid(xz + hz, out=target["z"])
    torch.tanh(xn + target["r"] * hn, out=target["n"])


def _cell_states(gates: dict[str, np.ndarray], out: np.ndarray, c: np.ndarray) -> np.ndarray:
    """An LSTM's c over a piece, c_t = f_t * c_(t-1) + i_t * g_t from ``c`` before it, into
    ``out``; returns the last. Two numpy calls a step: the only loop over steps here."""
    written = gates["i"] * gates["g"]
    forget = gates["f"]
    for t in range(len(out)):
        np.multiply(forget[t], c, out=out[t])
        out[t] += written[t]
        c = out[t]
    return c.copy()
