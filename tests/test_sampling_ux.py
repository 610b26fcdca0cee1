"""Repetition penalty, min-p, beam search and the interactive prompt loop, on a real trained
model, through the library and the real CLI."""

import math
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from charrnn.generation.beam import BeamConfig, beam_search
from charrnn.cli.app import app
from charrnn.errors import ConfigError
from charrnn.model.loading import load_model
from charrnn.generation.sample import SampleConfig, filter_logits, penalize_repetition
from tests.conftest import sample_text

runner = CliRunner()
PRIME = "[JULIET] Good night, good "


def test_min_p_keeps_characters_relative_to_the_most_likely():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=1.0, min_p=0.5))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=1.0, min_p=0.05))
    assert kept.all()


def test_repetition_penalty_lowers_seen_logits_of_either_sign_once():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    history = torch.tensor([[0, 1, 0, 0]])  # id 0 seen three times: still penalised once
    out = penalize_repetition(logits, history, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert penalize_repetition(logits, history, 1.0) is logits


def test_min_p_one_is_greedy_and_the_filters_are_off_by_default(model_and_vocab):
    defaults = SampleConfig()
    assert defaults.min_p == 0.0 and defaults.repetition_penalty == 1.0
    greedy = sample_text(model_and_vocab, length=60, temperature=0, prime=PRIME)
    assert sample_text(model_and_vocab, length=60, temperature=1.5, min_p=1.0, seed=3, prime=PRIME) == greedy


def test_repetition_penalty_steers_away_from_recent_characters(model_and_vocab):
    greedy = sample_text(model_and_vocab, length=40, temperature=0, prime=PRIME)
    assert greedy.startswith("night")  # every letter of which is in the prime
    penalised = sample_text(
        model_and_vocab, length=40, temperature=0, prime=PRIME, repetition_penalty=5.0
    )
    assert not penalised.startswith("night") and penalised != greedy
    # A short window forgets the prime: the first character is the greedy one again.
    short = sample_text(
        model_and_vocab, length=40, temperature=0, prime=PRIME, repetition_penalty=5.0, repetition_window=1
    )
    assert short[0] == greedy[0]


@pytest.mark.parametrize("options", [{"min_p": -0.1}, {"min_p": 1.5}, {"repetition_penalty": 0}, {"repetition_window": 0}])
def test_nonsense_filter_options_are_refused(options):
    with pytest.raises(ConfigError):
        SampleConfig(**options)


def _log_prob(model, vocab, prime, text):
    ids = torch.tensor([vocab.encode(prime + text).tolist()])
    logits, _, _ = model(ids[:, :-1])
    logp = torch.log_softmax(logits.float(), dim=-1)[0]
    targets = ids[0, 1:]
    rows = torch.arange(len(prime) - 1, targets.numel())
    return logp[rows, targets[rows]].sum().item()


def test_beam_of_one_is_greedy_and_beams_are_ranked_by_true_log_probability(model_and_vocab):
    model, vocab = model_and_vocab
    greedy = sample_text(model_and_vocab, length=30, temperature=0, prime=PRIME)
    (single,) = beam_search(model, vocab, BeamConfig(width=1, length=30, prime=PRIME))
    assert single.text == greedy
    beams = beam_search(model, vocab, BeamConfig(width=4, length=30, prime=PRIME))
    assert len(beams) == 4 and len({b.text for b in beams}) == 4
    scores = [b.log_prob for b in beams]
    assert scores == sorted(scores, reverse=True)
    with torch.no_grad():
        for found in beams:
            assert math.isclose(found.log_prob, _log_prob(model, vocab, PRIME, found.text), abs_tol=1e-3)


def test_beam_from_the_cli_is_deterministic_and_checks_its_options(trained_run):
    args = ["sample", str(trained_run), "--beam", "3", "--num-samples", "2", "--length", "25", "--prime", "[ROMEO]"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    model, vocab, _ = load_model(trained_run, device="cpu")
    beams = beam_search(model, vocab, BeamConfig(width=3, length=25, prime="[ROMEO]"))
    # Each beam, then the separator line that tells samples apart, as sampling writes it.
    assert first.stdout == "".join(f"[ROMEO]{b.text}\n--- sample {i} of 2 complete ---\n" for i, b in enumerate(beams[:2], 1))
    assert "beam 1/2: log-probability" in first.stderr
    assert runner.invoke(app, args).stdout == first.stdout
    too_many = runner.invoke(app, ["sample", str(trained_run), "--beam", "2", "--num-samples", "3"])
    assert too_many.exit_code == 2 and "more than the 2 beams" in too_many.stderr
    assert "Traceback" not in too_many.stderr


def test_interactive_loop_with_commands(trained_run):
    script = "\n".join(
        ["[ROMEO]", "/temp 0", "/len 30", PRIME, "/temp x", "/topp 7", "/bogus", "QQQ", "/show", "/quit", "never"]
    )
    result = runner.invoke(app, ["sample", str(trained_run), "-i", "--length", "12", "--seed", "2"], input=script + "\n")
    assert result.exit_code == 0, result.stderr
    replies = result.stdout.splitlines()
    assert len(replies) == 2 and len(replies[0]) == 12
    assert replies[1] == sample_text_cli_greedy(trained_run, 30)
    assert "/temp needs a number" in result.stderr
    assert "/topp: --top-p must be in (0, 1], not 7; unchanged" in result.stderr
    assert "unknown command /bogus" in result.stderr
    assert "'Q'" in result.stderr  # an unknown character is reported, and the loop goes on
    assert "/temp 0.0, /len 30" in result.stderr and "/seed 4" in result.stderr
    assert "2 replies" in result.stderr and "Traceback" not in result.stderr
    again = runner.invoke(app, ["sample", str(trained_run), "-i", "--length", "12", "--seed", "2"], input=script + "\n")
    assert again.stdout == result.stdout  # a seeded session is repeatable


def sample_text_cli_greedy(run, length):
    result = runner.invoke(app, ["sample", str(run), "--temperature", "0", "--length", str(length), "--prime", PRIME])
    return result.stdout.rstrip("\n")[len(PRIME):]


def test_interactive_in_a_real_process_ends_at_end_of_input(trained_run):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "charrnn", "sample", str(trained_run), "--interactive", "--length", "15", "--temperature", "0"],
        input="[MERCUTIO] A plague\n//not a command\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [len(line) for line in done.stdout.splitlines()] == [15]
    # "//" sent "/not a command" as text, and '/' is not in this model's vocabulary.
    assert "not in the model's vocabulary: '/'" in done.stderr
    assert "1 replies" in done.stderr and "Traceback" not in done.stderr


def test_interactive_seed_wraps_at_the_largest_seed(trained_run):
    """Each reply takes the next seed; after 2**63 - 1 comes 0, not a refused seed."""
    script = "[ROMEO]\n/show\n[JULIET]\n/show\n"
    result = runner.invoke(app, ["sample", str(trained_run), "-i", "--length", "12", "--seed", str(2**63 - 1)], input=script)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2 and "try another prompt" not in result.stderr
    import re

    assert re.findall(r"/seed (\d+)", result.stderr) == ["0", "1"]
