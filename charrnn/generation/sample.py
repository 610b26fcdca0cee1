"""Generation as iterators: the caller decides what to do with each character as it comes
(print it, collect it, stop early), so streaming costs nothing extra."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch

from charrnn.options import DEFAULTS, Precision
from charrnn.ranges import check_ranges
from charrnn.errors import ConfigError, VocabError
from charrnn.text import require_valid
from charrnn.model.network import CharRNN
from charrnn.generation.batch_memory import check_sample_memory, check_texts_memory, piece_rows
from charrnn.generation.noise import Noise, draw
from charrnn.generation.stepper import Stepper, choose_precision, make_stepper
from charrnn.generation.stops import StopMatcher
from charrnn.threads import ThreadGovernor
from charrnn.data.vocab_kinds import piece_decoder
from charrnn.data.vocab import Vocab

# Temperatures outside [MIN_TEMPERATURE, MAX_TEMPERATURE] have a defined limit instead of a
# float32 division that overflows (1e-45) or underflows (1e308): below, the draw is greedy
# (the most likely character, as at 0); above, it is uniform over the characters that top-k,
# top-p and min-p keep. At the bounds a logit gap of 0.002 already decides the draw 10^8 to
# one, and 60 nats of logits move a probability by under 1%, so neither limit is a jump.
MIN_TEMPERATURE = 1e-4
MAX_TEMPERATURE = 1e4

_SAMPLE = DEFAULTS["sample"]


@dataclass
class SampleConfig:
    """How to sample; the defaults are `charrnn sample`'s (the defaults table's)."""

    length: int = _SAMPLE["length"]  # characters generated after the prime
    temperature: float = _SAMPLE["temperature"]  # 0 (or below MIN_TEMPERATURE) = greedy; above MAX_TEMPERATURE = uniform
    top_k: int = _SAMPLE["top_k"]  # keep only the k most likely characters; 0 = off
    top_p: float = _SAMPLE["top_p"]  # keep the smallest set with this much probability; 1 = off
    min_p: float = _SAMPLE["min_p"]  # drop characters less likely than min_p x the most likely one; 0 = off
    repetition_penalty: float = _SAMPLE["repetition_penalty"]  # > 1 discourages characters seen recently; 1 = off
    repetition_window: int = _SAMPLE["repetition_window"]  # how many recent characters (prime included) the penalty sees
    prime: str = ""
    seed: int | None = None  # None = draw one (and report it, so the text can be made again)
    num_samples: int = _SAMPLE["num_samples"]
    stop: tuple[str, ...] = ()  # a sample ends at the first of these (not included)
    unknown: str = _SAMPLE["unknown"]  # prime characters outside the vocabulary: "error" or "skip"
    engine: str = _SAMPLE["engine"]  # "fast", "eager" (the model's own forward) or "auto"; see charrnn.generation.stepper
    precision: str = _SAMPLE["precision"]  # "auto", "fp32" or "bf16" (a GPU also "fp16"); see charrnn.precision

    def is_plain(self) -> bool:
        """Temperature only: no top-k, top-p, min-p or repetition penalty."""
        return self.top_k == 0 and self.top_p == 1.0 and self.min_p == 0 and self.repetition_penalty == 1.0

    def __post_init__(self) -> None:
        check_ranges("sample", asdict(self))
        checks = [
            (all(self.stop), "--stop strings must not be empty"),
            (self.unknown in ("error", "skip"), "--unknown must be 'error' or 'skip'"),
            (self.engine in ("auto", "fast", "eager"), "--engine must be auto, fast or eager"),
            (self.precision in {p.value for p in Precision}, "--precision must be auto, fp32, fp16 or bf16"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        require_valid(self.prime, "--prime")
        for stop in self.stop:
            require_valid(stop, "--stop")
        if self.seed is None:
            self.seed = secrets.randbelow(2**31)


def penalize_repetition(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019), as in transformers and llama.cpp: the
    logit of every id in ``history`` (N, L) is divided by ``penalty`` when positive and
    multiplied when negative, so a penalised character always becomes less likely."""
    if penalty == 1.0 or history.numel() == 0:
        return logits
    seen = torch.gather(logits, -1, history)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    # scatter (not add): an id repeated in the history is penalised once, not once per time.
    return logits.scatter(-1, history, seen)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float, min_p: float = 0.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k, outside the top-p nucleus, and below min-p."""
    if min_p > 0:
        # min-p (Nguyen et al. 2024): the cut-off scales with the model's confidence.
        probs = torch.softmax(logits, dim=-1)
        floor = min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < floor, float("-inf"))
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first always stays).
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor | np.ndarray,
    config: SampleConfig,
    noise: Noise,
    history: torch.Tensor | None = None,
) -> torch.Tensor | np.ndarray:
    """The next id of every sample (N,) from logits (N, V): the one place where the
    repetition penalty, the temperature (with its limits), top-k, top-p and min-p apply and
    the noise decides, whichever stepper made the logits. ``history`` (N, L) holds the recent
    ids the penalty applies to (keep it with ``remember``).

    Numpy logits (the fast stepper's) stay numpy when nothing but the temperature applies,
    and so do the ids: the draw is then the Gumbel-max form of the same draw, argmax(z - log q)
    for argmax(softmax(z) / q) with the same q ~ Exp(1) (the same characters up to float
    rounding; a test checks it), three numpy calls instead of a dozen torch calls of a few
    microseconds' dispatch each. Otherwise the logits become a tensor once, for the filters."""
    plain = config.is_plain()
    if not plain or not isinstance(logits, np.ndarray):
        logits = torch.as_tensor(logits).float()
        if history is not None:
            logits = penalize_repetition(logits, history, config.repetition_penalty)
    temperature = config.temperature
    if temperature < MIN_TEMPERATURE:
        return logits.argmax(-1)  # numpy's and torch's both take the first of equal maxima
    if isinstance(logits, np.ndarray):
        uniform = temperature > MAX_TEMPERATURE
        gumbel = noise.next_gumbel()
        if uniform:
            return gumbel.argmax(-1)  # nothing filtered: the noise alone decides
        z = logits / np.float32(temperature)
        z += gumbel
        return z.argmax(-1)
    return draw(_weights(logits, config), noise)


def _weights(logits: torch.Tensor, config: SampleConfig) -> torch.Tensor:
    """Unnormalised weights of the draw from (penalised) logits, at a temperature of at least
    MIN_TEMPERATURE: the filters, then softmax (uniform over what they keep above
    MAX_TEMPERATURE)."""
    temperature = config.temperature
    z = filter_logits(logits / min(temperature, MAX_TEMPERATURE), config.top_k, config.top_p, config.min_p)
    # Uniform: equal weight for every id the filters keep.
    return (z > float("-inf")).float() if temperature > MAX_TEMPERATURE else torch.softmax(z, dim=-1)


def next_distribution(logits: torch.Tensor | np.ndarray, config: SampleConfig, history: torch.Tensor | None = None) -> torch.Tensor:
    """The probabilities ``sample_next`` draws the next id from (N, V), summing to 1: the same
    repetition penalty, temperature (greedy below MIN_TEMPERATURE: all on the first most
    likely id), top-k, top-p and min-p."""
    logits = torch.as_tensor(logits).float()
    if history is not None:
        logits = penalize_repetition(logits, history, config.repetition_penalty)
    if config.temperature < MIN_TEMPERATURE:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).float()
    weights = _weights(logits, config)
    return weights / weights.sum(-1, keepdim=True)


