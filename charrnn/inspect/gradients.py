"""Gradient flow through time: how much the loss at the last step of a window of text depends on
the input, and on each layer's hidden state, k steps back.

The fused recurrent kernel keeps its per-step gradients inside its backward pass, so the window
is replayed step by step (``cells.replay``) and differentiated against each step's tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.inspect.cells import replay
from charrnn.model.network import CharRNN, ModelConfig


@dataclass(frozen=True)
class GradientFlow:
    """``inputs[k]`` = ||dL/dx|| at k steps before the last (k = 0 is the last step), and
    ``hidden[l][k]`` = ||dL/dh|| of layer ``l`` there; L is the cross-entropy of the last
    step's prediction of the next character."""

    label: str
    inputs: np.ndarray  # (T,)
    hidden: np.ndarray  # (layers, T)
    loss: float

    @property
    def steps(self) -> int:
        return len(self.inputs)


def gradient_flow(model: CharRNN, ids: np.ndarray | torch.Tensor, label: str = "") -> GradientFlow:
    """The gradient of the loss at the last step over a window of ``len(ids) - 1`` steps:
    ``ids[:-1]`` are read, ``ids[-1]`` is the character the last step predicts."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if ids.numel() < 2:
        raise ValueError("a window needs at least two characters: one to read, one to predict")
    device = next(model.parameters()).device
    ids = ids.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            embedded = model.embedding(ids[:-1].unsqueeze(0)).detach()
            inputs = [x.requires_grad_() for x in embedded.unbind(1)]
            trace = replay(model.rnn, inputs)
            logits = model.decoder(trace.hidden[-1][-1])
            loss = F.cross_entropy(logits.float(), ids[-1:])
            wanted = inputs + [h for layer in trace.hidden for h in layer]
            grads = torch.autograd.grad(loss, wanted, allow_unused=True)
    finally:
        model.train(was_training)
    steps = len(inputs)
    norms = np.array([0.0 if g is None else float(g.norm()) for g in grads])
    # Index k counts back from the last step.
    per_input = norms[:steps][::-1].copy()
    per_layer = norms[steps:].reshape(model.config.layers, steps)[:, ::-1].copy()
    return GradientFlow(label, per_input, per_layer, float(loss.detach()))


def fresh_model(config: ModelConfig, seed: int, forget_bias: float | None = None) -> CharRNN:
    """``config``'s architecture as charrnn initialises it, drawn from ``seed`` without touching
    the caller's random state; ``forget_bias`` overrides an LSTM's forget-gate bias (charrnn's
    is 1, PyTorch's own 0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CharRNN(config)
    if forget_bias is not None and config.cell == "lstm":
        hidden = config.hidden
        with torch.no_grad():
            for name, bias in model.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    bias[hidden : 2 * hidden].fill_(forget_bias)
    return model.eval()


# The cells compared at initialisation, on the same text and architecture: a plain RNN, a GRU,
# an LSTM as charrnn initialises it and an LSTM with PyTorch's forget bias of 0.
COMPARED = (
    ("plain RNN", "rnn", None),
    ("GRU", "gru", None),
    ("LSTM, forget bias 1 (charrnn)", "lstm", None),
    ("LSTM, forget bias 0", "lstm", 0.0),
)


def compare_cells(config: ModelConfig, ids, seed: int) -> list[GradientFlow]:
    flows = []
    for label, cell, forget_bias in COMPARED:
        variant = ModelConfig(config.vocab_size, cell, config.layers, config.hidden, config.embed, 0.0)
        flows.append(gradient_flow(fresh_model(variant, seed, forget_bias), ids, label))
    return flows


def decline(norms: np.ndarray) -> str:
    """One phrase for how fast a gradient falls with k: "falls by 10^6 within 40 steps"."""
    start = float(norms[0])
    if not start > 0:
        return "is zero at the last step"
    zeros = np.flatnonzero(~(norms > 0))
    seen = norms[: zeros[0]] if zeros.size else norms
    powers = np.floor(np.log10(start / seen) + 1e-9)
    best = int(powers.max())
    vanished = f", and is exactly 0 (below float32's range) from k={int(zeros[0])}" if zeros.size else ""
    if best < 1:
        return f"stays within a factor of 10 of its last-step value over {_steps(len(seen))}{vanished}"
    k = int(np.argmax(powers >= best))
    return f"falls by 10^{best} within {_steps(k)} ({_sci(start)} at k=0, {_sci(float(norms[k]))} at k={k}){vanished}"


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _sci(value: float) -> str:
    return f"{value:.1e}" if value and math.isfinite(value) else f"{value:g}"
