"""The one-step model that the pt2 and ONNX files hold, and the description every export carries.

A step takes ids (B, 1) and the state (S, layers, B, hidden) and gives the next-token logits
(B, V) and the new state. The state is one tensor for every cell type (S = 2 for an LSTM: h
then c; S = 1 for a GRU or RNN), so a caller's loop need not know the cell. Only the batch is
a dynamic dimension: torch.export cannot make the time axis dynamic through a recurrent layer
(upstream pytorch#115092), so a prompt is fed one token at a time, as generation does anyway.
"""

from __future__ import annotations

import copy
import json

import torch
import torch.nn as nn

from charrnn.cells import CELLS
from charrnn import __version__
from charrnn.model.network import CharRNN

METADATA = "charrnn.json"
TOKENIZER = "tokenizer.json"
# torch.export needs an example batch of at least 2 to keep the batch dimension dynamic (a
# batch of 1 is specialised to the constant 1).
EXAMPLE_BATCH = 2
MAX_BATCH = 1 << 16


class StepModule(nn.Module):
    """(ids (B, 1), state (S, layers, B, hidden)) -> (logits (B, V), state); inference only
    (dropout is gone)."""

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        model = copy.deepcopy(model).cpu().float().eval()
        self.embedding = model.embedding
        self.rnn = model.rnn
        self.decoder = model.decoder
        self.lstm = CELLS[model.config.cell].has_cell_state

    def forward(self, ids: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embedding(ids)
        if self.lstm:
            out, (h, c) = self.rnn(x, (state[0], state[1]))
            new_state = torch.stack([h, c])
        else:
            out, h = self.rnn(x, state[0])
            new_state = h.unsqueeze(0)
        return self.decoder(out[:, -1]), new_state


def state_parts(model: CharRNN) -> int:
    return CELLS[model.config.cell].state_parts


def zero_state(model: CharRNN, batch: int) -> torch.Tensor:
    return torch.zeros(state_parts(model), model.config.layers, batch, model.config.hidden)


def example_inputs(model: CharRNN) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(EXAMPLE_BATCH, 1, dtype=torch.long), zero_state(model, EXAMPLE_BATCH)


def describe(model: CharRNN, vocab, file_format: str, source: dict | None = None) -> dict:
    """What a user of the file needs besides the weights: the model's shape, how the state is
    laid out, and the vocabulary (its characters, or for bytes and BPE the kind; the
    tokenizer.json travels beside it)."""
    config = model.config
    return {
        "format": file_format,
        "charrnn_version": __version__,
        "model_config": config.to_dict(),
        "inputs": {"ids": "int64 (batch, 1)", "state": f"float32 ({state_parts(model)}, {config.layers}, batch, {config.hidden})"},
        "outputs": {"logits": f"float32 (batch, {config.vocab_size})", "state": "as the input state"},
        "state_layout": "LSTM: [h, c]; GRU and RNN: [h]; zeros to start",
        "vocab_kind": vocab.kind,
        "vocab": list(vocab.chars) if vocab.kind == "chars" else None,
        **(source or {}),
    }


def tokenizer_json(vocab) -> str:
    """The vocabulary as a Hugging Face tokenizer.json, for every kind."""
    stored = getattr(vocab, "tokenizer_json", None)
    return stored if stored is not None else vocab.to_tokenizer().to_str()


def carried_files(description: dict, vocab) -> dict[str, str]:
    """What a pt2 or ONNX file carries beside the model, by name: ``charrnn.json`` (the
    description) and ``tokenizer.json``."""
    return {METADATA: json.dumps(description, ensure_ascii=False, indent=2), TOKENIZER: tokenizer_json(vocab)}
