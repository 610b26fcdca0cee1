import pytest
import torch

from charrnn.errors import ConfigError, VocabError
from charrnn.generation.sample import SampleConfig, filter_logits, generate_batch
from charrnn.generation.stops import StopMatcher
from tests.conftest import sample_text


def test_same_seed_same_text_different_seed_different_text(model_and_vocab):
    a = sample_text(model_and_vocab, length=200, seed=7, temperature=1.0)
    b = sample_text(model_and_vocab, length=200, seed=7, temperature=1.0)
    c = sample_text(model_and_vocab, length=200, seed=8, temperature=1.0)
    assert a == b and len(a) == 200
    assert a != c


def test_greedy_ignores_the_seed(model_and_vocab):
    a = sample_text(model_and_vocab, length=100, seed=1, temperature=0)
    b = sample_text(model_and_vocab, length=100, seed=2, temperature=0)
    assert a == b


def test_top_k_one_is_greedy(model_and_vocab):
    greedy = sample_text(model_and_vocab, length=80, temperature=0, prime="[JULIET]")
    top1 = sample_text(model_and_vocab, length=80, temperature=1.5, top_k=1, seed=3, prime="[JULIET]")
    assert greedy == top1


def test_prime_conditions_the_sample(model_and_vocab):
    # The trained model has learnt the verse: after this prime the line continues as written.
    text = sample_text(model_and_vocab, length=30, temperature=0, prime="[JULIET] Good night, good ")
    assert text.startswith("night")


def test_prime_with_unseen_characters_is_a_clear_error(model_and_vocab):
    with pytest.raises(VocabError, match="'Q'"):
        sample_text(model_and_vocab, prime="Quux", length=5)
    assert len(sample_text(model_and_vocab, prime="Quux [R", length=5, unknown="skip", seed=1)) == 5


def test_stop_string_ends_the_sample_and_is_not_included(model_and_vocab):
    text = sample_text(model_and_vocab, length=500, temperature=0, prime="[ROMEO]", stop=("\n",))
    assert "\n" not in text and 0 < len(text) < 500


def test_stop_matcher_holds_back_partial_matches():
    matcher = StopMatcher(("END",))
    emitted = "".join(matcher.feed(c) for c in "abcENxEND tail")
    assert emitted == "abcENx" and matcher.stopped


def test_batched_samples_are_reproducible_and_distinct(model_and_vocab):
    model, vocab = model_and_vocab
    config = dict(length=60, seed=5, num_samples=4, temperature=1.0)
    first = generate_batch(model, vocab, SampleConfig(**config))
    second = generate_batch(model, vocab, SampleConfig(**config))
    assert first == second and len(first) == 4 and all(len(t) == 60 for t in first)
    assert len(set(first)) > 1


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.75))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.1))
    assert kept.tolist() == [[True, False, False, False]]


@pytest.mark.parametrize(
    "options",
    [{"length": 0}, {"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -1}, {"num_samples": 0},
     {"temperature": float("inf")}, {"temperature": float("nan")}, {"repetition_penalty": float("inf")},
     {"seed": -1}, {"seed": 2**63}],
)
def test_nonsense_sampling_options_are_refused(options):
    with pytest.raises(ConfigError):
        SampleConfig(**options)


def test_temperatures_past_the_bounds_are_greedy_and_uniform():
    """Below MIN_TEMPERATURE the draw is the argmax; above MAX_TEMPERATURE it is uniform over
    the characters top-k keeps, whatever the logits say, with no overflow."""
    import warnings
    from collections import Counter

    from charrnn.generation.noise import Noise
    from charrnn.generation.sample import MAX_TEMPERATURE, MIN_TEMPERATURE, sample_next

    torch.manual_seed(0)
    logits = torch.randn(4, 30) * 8
    noise = Noise(torch.Generator().manual_seed(1), 4, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for temperature in (1e-45, MIN_TEMPERATURE / 2):
            assert torch.equal(sample_next(logits, SampleConfig(temperature=temperature), noise), logits.argmax(-1))
        top5 = set(torch.topk(logits[0], 5).indices.tolist())
        one_row = Noise(torch.Generator().manual_seed(2), 1, 30)
        config = SampleConfig(temperature=1e308, top_k=5)
        counts = Counter(int(sample_next(logits[:1], config, one_row)) for _ in range(4000))
    assert set(counts) == top5
    assert all(600 < n < 1000 for n in counts.values()), counts
    assert MAX_TEMPERATURE < 1e308
