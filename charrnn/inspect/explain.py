"""What a model makes of one text, position by position: the probability and bits of each
character it reads, its best guesses for it, the states of chosen units, the units that follow
the text's structure, the gates' saturation, the units most active across a stretch, and how
strongly each earlier character's input reaches the prediction of one character. What the
explorer page (``charrnn explore``) draws; never prints.

The predictions are those of ``charrnn eval``: the text read as one stream from a zero state,
every character after the first scored once, so the mean of the bits here is ``eval``'s bits
per character on the same text (``tests/test_explain.py`` checks it). The states are
``replay_text``'s, the units' search ``neurons``', the saturation ``saturation``'s and the
memory ``gradients.gradient_flow``'s, each reused as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from charrnn.data.unigram import unigram_bpc
from charrnn.errors import ConfigError, CorpusError, VocabError
from charrnn.inspect.gradients import gradient_flow
from charrnn.inspect.neurons import Match, best_per_feature, state_for
from charrnn.inspect.replayed import Replayed, check_replay_memory, replay_text
from charrnn.inspect.saturation import Saturation, gate_saturation
from charrnn.model.network import CharRNN
from charrnn.text import require_valid
from charrnn.units import LN2

# Steps of text run through the model per forward call when scoring: the logits of a piece,
# (steps x vocabulary) float32, are all that is held at once (8 MB for 256 tokens of 8192).
SCORE_STEPS = 1024
TOP_GUESSES = 5
# Units listed for a stretch of text.
STRETCH_UNITS = 10
# Bytes per token of what an explanation keeps besides the replayed states: probability,
# bits, the top guesses (ids int64 and probabilities float32) and the token's piece.
KEPT_BYTES_PER_TOKEN = 8 + TOP_GUESSES * 12 + 64


@dataclass(frozen=True)
class Explanation:
    """``prob[t]`` and ``bits[t]``: the model's probability of token ``t`` given the tokens
    before it (NaN at t = 0, which nothing predicts); ``top_ids[t]``/``top_probs[t]`` its best
    guesses there, most likely first. ``bpc``: the mean of ``bits`` per character (eval's
    figure); ``unigram``: the unigram baseline of the same text."""

    ids: np.ndarray
    pieces: tuple[str, ...]
    prob: np.ndarray
    bits: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    bpc: float | None
    unigram: float | None
    tokens_per_char: float = 1.0
    replayed: Replayed | None = field(default=None, repr=False)


def encode(vocab, text: str, max_chars: int, option: str = "--max-chars") -> tuple[np.ndarray, tuple[str, ...]]:
    """``text`` as the model's ids and the text of each, refused (one message each) when it
    is empty, longer than ``max_chars``, not valid Unicode (a lone surrogate) or holds
    characters the model never saw."""
    from charrnn.data.vocab_kinds import piece_decoder

    if not text:
        raise CorpusError("the text is empty; type or paste some text")
    if len(text) > max_chars:
        raise ConfigError(f"the text has {len(text):,} characters; at most {max_chars:,} are read ({option})")
    require_valid(text, "the text", from_bytes=False)
    try:
        ids = np.asarray(vocab.encode(text), dtype=np.int64)
    except VocabError as exc:
        raise VocabError(f"{exc} (the model can only read characters it was trained on)") from None
    decode = piece_decoder(vocab)
    return ids, tuple(decode(int(i)) for i in ids)


def check_explain_memory(config, tokens: int) -> None:
    """Refuse, before anything is allocated, an explanation of ``tokens`` tokens whose states,
    gates and kept figures would not fit in memory."""
    check_replay_memory(config, tokens, held_per_char=KEPT_BYTES_PER_TOKEN)


def explain(model: CharRNN, ids: np.ndarray, pieces: tuple[str, ...], tokens_per_char: float = 1.0, replay: bool = True) -> Explanation:
    """Score ``ids`` as one stream from a zero state, and (``replay``) replay the layers over
    it for units and gates. Memory is checked first. With the layers replayed, the scores
    come from the top layer's h the replay computed (the model's own fused kernel), through
    the model's decoder: the text runs through the layers once."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise CorpusError("the text is empty; type or paste some text")
    check_explain_memory(model.config, len(ids))
    replayed = replay_text(model, ids) if replay else None
    prob, top_ids, top_probs = _score(model, ids, None if replayed is None else replayed.hidden[-1])
    with np.errstate(divide="ignore"):
        bits = -np.log2(prob.astype(np.float64))
    scored = bits[1:]
    bpc = float(scored.mean()) * tokens_per_char if len(scored) else None
    return Explanation(ids, tuple(pieces), prob, bits, top_ids, top_probs, bpc, unigram_bpc(ids, tokens_per_char), tokens_per_char, replayed)


