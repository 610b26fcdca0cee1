"""Log probabilities over the API: what a stream records of each token, and the shapes the
two APIs give them in (OpenAI's legacy completions object, Ollama's list).

A token's log probability is that of the distribution the sampler drew it from
(``charrnn.generation.sample.sampling_log_probs``: after the temperature and top-k/top-p),
not the model's raw one; at temperature 0, the model's own after the filters. A prompt token
(``echo``) is scored by the same rule from the state before it; the first has none, as in
OpenAI's API. A prompt token the filters leave out has probability 0, given as ``-9999.0``
(JSON has no infinity; OpenAI's chat API uses the same value for "very unlikely").

The worker thread records (``drawn``, ``prompt``) before it hands out the text a token makes;
the HTTP side takes the records covering the text it has (``take``), so that the records of
text a stop string withholds, and then drops, never go out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np
import torch

from charrnn.data.vocab_kinds import piece_decoder
from charrnn.generation.sample import SampleConfig, sampling_log_probs

# What a log probability of minus infinity (a filtered-out prompt token) is sent as.
UNLIKELY = -9999.0
OPENAI_MAX_LOGPROBS = 5  # the legacy completions API's range: 0 to 5
OLLAMA_MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class Scored:
    """One token: its text (as it appears in the completion), log probability (None: the
    prompt's first token), the most likely tokens at its place (None: not scored), and its
    offset in characters from the start of the prompt."""

    text: str
    logprob: float | None
    top: tuple[tuple[str, float, bytes], ...] | None
    offset: int
    label: str  # the token on its own (token_label)
    token_bytes: bytes


def score_streams(streams, vocab, top: int | None, prompt: str, echo: bool) -> None:
    """Give each stream of a request that asks for log probabilities (``top`` not None) its
    ``Scorer``, before the worker sees it."""
    if top is not None:
        for stream in streams:
            stream.scorer = Scorer(vocab, stream.config, top, len(prompt), score_prompt=echo)


def token_label(vocab, token: int) -> str:
    """A token's text on its own: its character, or its bytes as UTF-8 text, or where they are
    not (a piece of a character), OpenAI's ``bytes:\\xNN`` form."""
    pieces = getattr(vocab, "token_bytes", None)
    if pieces is None:
        return vocab.chars[token]
    try:
        return pieces[token].decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in pieces[token])


def _bytes_of(vocab, token: int) -> bytes:
    pieces = getattr(vocab, "token_bytes", None)
    return vocab.chars[token].encode("utf-8") if pieces is None else pieces[token]


