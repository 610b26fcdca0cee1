"""The fast sampling path must draw exactly the characters the reference (eager) path draws."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from charrnn.model.network import CharRNN, ModelConfig
from charrnn.model.loading import load_model
from charrnn.generation.noise import Noise, draw
from charrnn.generation.sample import SampleConfig, generate_batch, stream
from charrnn.generation.stepper import EagerStepper, FastStepper, make_stepper

from tests.conftest import TINY_MODEL, TINY_TRAIN, train_small_run


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    return train_small_run(
        tmp_path_factory.mktemp("gru"),
        {**TINY_MODEL, "cell": "gru"},
        {**TINY_TRAIN, "max_steps": 150, "lr": 1e-2, "eval_every": 150},
    )


@pytest.fixture(params=["lstm", "gru"])
def trained(request, trained_run, gru_run):
    run = trained_run if request.param == "lstm" else gru_run
    model, vocab, _ = load_model(run, device="cpu")
    assert model.config.cell == request.param
    return model, vocab


def text(model, vocab, engine, **options):
    return "".join(stream(model, vocab, SampleConfig(engine=engine, **options)))


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 1.0, "seed": 11},
        {"temperature": 0.7, "top_k": 5, "seed": 12, "prime": "[JULIET]"},
        {"temperature": 1.3, "top_p": 0.9, "seed": 13},
        {"temperature": 0},
        {"temperature": 1e-45, "seed": 14},
        {"temperature": 1e308, "seed": 15},
        {"temperature": 1e308, "top_k": 4, "seed": 16},
    ],
)
def test_fast_path_yields_the_reference_characters(trained, options):
    model, vocab = trained
    fast = text(model, vocab, "fast", length=600, **options)
    eager = text(model, vocab, "eager", length=600, **options)
    assert len(fast) == 600
    assert fast == eager


def test_batched_fast_path_matches_batched_reference(trained):
    model, vocab = trained
    config = dict(length=150, seed=21, num_samples=5, temperature=1.0, prime="[R")
    fast = generate_batch(model, vocab, SampleConfig(engine="fast", **config))
    eager = generate_batch(model, vocab, SampleConfig(engine="eager", **config))
    assert fast == eager and len(set(fast)) > 1


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_fast_logits_and_state_follow_the_model(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=30, cell=cell, layers=3, hidden=40, embed=8)).eval()
    fast, eager = FastStepper(model), EagerStepper(model)
    prompt = torch.randint(0, 30, (4, 9))
    fast_logits, fast_state = fast.prime(prompt)
    eager_logits, eager_state = eager.prime(prompt)
    for _ in range(30):
        ids = torch.randint(0, 30, (4,))
        fast_logits, fast_state = fast.step(ids, fast_state)
        eager_logits, eager_state = eager.step(ids, eager_state)
        torch.testing.assert_close(fast_logits, eager_logits, rtol=1e-5, atol=1e-5)
    converted = fast.to_model_state(fast_state)
    for got, want in zip(converted if cell == "lstm" else [converted], eager_state if cell == "lstm" else [eager_state]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Reordering samples (beam search) moves their states along.
    order = torch.tensor([3, 3, 0])
    ids = torch.tensor([1, 2, 3])
    got, _ = fast.step(ids, fast.select(fast_state, order))
    want, _ = eager.step(ids, eager.select(eager_state, order))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_step_leaves_the_given_state_untouched():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=12, layers=2, hidden=16, embed=4)).eval()
    stepper = FastStepper(model)
    _, state = stepper.prime(torch.tensor([[1, 2, 3]]))
    before = (state.h.copy(), state.c.copy())
    first, _ = stepper.step(torch.tensor([4]), state)
    again, _ = stepper.step(torch.tensor([4]), state)
    assert (state.h == before[0]).all() and (state.c == before[1]).all()
    assert torch.equal(first, again)


def test_engine_choice():
    model = CharRNN(ModelConfig(vocab_size=12, layers=1, hidden=8, embed=4))
    assert isinstance(make_stepper(model, "auto"), FastStepper)
    assert isinstance(make_stepper(model, "eager"), EagerStepper)
    assert isinstance(make_stepper(model, "auto", num_samples=64), EagerStepper)
    assert isinstance(make_stepper(model, "fast", num_samples=64), FastStepper)


def test_draw_is_exactly_torch_multinomial():
    for rows in (1, 3):
        a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        noise = Noise(b, rows, 40)
        for _ in range(500):
            probs = torch.softmax(torch.randn(rows, 40) * 3, dim=-1)
            expected = torch.multinomial(probs, 1, generator=a).squeeze(-1)
            assert torch.equal(draw(probs.clone(), noise), expected)


def test_checkpoint_samples_identically_through_either_engine_on_the_cli(trained_run):
    def run(engine):
        command = [sys.executable, "-m", "charrnn", "sample", str(trained_run), "--length", "400",
                   "--seed", "99", "--temperature", "1.0", "--engine", engine]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    fast, eager = run("fast"), run("eager")
    assert len(fast) == 401 and fast == eager


def test_noise_blocks_do_not_change_the_draws():
    # One fill of (B, N, V) must consume the generator as B fills of (N, V): then the text a
    # seed makes does not depend on the block size.
    for rows, vocab in ((1, 65), (3, 40), (1, 4000)):
        blocked = Noise(torch.Generator().manual_seed(9), rows, vocab)
        assert blocked.block > 1
        single = torch.Generator().manual_seed(9)
        for _ in range(blocked.block + 5):  # across a block boundary
            expected = torch.empty(rows, vocab).exponential_(1, generator=single)
            assert torch.equal(blocked.next(), expected)


def test_prefetched_noise_is_the_noise_drawn_later():
    # The server fills a stream's first block on the HTTP side before the worker draws:
    # prefetching must change nothing in what is drawn, in either form, across blocks.
    for rows, vocab in ((1, 65), (2, 40)):
        early = Noise(torch.Generator().manual_seed(4), rows, vocab, most=70)
        late = Noise(torch.Generator().manual_seed(4), rows, vocab, most=70)
        early.prefetch()
        early.prefetch()  # a second call fetches nothing more
        for i in range(150):
            if i % 2:
                np.testing.assert_array_equal(early.next_gumbel(), late.next_gumbel())
            else:
                assert torch.equal(early.next(), late.next())


@pytest.mark.parametrize("block_values", [65 * 3, 1])
def test_text_for_a_seed_does_not_depend_on_the_noise_block(trained, monkeypatch, block_values):
    import charrnn.generation.noise

    model, vocab = trained
    options = dict(length=300, seed=5, temperature=1.0)
    reference = text(model, vocab, "eager", **options)
    monkeypatch.setattr(charrnn.generation.noise, "NOISE_BLOCK_VALUES", block_values)
    assert text(model, vocab, "fast", **options) == reference
    assert text(model, vocab, "eager", **options) == reference


def test_single_plain_sample_takes_the_numpy_path(trained):
    from charrnn.generation.sample import generate_ids

    model, vocab = trained
    plain = next(generate_ids(model, vocab, SampleConfig(engine="fast", length=2, seed=1)))
    filtered = next(generate_ids(model, vocab, SampleConfig(engine="fast", length=2, seed=1, top_k=3)))
    assert type(plain).__module__ == "numpy" and isinstance(filtered, torch.Tensor)


def test_gumbel_draw_picks_what_the_torch_draw_picks(monkeypatch):
    import charrnn.generation.noise
    from charrnn.generation.sample import draw_plain_numpy

    monkeypatch.setattr(charrnn.generation.noise, "NOISE_BLOCK_VALUES", 40 * 3 * 7)  # many block boundaries
    for rows, temperature in ((1, 1.0), (1, 0.6), (3, 1.4)):
        torch_noise = Noise(torch.Generator().manual_seed(3), rows, 40)
        numpy_noise = Noise(torch.Generator().manual_seed(3), rows, 40)
        picked = set()
        for _ in range(2000):
            logits = torch.randn(rows, 40) * 3
            expected = draw(torch.softmax(logits / temperature, dim=-1), torch_noise)
            got = draw_plain_numpy(logits.numpy(), temperature, numpy_noise)
            assert got.tolist() == expected.tolist()
            picked.update(got.tolist())
        assert len(picked) > 20  # the draws really are random


def test_advance_in_place_matches_step():
    torch.manual_seed(0)
    for cell in ("lstm", "gru", "rnn"):
        model = CharRNN(ModelConfig(vocab_size=12, cell=cell, layers=2, hidden=16, embed=4)).eval()
        stepper = FastStepper(model)
        _, kept = stepper.prime(torch.tensor([[1, 2, 3]]))
        _, owned = stepper.prime(torch.tensor([[1, 2, 3]]))
        for token in (4, 7, 0, 11):
            want, kept = stepper.step_numpy(np.array([token]), kept)
            got = stepper.advance(np.array([token]), owned)
            assert (got == want).all() and (owned.h == kept.h).all()
