import pytest
import torch

from charrnn.errors import ConfigError
from charrnn.model.network import CharRNN, ModelConfig, detach_state


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_chunks_with_carried_state_equal_one_pass(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, cell=cell, layers=2, hidden=24, embed=8, dropout=0.3)).eval()
    idx = torch.randint(0, 20, (3, 40))
    whole, _, _ = model(idx)
    state, pieces = None, []
    for chunk in idx.split(7, dim=1):
        logits, _, state = model(chunk, state)
        state = detach_state(state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-5, atol=1e-5)


def test_forward_returns_logits_loss_and_state():
    model = CharRNN(ModelConfig(vocab_size=11, layers=1, hidden=16, embed=4))
    idx = torch.randint(0, 11, (2, 5))
    logits, loss, (h, c) = model(idx, targets=idx)
    assert logits.shape == (2, 5, 11)
    assert loss.ndim == 0 and loss.item() > 0
    assert h.shape == c.shape == (1, 2, 16)


def test_lstm_forget_gate_bias_starts_at_one():
    model = CharRNN(ModelConfig(vocab_size=5, layers=2, hidden=8, embed=4))
    for layer in range(2):
        bias = getattr(model.rnn, f"bias_ih_l{layer}")
        assert torch.all(bias[8:16] == 1.0)


@pytest.mark.parametrize(
    "kwargs", [{"layers": 0}, {"hidden": 0}, {"dropout": 1.0}, {"cell": "transformer"}]
)
def test_nonsense_configs_are_refused(kwargs):
    with pytest.raises((ConfigError, ValueError)):
        ModelConfig(vocab_size=5, **kwargs)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_parameter_count_is_known_before_the_model_exists(cell, layers):
    config = ModelConfig(vocab_size=67, cell=cell, layers=layers, hidden=37, embed=11)
    assert config.num_parameters() == CharRNN(config).num_parameters()