class Scorer:
    """The records of one stream (module docstring). ``top``: alternatives per token;
    ``score_prompt``: the prompt's tokens are scored too (``echo``)."""

    def __init__(self, vocab, config: SampleConfig, top: int, prompt_chars: int, score_prompt: bool) -> None:
        self.vocab, self.config, self.top = vocab, config, top
        self.score_prompt = score_prompt
        self.base = prompt_chars  # generated text starts after the prompt (OpenAI's text_offset)
        self._decode_prompt, self._decode = piece_decoder(vocab), piece_decoder(vocab)
        self._prompt: list[Scored] = []
        self._prompt_chars = 0
        self._drawn: list[Scored] = []
        self._drawn_chars = 0
        self._given_prompt = self._given_drawn = 0
        self._lock = threading.Lock()

    # -- the worker -------------------------------------------------------------------

    def drawn(self, logits, token: int) -> None:
        """The token the sampler drew from ``logits`` (V,)."""
        log_probs = sampling_log_probs(torch.as_tensor(np.asarray(logits)).reshape(1, -1), self.config)[0]
        text = self._decode(token)
        entry = self._entry(text, log_probs, token, self.base + self._drawn_chars)
        with self._lock:
            self._drawn.append(entry)
            self._drawn_chars += len(text)

    def prompt(self, logits: torch.Tensor, ids: np.ndarray, begin: int, end: int) -> None:
        """Score prompt tokens ``begin`` .. ``end`` (exclusive) of ``ids`` given the logits
        (T, V) of a piece that ran from ``begin``: row t predicts token begin + t + 1."""
        entries = []
        if begin == 0 and end > 0:
            entries.append(self._prompt_entry(int(ids[0]), None))
        targets = ids[begin + 1 : end + 1]
        if len(targets):
            log_probs = sampling_log_probs(logits[: len(targets)], self.config)
            entries += [self._prompt_entry(int(t), log_probs[i]) for i, t in enumerate(targets)]
        with self._lock:
            self._prompt.extend(entries)

    def _prompt_entry(self, token: int, log_probs: torch.Tensor | None) -> Scored:
        text = self._decode_prompt(token)
        if log_probs is None:
            entry = Scored(text, None, None, self._prompt_chars, token_label(self.vocab, token), _bytes_of(self.vocab, token))
        else:
            entry = self._entry(text, log_probs, token, self._prompt_chars)
        self._prompt_chars += len(text)
        return entry

    def _entry(self, text: str, log_probs: torch.Tensor, token: int, offset: int) -> Scored:
        chosen = float(log_probs[token])
        top = ()
        if self.top:
            values, ids = torch.topk(log_probs, min(self.top, log_probs.numel()))
            top = tuple(
                (token_label(self.vocab, int(i)), float(v), _bytes_of(self.vocab, int(i)))
                for v, i in zip(values, ids) if v > float("-inf")
            )
        logprob = chosen if chosen > float("-inf") else UNLIKELY
        return Scored(text, logprob, top, offset, token_label(self.vocab, token), _bytes_of(self.vocab, token))

    # -- the HTTP side ----------------------------------------------------------------

    def take(self, chars: int, ended: bool) -> list[Scored]:
        """The records not yet taken that cover the first ``chars`` characters of generated
        text handed out (the prompt's first, when it is scored); once the stream has ended, a
        token the end cut (a stop string inside it) is given cut to the text that went out,
        and the records after it never."""
        with self._lock:
            out = self._prompt[self._given_prompt :]
            self._given_prompt = len(self._prompt)
            end = self.base + chars
            while self._given_drawn < len(self._drawn):
                entry = self._drawn[self._given_drawn]
                if entry.offset + len(entry.text) <= end:
                    out.append(entry)
                elif ended and entry.offset < end:
                    out.append(replace(entry, text=entry.text[: end - entry.offset]))
                else:
                    break
                self._given_drawn += 1
            if ended:
                self._given_drawn = len(self._drawn)
            return out


def start_logits(stepper, vocab) -> torch.Tensor:
    """The logits an empty prompt draws its first id from (V,): after a newline, as
    ``first_ids`` starts; uniform where the vocabulary has none (the id is drawn so)."""
    if "\n" not in vocab.chars:
        return torch.zeros(len(vocab))
    return stepper.prime(torch.tensor([[vocab.chars.index("\n")]]))[0][0]


def openai_logprobs(entries: list[Scored]) -> dict:
    """OpenAI's legacy ``logprobs`` object: the most likely tokens at each place and the one
    drawn (so up to ``logprobs`` + 1 of them)."""
    top_logprobs = []
    for entry in entries:
        if entry.top is None:
            top_logprobs.append(None)
            continue
        alternatives = {label: value for label, value, _ in entry.top}
        alternatives.setdefault(entry.label, entry.logprob)
        top_logprobs.append(alternatives)
    return {
        "tokens": [entry.text for entry in entries],
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": top_logprobs,
        "text_offset": [entry.offset for entry in entries],
    }


def ollama_logprobs(entries: list[Scored], top: int) -> list[dict]:
    """Ollama's ``logprobs``: one object per token, with ``top_logprobs`` when asked for."""
    out = []
    for entry in entries:
        item = {"token": entry.text, "logprob": entry.logprob, "bytes": list(entry.token_bytes)}
        if top:
            item["top_logprobs"] = [
                {"token": label, "logprob": value, "bytes": list(raw)} for label, value, raw in (entry.top or ())
            ]
        out.append(item)
    return out
