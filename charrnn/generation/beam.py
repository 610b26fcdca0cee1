"""Beam search over characters: the most likely continuation the model can find, not a sample.

It keeps the ``width`` most probable partial continuations (by summed log-probability) and
extends each by every character at each step. The result is deterministic and good for short
completions (finishing a word, a name, a line) where the single most likely text is wanted;
over long spans it drifts into the loops that high-probability text is made of, which is what
sampling with a temperature (or a repetition penalty, which beam search also honours) avoids.
Every beam has the same length, so scores compare without length normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn.generation.batch_memory import char_width, gate_products, state_bytes
from charrnn.errors import ConfigError, VocabError
from charrnn.memory import largest_fitting, require_memory
from charrnn.options import DEFAULTS
from charrnn.model.network import CharRNN, State
from charrnn.generation.sample import penalize_repetition
from charrnn.generation.stops import StopMatcher
from charrnn.precision import autocast
from charrnn.data.vocab import Vocab


@dataclass
class BeamConfig:
    width: int = 4
    length: int = 100  # characters generated after the prime
    prime: str = ""
    unknown: str = "error"
    stop: tuple[str, ...] = ()
    repetition_penalty: float = DEFAULTS["sample"]["repetition_penalty"]
    repetition_window: int = DEFAULTS["sample"]["repetition_window"]

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ConfigError("--beam must be at least 1")
        if self.length < 1:
            raise ConfigError("--length must be at least 1")
        if self.repetition_penalty <= 0:
            raise ConfigError("--repetition-penalty must be > 0 (1 turns it off)")


@dataclass(frozen=True)
class Beam:
    text: str  # the continuation (prime excluded), cut at the first stop string
    # Summed natural-log probability of the continuation (under the penalised distribution
    # when a repetition penalty is set), over the full length even when a stop string cut it.
    log_prob: float


def _select(state: State, index: torch.Tensor) -> State:
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def beam_memory(model_config, config: BeamConfig, vocab=None) -> int:
    """Bytes ``beam_search`` takes for ``config.width`` beams: per beam, the state three times
    at once (the model's, the one it returns, the one picked for the next step), a step's
    temporaries and the logits' copies (log-softmax, scores, penalty), the tokens so far as
    int64 three times at once (the old rows, the picked ones, the longer ones), and at the end
    each beam's ids as a Python list and its text."""
    hidden = model_config.hidden
    gates, state = gate_products(model_config), state_bytes(model_config)
    tokens = max(1, len(config.prime)) + config.length
    per_beam = (
        3 * state
        + 4 * (model_config.embed + gates + 2 * hidden + 4 * model_config.vocab_size)
        + 3 * 8 * tokens
        + config.length * (8 + char_width(vocab)) + 200
    )
    return config.width * per_beam


@torch.no_grad()
def beam_search(
    model: CharRNN, vocab: Vocab, config: BeamConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> list[Beam]:
    """The ``config.width`` best continuations, most likely first; refused before any step
    when the beams would not fit in memory. ``dtype``: the forward's precision (autocast)."""
    with autocast(torch.device(device), dtype):
        return _beam_search(model, vocab, config, device)


def _beam_search(model: CharRNN, vocab: Vocab, config: BeamConfig, device: torch.device | str) -> list[Beam]:
    need = beam_memory(model.config, config, vocab)
    fit = largest_fitting(need / config.width)
    require_memory(
        need,
        f"{config.width:,} beams of {config.length:,} characters ({need // config.width:,} bytes each)",
        f"at most --beam {fit:,} fits" if fit else "lower --length, or use a smaller model",
        torch.device(device),
    )
    model.eval()
    ids = vocab.encode(config.prime, unknown=config.unknown).tolist()
    if config.prime and not ids:
        raise VocabError("every character of the prime (--prime, --prime-file) is outside the vocabulary")
    if not ids:
        # As in sampling: with no prime, start as if at the beginning of a line.
        ids = [vocab.chars.index("\n")] if "\n" in vocab.chars else [0]
    prompt = torch.tensor([ids], device=device)
    logits, _, state = model(prompt)
    # (beams, L): prime and continuation, used by the repetition penalty and for the result.
    tokens = prompt
    scores = torch.zeros(1, device=device)
    for produced in range(config.length):
        if produced:
            logits, _, state = model(tokens[:, -1:], state)
        step_logits = logits[:, -1].float()
        if config.repetition_penalty != 1.0:
            step_logits = penalize_repetition(
                step_logits, tokens[:, -config.repetition_window :], config.repetition_penalty
            )
        total = scores.unsqueeze(1) + torch.log_softmax(step_logits, dim=-1)
        flat = total.reshape(-1)
        keep = min(config.width, flat.numel())
        scores, picked = torch.topk(flat, keep)
        vocab_size = total.size(1)
        origin, next_ids = picked // vocab_size, picked % vocab_size
        tokens = torch.cat([tokens.index_select(0, origin), next_ids.unsqueeze(1)], dim=1)
        state = _select(state, origin)
    beams = []
    start = tokens.size(1) - config.length
    for row, score in zip(tokens[:, start:].tolist(), scores.tolist()):
        matcher = StopMatcher(config.stop)
        text = matcher.feed(vocab.decode(row))
        beams.append(Beam(text if matcher.stopped else text + matcher.flush(), score))
    return beams