def sampling_log_probs(logits: torch.Tensor | np.ndarray, config: SampleConfig, history: torch.Tensor | None = None) -> torch.Tensor:
    """The log of ``next_distribution`` (-inf where filtered out), for the API's log
    probabilities. Greedy draws nothing (its distribution is all on one id): below
    MIN_TEMPERATURE it is the model's own distribution (at temperature 1) after the filters,
    whose most likely id is the one greedy takes. Computing it draws no noise, so the text is
    the same with it or without."""
    if config.temperature < MIN_TEMPERATURE:
        config = replace(config, temperature=1.0)
    return torch.log(next_distribution(logits, config, history))


def draw_plain_numpy(logits: np.ndarray, temperature: float, noise: Noise) -> np.ndarray:
    """``sample_next`` for numpy logits and a temperature alone."""
    return sample_next(logits, SampleConfig(temperature=temperature, seed=0), noise)


def remember(history: torch.Tensor | None, next_ids: torch.Tensor, config: SampleConfig) -> torch.Tensor | None:
    """``history`` with ``next_ids`` appended, cut to the penalty's window; None when the
    penalty is off, so that sampling without it does no extra work."""
    if config.repetition_penalty == 1.0:
        return None
    new = next_ids.unsqueeze(-1)
    if history is None:
        return new
    return torch.cat([history, new], dim=-1)[..., -config.repetition_window :]


