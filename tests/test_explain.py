"""The explorer's figures (charrnn/inspect/explain.py) against references computed here
independently: eval's bits per character, torch's softmax and topk of the model's own
forward, a unit's state from the fused layers, and the memory's loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.inspect.explain import encode, explain, feature_units, memory, saturation, stretch_units, unit_values
from charrnn.model.evaluation import evaluate
from charrnn.units import nats_to_bpc
from tests.conftest import small_text

TEXT = small_text(8)


@pytest.fixture(scope="module")
def explained(model_and_vocab):
    model, vocab = model_and_vocab
    ids, pieces = encode(vocab, TEXT, 20_000)
    return model, vocab, ids, explain(model, ids, pieces)


def test_mean_bits_are_evals_bits_per_character(explained):
    model, _, ids, found = explained
    reference = nats_to_bpc(evaluate(model, ids, torch.device("cpu")))
    assert found.bpc == pytest.approx(reference, abs=1e-3)
    # Scored from the replay's top layer, or by the model's forward alone: the same figures.
    alone = explain(model, ids, found.pieces, replay=False)
    assert alone.replayed is None and np.allclose(alone.prob[1:], found.prob[1:], atol=1e-5)
    assert np.isnan(found.prob[0]) and np.isfinite(found.bits[1:]).all()


def test_top_guesses_are_torch_topk_of_the_models_softmax(explained):
    model, _, ids, found = explained
    with torch.no_grad():
        logits, _, _ = model(torch.as_tensor(ids[:-1]).unsqueeze(0))
    probs = torch.softmax(logits[0].float(), dim=-1)
    best = torch.topk(probs, 5, dim=-1)
    assert np.array_equal(found.top_ids[1:], best.indices.numpy())
    assert np.allclose(found.top_probs[1:], best.values.numpy(), atol=1e-6)
    actual = probs.gather(1, torch.as_tensor(ids[1:]).unsqueeze(1)).squeeze(1).numpy()
    assert np.allclose(found.prob[1:], actual, atol=1e-6)
    assert np.allclose(found.bits[1:], -np.log2(actual), atol=1e-4)


def test_unit_values_are_the_fused_layers_states(explained):
    model, _, ids, found = explained
    with torch.no_grad():
        embedded = model.embedding(torch.as_tensor(ids).unsqueeze(0))
        out, (h, c) = model.rnn(embedded)
    top = model.config.layers - 1
    assert np.allclose(unit_values(found, top, 3, "h"), out[0, :, 3].numpy(), atol=1e-5)
    # The last step's c of the top layer, through tanh, as --state c shows it.
    assert unit_values(found, top, 3, "c")[-1] == pytest.approx(float(torch.tanh(c[top, 0, 3])), abs=1e-5)
    with pytest.raises(Exception, match="out of range"):
        unit_values(found, top, model.config.hidden, "h")


def test_the_units_views(explained):
    model, _, ids, found = explained
    matches = feature_units(found)
    assert {m.feature for m in matches} >= {"position in line", "start of a word"}
    gates = saturation(found)
    assert gates is not None and set(gates.gates) == {"i", "f", "o"}
    ranked = stretch_units(found, 10, 30)
    assert len(ranked) == 10 and abs(ranked[0].score) >= abs(ranked[-1].score)
    with pytest.raises(Exception, match="stretch"):
        stretch_units(found, 30, 10)


def test_memory_loss_is_the_bits_shown_and_reaches_back(explained):
    model, _, ids, found = explained
    position = 150
    remembered = memory(model, ids, position, 100)
    assert remembered.start == 50 and len(remembered.norms) == 100
    assert remembered.bits == pytest.approx(found.bits[position], abs=1e-3)
    assert remembered.norms[-1] > 0
    short = memory(model, ids, 5, 100)
    assert short.start == 0 and len(short.norms) == 5


def test_bad_text(model_and_vocab):
    _, vocab = model_and_vocab
    with pytest.raises(Exception, match="empty"):
        encode(vocab, "", 10)
    with pytest.raises(Exception, match="at most 10"):
        encode(vocab, "a" * 11, 10)
    with pytest.raises(Exception, match="trained on"):
        encode(vocab, "ROMEO \u2603", 100)
    with pytest.raises(Exception, match="lone surrogate U\\+DC80 at character 1"):
        encode(vocab, "a\udc80", 100)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells(model_and_vocab, cell):
    from charrnn.inspect.gradients import fresh_model
    from charrnn.model.network import ModelConfig

    _, vocab = model_and_vocab
    model = fresh_model(ModelConfig(len(vocab), cell, 2, 16, 8, 0.0), seed=0)
    ids, pieces = encode(vocab, TEXT[:300], 1000)
    found = explain(model, ids, pieces)
    assert found.bpc == pytest.approx(nats_to_bpc(evaluate(model, ids, torch.device("cpu"))), abs=1e-3)
    gates = saturation(found)
    assert (gates is None) == (cell == "rnn") and (cell == "rnn" or set(gates.gates) == {"r", "z"})
    assert len(stretch_units(found, 0, 10)) == 10
    with pytest.raises(Exception, match="no cell state"):
        unit_values(found, 0, 0, "c")
    assert memory(model, ids, 50, 20).norms.shape == (20,)
