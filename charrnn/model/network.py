"""The model: embedding -> one fused multi-layer nn.LSTM / nn.GRU / nn.RNN -> linear decoder.

The recurrent layers are a single module call so that cuDNN runs all layers and time steps
in one kernel sequence on GPU.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# ModelConfig lives with the other configs (torch-free, so that a saved run can hold one);
# it is imported from here as the model's config.
from charrnn.cells import CELLS
from charrnn.options import ModelConfig

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]



class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed)
        self.rnn = getattr(nn, CELLS[config.cell].module)(
            config.embed,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.hidden, config.vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # Unit-variance embeddings: with std 0.1 the input barely moves the first layer's gates
        # and training sits on the unigram plateau (~3.3 nats) for the first hundred steps.
        nn.init.normal_(self.embedding.weight, std=1.0)
        gates = CELLS[self.config.cell].gates
        if "f" in gates:
            # Forget-gate bias 1 (Jozefowicz et al. 2015): gradients flow through the cell
            # state from the first step. PyTorch splits the bias in two; set it once.
            h, block = self.config.hidden, gates.index("f")
            for name, bias in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    with torch.no_grad():
                        bias[block * h : (block + 1) * h].fill_(1.0)

    def start_from_frequencies(self, counts: torch.Tensor) -> None:
        """Set the decoder's bias to the log of each token's frequency in the training text
        (``counts``, one per vocabulary entry; add-one smoothed, so a token never seen is
        unlikely, not impossible). The first step then predicts at the unigram level instead
        of uniformly: with AdamW each bias moves by about the learning rate per step, so on a
        large vocabulary (thousands of characters, log-frequencies spread over ten nats)
        learning the frequencies alone took hundreds of steps and crowded out the rest."""
        counts = counts.to(torch.float64).reshape(-1) + 1.0
        if counts.numel() != self.config.vocab_size:
            raise ValueError(f"{counts.numel()} counts for a vocabulary of {self.config.vocab_size}")
        with torch.no_grad():
            self.decoder.bias.copy_(torch.log(counts / counts.sum()).to(self.decoder.bias.dtype))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        shape = (self.config.layers, batch_size, self.config.hidden)
        zeros = torch.zeros(shape, device=device)
        if CELLS[self.config.cell].has_cell_state:
            return (zeros, torch.zeros(shape, device=device))
        return zeros

    def forward(
        self,
        idx: torch.Tensor,
        state: State | None = None,
        targets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """``idx`` (B, T) ids -> logits (B, T, V), mean cross-entropy in nats (if ``targets``),
        and the recurrent state after the last step."""
        x = self.drop(self.embedding(idx))
        out, state = self.rnn(x, state)
        logits = self.decoder(self.drop(out))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss, state


def state_batch_size(state: State) -> int:
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def detach_state(state: State) -> State:
    """Cut the graph at the window boundary (truncated BPTT) but keep the values, in fp32:
    under bf16 autocast the layers return bf16 states, which widen exactly, and a state
    carried in fp32 continues in either precision (a checkpoint holds it)."""
    if isinstance(state, tuple):
        return tuple(s.detach().float() for s in state)
    return state.detach().float()


def state_to(state: State, device: torch.device | str) -> State:
    if isinstance(state, tuple):
        return tuple(s.to(device) for s in state)
    return state.to(device)


def state_as_list(state: State | None) -> list[torch.Tensor]:
    if state is None:
        return []
    return [s.detach().cpu() for s in state] if isinstance(state, tuple) else [state.detach().cpu()]


def state_from_list(tensors: list[torch.Tensor], cell: str) -> State | None:
    if not tensors:
        return None
    return tuple(tensors) if CELLS[cell].has_cell_state else tensors[0]