def prime_ids(vocab: Vocab, config: SampleConfig) -> list[int]:
    """The prime's ids, checked before any output: characters the model cannot read, and a
    batch whose texts alone would not fit in memory (a caller may allocate a list per sample
    before the model runs; the model's own share is checked where it is allocated)."""
    check_texts_memory(vocab, config)
    ids = vocab.encode(config.prime, unknown=config.unknown).tolist()
    if config.prime and not ids:
        raise VocabError("every character of the prime (--prime, --prime-file) is outside the vocabulary")
    return ids


@torch.no_grad()
def first_ids(
    stepper: Stepper,
    vocab: Vocab,
    config: SampleConfig,
    generator: torch.Generator,
    noise: Noise,
    device: torch.device | str = "cpu",
    rows: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor | None, object, torch.Tensor | None]:
    """The first id of each of ``config.num_samples`` samples, drawn after the prime has run
    through the model; with the state after the prime and the penalty's history. Every
    sampling loop starts here, so that a seed makes the same text in each of them.

    ``rows``: a batch bigger than this runs that many samples at a time, and ``should_stop``
    is asked between pieces: when it answers True the ids and the state are None."""
    n = config.num_samples
    ids = prime_ids(vocab, config)
    if ids:
        prompt = torch.tensor(ids, device=device).unsqueeze(0).expand(n, -1)
        history = prompt[:, -config.repetition_window :] if config.repetition_penalty != 1.0 else None
        if rows is not None and n > rows:
            return _in_pieces(_primer(stepper), prompt, None, config, noise, history, rows, should_stop) + (history,)
        logits, state = stepper.prime(prompt)
        return sample_next(logits, config, noise, history), state, history
    if "\n" in vocab.chars:
        # No prime: start as if at the beginning of a line (the newline is not output).
        newline = torch.full((n, 1), vocab.chars.index("\n"), device=device)
        if rows is not None and n > rows:
            return _in_pieces(_primer(stepper), newline, None, config, noise, None, rows, should_stop) + (None,)
        logits, state = stepper.prime(newline)
        return sample_next(logits, config, noise), state, None
    return torch.randint(len(vocab), (n,), generator=generator, device=device), None, None


# Seconds of generation per report to the thread governor: one step takes about 0.1 ms, too
# short to time alone without noise, and a report every step would cost more than it saves.
GOVERNED_SECONDS = 0.02


