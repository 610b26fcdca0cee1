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

from charrnn.cells import CELLS
from charrnn.inspect.cells import cell_kind, replay
from charrnn.inspect.replayed import shape_name
from charrnn.memory import largest_fitting, require_memory
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


# Autograd's graph per step of the replay, measured on torch 2.13 (peak RSS growth over a
# 20,000-step window, 1 to 3 layers of 32 to 512 units): a step's twenty-odd operations each
# keep a node and the tensors its backward needs, about 580 bytes of object per tensor beside
# its data. Per layer: a fixed cost, and float32 values per unit (the saved activations and
# the gradients given back); per step, the input (and its gradient) and its bookkeeping.
GRAPH_LAYER_BYTES = {"lstm": 19_300, "gru": 21_200, "rnn": 7_300}
GRAPH_VALUES_PER_UNIT = {"lstm": 9.2, "gru": 8.0, "rnn": 3.2}
GRAPH_STEP_BYTES = 1_500

# Steps of the window differentiated per call of autograd: the engine runs in C++ and takes
# Ctrl-C only between calls; 512 steps of a 1x32 LSTM took 0.07-0.16 s on a busy 2-core machine.
SEGMENT_STEPS = 512


def gradient_bytes_per_step(cell: str, layers: int, hidden: int, embed: int) -> int:
    """Memory the autograd graph of ``gradient_flow`` holds per step of its window."""
    per_layer = GRAPH_LAYER_BYTES[cell] + GRAPH_VALUES_PER_UNIT[cell] * hidden * 4
    return int(GRAPH_STEP_BYTES + 2 * embed * 4 + layers * per_layer)


def check_gradient_memory(config: ModelConfig, steps: int, cells=None) -> None:
    """Refuse to follow the gradient back ``steps`` steps when the graph of the largest of
    ``cells`` (by default ``config``'s own) in ``config``'s shape would not fit in memory,
    naming the largest --steps that would. The models run one after another: only one graph
    is held at a time."""
    cells = (config.cell,) if cells is None else tuple(cells)
    per_step = max(gradient_bytes_per_step(cell, config.layers, config.hidden, config.embed) for cell in cells)
    fit = largest_fitting(per_step)
    largest = max(cells, key=lambda cell: gradient_bytes_per_step(cell, config.layers, config.hidden, config.embed))
    require_memory(
        steps * per_step,
        f"following the gradient back {steps:,} steps through {shape_name(largest, config.layers, config.hidden)} "
        f"({per_step:,} bytes of autograd graph per step)",
        f"at most --steps {fit:,} fits" if fit else "free some memory or use a smaller model",
    )


def gradient_flow(model: CharRNN, ids: np.ndarray | torch.Tensor, label: str = "", state=None) -> GradientFlow:
    """The gradient of the loss at the last step over a window of ``len(ids) - 1`` steps:
    ``ids[:-1]`` are read, ``ids[-1]`` is the character the last step predicts. The window
    starts from ``state`` (the model's state, (layers, 1, H) tensors, after the text before
    it; None: zero). Refused before the graph is built when it would not fit in memory."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if ids.numel() < 2:
        raise ValueError("a window needs at least two characters: one to read, one to predict")
    steps = ids.numel() - 1
    check_gradient_memory(model.config, steps)
    device = next(model.parameters()).device
    ids = ids.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            norms_in, norms_h, loss = _segmented_flow(model, ids, state)
    finally:
        model.train(was_training)
    # Index k counts back from the last step.
    per_input = norms_in[::-1].copy()
    per_layer = norms_h[:, ::-1].copy()
    return GradientFlow(label, per_input, per_layer, loss)


def _segmented_flow(model: CharRNN, ids: torch.Tensor, state=None) -> tuple[np.ndarray, np.ndarray, float]:
    """Norms of dL/dx (T,) and dL/dh (layers, T) in time order, and the loss.

    The window is replayed in segments, each starting from the states the one before ended
    with, detached into leaves; the gradient then goes back one segment per autograd call,
    from the loss or from the gradient its end states received from the segment after. The
    chain rule makes this the gradient of one unbroken graph (a test checks it against an
    unrolled loop); between calls a Ctrl-C is taken."""
    kind = cell_kind(model.rnn)
    steps = ids.numel() - 1
    embedded = model.embedding(ids[:-1].unsqueeze(0)).detach()
    segments = []  # (start, inputs, trace, start-state leaves, the states they were cut from)
    if state is not None:
        state = tuple(s.detach().to(ids.device) for s in (state if isinstance(state, tuple) else (state,)))
    for start in range(0, steps, SEGMENT_STEPS):
        inputs = [x.requires_grad_() for x in embedded[:, start : start + SEGMENT_STEPS].unbind(1)]
        leaves = None if state is None else tuple(s.detach().requires_grad_() for s in state)
        trace = replay(model.rnn, inputs, None if leaves is None else (leaves if CELLS[kind].has_cell_state else leaves[0]))
        segments.append((start, inputs, trace, leaves, state))
        state = (torch.stack([layer[-1] for layer in trace.hidden]),)
        if kind == "lstm":
            state += (torch.stack([layer[-1] for layer in trace.cell]),)
    last = segments[-1][2]
    loss = F.cross_entropy(model.decoder(last.hidden[-1][-1]).float(), ids[-1:])
    layers = len(last.hidden)
    norms_in = np.zeros(steps)
    norms_h = np.zeros((layers, steps))
    target = loss
    while segments:
        # Popped: each segment's tensors go once its gradient is taken.
        start, inputs, trace, leaves, source = segments.pop()
        count = len(inputs)
        wanted = inputs + [h for layer in trace.hidden for h in layer] + list(leaves or ())
        grads = torch.autograd.grad(target, wanted, allow_unused=True)
        norms = np.array([0.0 if g is None else float(g.norm()) for g in grads[: count * (1 + layers)]])
        norms_in[start : start + count] = norms[:count]
        norms_h[:, start : start + count] = norms[count:].reshape(layers, count)
        if leaves is not None:
            # The end states weighted by the gradient they received, summed: a scalar whose
            # gradient is the chain rule's next term. (grad_outputs would do the same, but
            # its checks import sympy: 35 MB and half a second.)
            given = grads[count * (1 + layers) :]
            target = sum((state * g).sum() for state, g in zip(source, given) if g is not None)
            if not torch.is_tensor(target):
                break  # nothing before this segment reaches the loss
    return norms_in, norms_h, float(loss.detach())


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
    # Refused before the first model runs when the largest graph of the four would not fit.
    check_gradient_memory(config, len(ids) - 1, [cell for _, cell, _ in COMPARED])
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
