"""Generation as iterators: the caller decides what to do with each character as it comes
(print it, collect it, stop early), so streaming costs nothing extra."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Iterator

import torch

from charrnn.errors import ConfigError, VocabError
from charrnn.model import CharRNN
from charrnn.vocab import Vocab


@dataclass
class SampleConfig:
    length: int = 1000  # characters generated after the prime
    temperature: float = 1.0  # 0 = greedy (always the most likely character; seed irrelevant)
    top_k: int = 0  # keep only the k most likely characters; 0 = off
    top_p: float = 1.0  # keep the smallest set with this much probability; 1 = off
    prime: str = ""
    seed: int | None = None  # None = draw one (and report it, so the text can be made again)
    num_samples: int = 1
    stop: tuple[str, ...] = ()  # a sample ends at the first of these (not included)
    unknown: str = "error"  # prime characters outside the vocabulary: "error" or "skip"

    def __post_init__(self) -> None:
        checks = [
            (self.length >= 1, "--length must be at least 1"),
            (self.temperature >= 0, "--temperature must be >= 0 (0 means greedy)"),
            (self.top_k >= 0, "--top-k must be >= 0 (0 turns it off)"),
            (0 < self.top_p <= 1, "--top-p must be in (0, 1]"),
            (self.num_samples >= 1, "--num-samples must be at least 1"),
            (all(self.stop), "--stop strings must not be empty"),
            (self.unknown in ("error", "skip"), "--unknown must be 'error' or 'skip'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.seed is None:
            self.seed = secrets.randbelow(2**31)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus."""
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


def choose(logits: torch.Tensor, config: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    """Next ids (N,) from logits (N, V)."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / config.temperature, config.top_k, config.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def prime_ids(vocab: Vocab, config: SampleConfig) -> list[int]:
    ids = vocab.encode(config.prime, unknown=config.unknown).tolist()
    if config.prime and not ids:
        raise VocabError("every character of --prime is outside the vocabulary")
    return ids


@torch.no_grad()
def generate_ids(
    model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str = "cpu"
) -> Iterator[torch.Tensor]:
    """Yield the next id of every sample, (num_samples,) at a time, ``config.length`` times."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(config.seed)
    n = config.num_samples
    ids = prime_ids(vocab, config)
    state = None
    if ids:
        prompt = torch.tensor(ids, device=device).unsqueeze(0).expand(n, -1)
        logits, _, state = model(prompt, state)
        next_ids = choose(logits[:, -1], config, generator)
    elif "\n" in vocab.chars:
        # No prime: start as if at the beginning of a line (the newline is not output).
        newline = torch.full((n, 1), vocab.chars.index("\n"), device=device)
        logits, _, state = model(newline, state)
        next_ids = choose(logits[:, -1], config, generator)
    else:
        next_ids = torch.randint(len(vocab), (n,), generator=generator, device=device)
    for produced in range(config.length):
        yield next_ids
        if produced + 1 == config.length:
            return
        logits, _, state = model(next_ids.unsqueeze(1), state)
        next_ids = choose(logits[:, -1], config, generator)


class StopMatcher:
    """Streams text through while holding back just enough to cut at a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that is safe to emit now; sets ``stopped`` once a stop string completes."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.pending += text
        for stop in self.stops:
            at = self.pending.find(stop)
            if at >= 0:
                self.stopped = True
                out, self.pending = self.pending[:at], ""
                return out
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def stream(
    model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str = "cpu"
) -> Iterator[str]:
    """One sample as it is made, a piece of text at a time (the prime is not repeated)."""
    if config.num_samples != 1:
        raise ConfigError("stream() makes one sample; use generate_batch() for several")
    matcher = StopMatcher(config.stop)
    for next_ids in generate_ids(model, vocab, config, device):
        text = matcher.feed(vocab.chars[int(next_ids[0])])
        if text:
            yield text
        if matcher.stopped:
            return
    tail = matcher.flush()
    if tail:
        yield tail


def generate_batch(
    model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str = "cpu"
) -> list[str]:
    """``config.num_samples`` samples made together in one batched pass."""
    matchers = [StopMatcher(config.stop) for _ in range(config.num_samples)]
    texts = [[] for _ in range(config.num_samples)]
    for next_ids in generate_ids(model, vocab, config, device):
        for i, char_id in enumerate(next_ids.tolist()):
            if not matchers[i].stopped:
                texts[i].append(matchers[i].feed(vocab.chars[char_id]))
        if all(m.stopped for m in matchers):
            break
    return ["".join(parts) + (m.flush() if not m.stopped else "") for parts, m in zip(texts, matchers)]