@torch.no_grad()
def generate_ids(
    model: CharRNN,
    vocab: Vocab,
    config: SampleConfig,
    device: torch.device | str = "cpu",
    governor: ThreadGovernor | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next id of every sample, (num_samples,) at a time, ``config.length`` times
    (a tensor, or a numpy array on the single-sample fast path). ``governor`` hears how long
    each step took (it may change the thread count between steps; the text stays the same).

    A batch whose memory would not fit is refused before anything is allocated. A batch too
    big to step at once within a fraction of a second is stepped ``piece_rows`` samples at a
    time, and ``should_stop`` is asked between pieces: when it answers True the iteration
    ends early, after the last step completed for every sample."""
    model.eval()
    check_sample_memory(model.config, config, device, vocab)
    dtype, _ = choose_precision(model, config.engine, config.num_samples, config.precision, torch.device(device))
    stepper = make_stepper(model, config.engine, config.num_samples, dtype)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    n = config.num_samples
    rows = piece_rows(model.config, device)
    prime_rows = piece_rows(model.config, device, steps=max(1, len(config.prime)))
    noise = Noise(generator, n, model.config.vocab_size, device)
    next_ids, state, history = first_ids(stepper, vocab, config, generator, noise, device, prime_rows, should_stop)
    if next_ids is None:
        return
    # One plain sample on a numpy stepper stays in numpy: the stepper advances its state in
    # place and ``sample_next`` draws from its logits without a tensor in between.
    in_numpy = stepper.numpy_steps and n == 1 and config.is_plain()
    if in_numpy:
        next_ids = next_ids.numpy()
        if state is None:
            state = stepper.initial_state(n)
    block_started, block_steps = time.perf_counter(), 0
    for produced in range(config.length):
        yield next_ids
        if produced + 1 == config.length:
            return
        if governor is not None and block_steps % 16 == 0 and block_steps:
            # The time the consumer takes between steps is counted too.
            elapsed = time.perf_counter() - block_started
            if elapsed >= GOVERNED_SECONDS:
                governor.observe(elapsed, block_steps * n)
                block_started, block_steps = time.perf_counter(), 0
        block_steps += 1
        if in_numpy:
            logits = stepper.advance(next_ids, state)  # the state is ours alone: in place
        elif n > rows:
            history = remember(history, next_ids, config)
            next_ids, state = _in_pieces(stepper.step, next_ids, state, config, noise, history, rows, should_stop)
            if next_ids is None:
                return
            continue
        else:
            history = remember(history, next_ids, config)
            logits, state = stepper.step(next_ids, state)
        next_ids = sample_next(logits, config, noise, history)


class _NoiseRows:
    """The rows of one step's noise that a piece of the batch draws with: the whole slab is
    fetched once per step, as for the batch stepped whole, so the text is the same."""

    def __init__(self, noise: Noise) -> None:
        self.noise = noise
        self.rows = slice(None)
        self.slab = None
        self.gumbel = None

    def next(self) -> torch.Tensor:
        if self.slab is None:
            self.slab = self.noise.next()
        return self.slab[self.rows]

    def next_gumbel(self) -> np.ndarray:
        if self.gumbel is None:
            self.gumbel = self.noise.next_gumbel()
        return self.gumbel[self.rows]


def _in_pieces(run, ids, state, config: SampleConfig, noise: Noise, history, rows: int, should_stop):
    """``run(ids, state) -> logits, state`` (a stepper's ``step`` or ``prime``) and the draw,
    ``rows`` samples at a time; the new state is written into one state for the batch, so
    the old and new states are held once each. (None, None) when ``should_stop`` answers
    True between pieces."""
    n = ids.shape[0]
    drawn = torch.empty(n, dtype=torch.long, device=ids.device)
    noise_rows = _NoiseRows(noise)
    new_state = None
    for start in range(0, n, rows):
        if start and should_stop is not None and should_stop():
            return None, None
        end = min(start + rows, n)
        logits, piece = run(ids[start:end], _state_rows(state, start, end))
        noise_rows.rows = slice(start, end)
        picked = sample_next(logits, config, noise_rows, None if history is None else history[start:end])
        drawn[start:end] = torch.as_tensor(picked)
        new_state = _put_state_rows(new_state, n, start, piece)
    return drawn, new_state


def _primer(stepper: Stepper):
    return lambda ids, _state: stepper.prime(ids)


def _state_rows(state, start: int, end: int):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s[:, start:end].contiguous() for s in state)
    if isinstance(state, torch.Tensor):
        return state[:, start:end].contiguous()
    return type(state)(state.h[start:end], None if state.c is None else state.c[:, start:end])


def _put_state_rows(batch, n: int, start: int, piece):
    """``piece`` written into rows ``start``.. of ``batch`` (made, of ``n`` rows, on the first piece)."""
    if isinstance(piece, tuple):
        batch = batch or tuple(p.new_empty((p.shape[0], n, *p.shape[2:])) for p in piece)
        for whole, part in zip(batch, piece):
            whole[:, start : start + part.shape[1]] = part
        return batch
    if isinstance(piece, torch.Tensor):
        batch = piece.new_empty((piece.shape[0], n, *piece.shape[2:])) if batch is None else batch
        batch[:, start : start + piece.shape[1]] = piece
        return batch
    if batch is None:
        c = None if piece.c is None else np.empty((piece.c.shape[0], n, piece.c.shape[2]), np.float32)
        batch = type(piece)(np.empty((n, piece.h.shape[1]), np.float32), c)
    rows = piece.h.shape[0]
    batch.h[start : start + rows] = piece.h
    if piece.c is not None:
        batch.c[:, start : start + rows] = piece.c
    return batch


def stream(
    model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str = "cpu"
) -> Iterator[str]:
    """One sample as it is made, a piece of text at a time (the prime is not repeated)."""
    if config.num_samples != 1:
        raise ConfigError("stream() makes one sample; use generate_batch() for several")
    matcher = StopMatcher(config.stop)
    decode = piece_decoder(vocab)  # a byte or BPE token may end inside a character
    for next_ids in generate_ids(model, vocab, config, device):
        text = matcher.feed(decode(int(next_ids[0])))
        if text:
            yield text
        if matcher.stopped:
            return
    tail = matcher.flush()
    if tail:
        yield tail


@dataclass(frozen=True)
class Piece:
    """Text of one sample (``sample`` counts from 0). ``last``: the sample ends with this
    piece; ``cut``: it ends because generation was stopped, not because it was complete."""

    sample: int
    text: str
    last: bool = False
    cut: bool = False


def stream_samples(
    model: CharRNN,
    vocab: Vocab,
    config: SampleConfig,
    device: torch.device | str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    governor: ThreadGovernor | None = None,
) -> Iterator[Piece]:
    """``config.num_samples`` samples made together in one batched pass, given out one whole
    sample after another, each as soon as its text is final: the first as it is made; the
    text a later one already has when the one before it ends comes at once, the rest of it as
    it is made. Every sample ends with a ``last`` piece.

    ``should_stop`` is asked once per character, and within a character between pieces of a
    big batch's work (see ``generate_ids``) and of the reading of its ids; when it answers
    True, generation ends and every sample not yet complete is given out as read so far,
    marked ``cut``. The same seed gives the same characters as ``generate_batch`` (and, for
    one sample, ``stream``). A batch whose memory would not fit is refused first."""
    n = config.num_samples
    check_sample_memory(model.config, config, device, vocab)
    # Without stop strings a matcher passes text through and keeps nothing, and a character
    # vocabulary's decoder is a lookup: one of each serves every sample.
    shared_matcher = None if config.stop else StopMatcher(())
    matchers = [shared_matcher or StopMatcher(config.stop) for _ in range(n)]
    shared_decoder = piece_decoder(vocab) if getattr(vocab, "incremental_decoder", None) is None else None
    decoders = [shared_decoder or piece_decoder(vocab) for _ in range(n)]
    held: list[list[str]] = [[] for _ in range(n)]  # made, not yet given out
    current = 0  # the sample being given out; those before it are out in full
    cut = False
    step = 0
    for step, next_ids in enumerate(generate_ids(model, vocab, config, device, governor, should_stop), 1):
        for start in range(0, n, READ_ROWS):
            if start and should_stop is not None and should_stop():
                cut = True
                break
            for i, char_id in enumerate(next_ids[start : start + READ_ROWS].tolist(), start):
                matcher = matchers[i]
                if not matcher.stopped:
                    text = matcher.feed(decoders[i](char_id))
                    if text:
                        held[i].append(text)
        if cut:
            break
        while current < n:
            text = "".join(held[current])
            held[current].clear()
            if not matchers[current].stopped:
                if text:
                    yield Piece(current, text)
                break
            yield Piece(current, text, last=True)
            current += 1
        if current == n:
            return
        # Not after the last step: then every sample is complete, whatever the answer.
        if step < config.length and should_stop is not None and should_stop():
            cut = True
            break
    if step < config.length:
        cut = True  # generation ended early: asked to stop between pieces of a step
    for i in range(current, n):
        # A stop string's partial match held back at the end is text: the sample did not stop.
        tail = "" if matchers[i].stopped else matchers[i].flush()
        yield Piece(i, "".join(held[i]) + tail, last=True, cut=cut and not matchers[i].stopped)


# Samples whose new character is read (decoded, matched, kept) between two questions to
# ``should_stop``: about 0.1 s of Python.
READ_ROWS = 1 << 16


def generate_batch(
    model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str = "cpu"
) -> list[str]:
    """``config.num_samples`` samples made together in one batched pass."""
    texts: list[list[str]] = [[] for _ in range(config.num_samples)]
    for piece in stream_samples(model, vocab, config, device):
        texts[piece.sample].append(piece.text)
    return ["".join(parts) for parts in texts]
