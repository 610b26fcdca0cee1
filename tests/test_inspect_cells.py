"""The step-by-step replay used by `charrnn gradients` and `charrnn inspect` against PyTorch's
own fused modules and single-step kernels: the gates shown are the gates the model used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from charrnn.inspect.cells import replay
from charrnn.inspect.gradients import gradient_flow
from charrnn.model.network import CharRNN, ModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("make", [
    lambda: nn.LSTM(5, 9, num_layers=3, batch_first=True),
    lambda: nn.GRU(5, 9, num_layers=3, batch_first=True),
    lambda: nn.RNN(5, 9, num_layers=3, batch_first=True),
    lambda: nn.RNN(5, 9, num_layers=2, batch_first=True, nonlinearity="relu"),
], ids=["lstm", "gru", "rnn-tanh", "rnn-relu"])  # fmt: skip
def test_replay_reproduces_the_fused_module_on_random_weights(make):
    torch.manual_seed(3)
    rnn = make()
    with torch.no_grad():
        for p in rnn.parameters():
            p.normal_(0, 0.6)  # larger than the default init, so that gates reach saturation
    x = torch.randn(3, 17, 5)
    h0 = torch.randn(rnn.num_layers, 3, 9)
    state = (h0, torch.randn_like(h0)) if isinstance(rnn, nn.LSTM) else h0
    with torch.no_grad():
        expected, final = rnn(x, state)
        trace = replay(rnn, x, state)
    assert torch.allclose(trace.output(), expected, atol=1e-5, rtol=0)
    final_h = final[0] if isinstance(final, tuple) else final
    assert torch.allclose(torch.stack([layer[-1] for layer in trace.hidden]), final_h, atol=1e-5, rtol=0)
    if isinstance(rnn, nn.LSTM):
        assert torch.allclose(torch.stack([layer[-1] for layer in trace.cell]), final[1], atol=1e-5, rtol=0)


def test_replay_reproduces_a_trained_model_with_its_gates(model_and_vocab, text_file):
    model, vocab = model_and_vocab
    ids = torch.as_tensor(vocab.encode(text_file.read_text(encoding="utf-8")[:400])).unsqueeze(0)
    with torch.no_grad():
        x = model.embedding(ids)
        expected, _ = model.rnn(x)
        trace = replay(model.rnn, x)
        # The gates recomputed from the replayed states by nn.LSTMCell, an independent kernel.
        cell = nn.LSTMCell(model.config.embed, model.config.hidden)
        cell.load_state_dict({k.removesuffix("_l0"): v for k, v in model.rnn.state_dict().items() if k.endswith("_l0")})
        h = c = torch.zeros(1, model.config.hidden)
        for t in range(ids.shape[1]):
            h, c = cell(x[:, t], (h, c))
    assert torch.allclose(trace.output(), expected, atol=1e-5, rtol=0)
    assert torch.allclose(trace.hidden[0][-1], h, atol=1e-5) and torch.allclose(trace.cell[0][-1], c, atol=1e-5)
    for name in ("i", "f", "o"):
        gate = trace.stacked_gate(0, name)
        assert gate.min() >= 0 and gate.max() <= 1


def _unrolled_reference(model: CharRNN, ids: torch.Tensor):
    """||dL/dx_t|| and per layer ||dL/dh_t|| by torch.autograd through a loop of single-layer
    fused modules called one step at a time."""
    cfg = model.config
    kind = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg.cell]
    layers = []
    for layer in range(cfg.layers):
        single = kind(cfg.embed if layer == 0 else cfg.hidden, cfg.hidden, batch_first=True)
        single.load_state_dict({k.replace(f"_l{layer}", "_l0"): v for k, v in model.rnn.state_dict().items() if k.endswith(f"_l{layer}")})
        layers.append(single)
    xs = [x.clone().requires_grad_() for x in model.embedding(ids[:-1].unsqueeze(0)).detach().unbind(1)]
    hs = [[] for _ in layers]
    below = xs
    for layer, single in enumerate(layers):
        h = torch.zeros(1, 1, cfg.hidden)
        c = torch.zeros(1, 1, cfg.hidden)
        for x in below:
            out, state = single(x.unsqueeze(1), (h, c) if cfg.cell == "lstm" else h)
            step_h = out[:, 0]  # one tensor feeds the next step and the layer above: every path
            h = step_h.unsqueeze(0)
            c = state[1] if cfg.cell == "lstm" else c
            hs[layer].append(step_h)
        below = hs[layer]
    loss = F.cross_entropy(model.decoder(hs[-1][-1]), ids[-1:])
    grads = torch.autograd.grad(loss, xs + [h for layer in hs for h in layer])
    norms = np.array([float(g.norm()) for g in grads])
    steps = len(xs)
    return norms[:steps], norms[steps:].reshape(cfg.layers, steps)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradient_through_time_matches_autograd_on_an_unrolled_loop(cell):
    torch.manual_seed(1)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16, embed=8, dropout=0.0)).eval()
    ids = torch.randint(0, 11, (31,))
    inputs, hidden = _unrolled_reference(model, ids)
    flow = gradient_flow(model, ids.numpy())
    # The flow counts k back from the last step; the reference runs forward in time.
    np.testing.assert_allclose(flow.inputs, inputs[::-1], rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(flow.hidden, hidden[:, ::-1], rtol=1e-4, atol=1e-12)
    assert flow.inputs[0] > 0 and flow.steps == 30
