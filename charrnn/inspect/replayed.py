"""A model's recurrent layers replayed over a whole text, without gradients: every layer's
states and gates at every step, as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charrnn.inspect.cells import GATES, replay
from charrnn.model.network import CharRNN


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


def replay_text(model: CharRNN, ids: np.ndarray) -> Replayed:
    device = next(model.parameters()).device
    tokens = torch.as_tensor(np.asarray(ids), dtype=torch.long, device=device).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            trace = replay(model.rnn, model.embedding(tokens))
    finally:
        model.train(was_training)

    def as_array(tensor: torch.Tensor) -> np.ndarray:
        return tensor[:, 0].float().cpu().numpy() if tensor.dim() == 4 else tensor[0].float().cpu().numpy()

    hidden = as_array(trace.stacked("hidden"))
    cell = as_array(trace.stacked("cell")) if trace.kind == "lstm" else None
    gates = {
        name: np.stack([as_array(trace.stacked_gate(layer, name)) for layer in range(len(trace.hidden))])
        for name in GATES[trace.kind]
    }
    return Replayed(trace.kind, hidden, cell, gates)