@torch.no_grad()
def _score(model: CharRNN, ids: np.ndarray, top_hidden: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per token: the probability the model gave it, and its top guesses, from the logits of
    the token before, a piece at a time: the decoder applied to ``top_hidden`` (T, H), the top
    layer's h, or without it the model's forward with the state carried."""
    steps = len(ids)
    k = min(TOP_GUESSES, model.config.vocab_size)
    prob = np.full(steps, np.nan, np.float32)
    top_ids = np.full((steps, k), -1, np.int64)
    top_probs = np.full((steps, k), np.nan, np.float32)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        tokens = torch.as_tensor(ids, device=device)
        state = None
        for start in range(0, steps - 1, SCORE_STEPS):
            end = min(start + SCORE_STEPS, steps - 1)
            if top_hidden is None:
                logits, _, state = model(tokens[start:end].unsqueeze(0), state)
                logits = logits[0]
            else:
                logits = model.decoder(torch.from_numpy(top_hidden[start:end]).to(device))
            probs = torch.softmax(logits.float(), dim=-1)
            wanted = tokens[start + 1 : end + 1]
            prob[start + 1 : end + 1] = probs.gather(1, wanted.unsqueeze(1)).squeeze(1).cpu().numpy()
            best = torch.topk(probs, k, dim=-1)
            top_ids[start + 1 : end + 1] = best.indices.cpu().numpy()
            top_probs[start + 1 : end + 1] = best.values.cpu().numpy()
    finally:
        model.train(was_training)
    return prob, top_ids, top_probs


def unit_values(explanation: Explanation, layer: int, unit: int, which: str = "h") -> np.ndarray:
    """One unit's ``h`` (or an LSTM's tanh ``c``) after each token (T,), checked against the
    model's size."""
    replayed = _replayed(explanation)
    if not 0 <= layer < replayed.layers:
        raise ConfigError(f"layer {layer} is out of range; the model has {replayed.layers} layer(s): 0..{replayed.layers - 1}")
    if not 0 <= unit < replayed.units:
        raise ConfigError(f"unit {unit} is out of range; each layer has {replayed.units} units: 0..{replayed.units - 1}")
    return state_for(replayed, which)[layer, :, unit]


def feature_units(explanation: Explanation, which: str = "h") -> list[Match]:
    """For each property of the text that ``inspect --find`` knows and that varies here, the
    unit that follows it best (Pearson's r)."""
    return best_per_feature(_replayed(explanation), explanation.pieces, which)


def saturation(explanation: Explanation) -> Saturation | None:
    """The gates' saturation over the text (``inspect --gates``); None for a plain RNN."""
    replayed = _replayed(explanation)
    if not any(replayed.gates):
        return None
    return gate_saturation(replayed)


@dataclass(frozen=True)
class StretchUnit:
    layer: int
    unit: int
    inside: float  # mean activation over the stretch
    outside: float  # mean activation over the rest of the text (0 when there is none)

    @property
    def score(self) -> float:
        return self.inside - self.outside


def stretch_units(explanation: Explanation, start: int, end: int, which: str = "h", top: int = STRETCH_UNITS) -> list[StretchUnit]:
    """The units most active across tokens ``start..end - 1`` (as LSTMVis selects a stretch):
    ranked by how far their mean activation there stands from their mean over the rest of
    the text, either way, largest first."""
    states = state_for(_replayed(explanation), which)
    steps = states.shape[1]
    if not 0 <= start < end <= steps:
        raise ConfigError(f"the stretch {start}..{end} is not inside the text's {steps:,} characters (give 0 <= start < end <= {steps:,})")
    inside = states[:, start:end].mean(axis=1, dtype=np.float64)
    rest = steps - (end - start)
    total = states.sum(axis=1, dtype=np.float64)
    outside = (total - inside * (end - start)) / rest if rest else np.zeros_like(inside)
    score = np.abs(inside - outside)
    order = np.argsort(-score, axis=None)[:top]
    units = []
    for layer, unit in zip(*np.unravel_index(order, score.shape)):
        units.append(StretchUnit(int(layer), int(unit), float(inside[layer, unit]), float(outside[layer, unit])))
    return units


def _replayed(explanation: Explanation) -> Replayed:
    if explanation.replayed is None:
        raise ValueError("this explanation was made without the layers replayed (replay=False)")
    return explanation.replayed


@dataclass(frozen=True)
class Memory:
    """How strongly the input at each earlier token reaches the prediction of token
    ``position``: ``norms[j]`` = ||dL/dx|| at token ``start + j``, L the cross-entropy of that
    prediction (``bits`` = L in bits, the explanation's own figure there)."""

    position: int
    start: int
    norms: np.ndarray
    bits: float


def memory(model: CharRNN, ids: np.ndarray, position: int, steps: int) -> Memory:
    """The gradient of the loss of predicting ``ids[position]`` against the inputs of the
    ``steps`` tokens before it (fewer at the text's start), the window starting from the
    state the text before it leaves (so the loss is the one the explanation shows)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not 1 <= position < len(ids):
        raise ConfigError(f"position {position} has nothing before it to remember, or is past the text's end (give 1..{len(ids) - 1})")
    if steps < 1:
        raise ConfigError("the memory window must be at least 1 step")
    start = max(0, position - steps)
    state = None
    if start > 0:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            _, _, state = model(torch.as_tensor(ids[:start]).unsqueeze(0))
            model.train(was_training)
    flow = gradient_flow(model, ids[start : position + 1], state=state)
    return Memory(position, start, flow.inputs[::-1].copy(), flow.loss / LN2)

