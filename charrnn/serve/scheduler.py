"""Continuous batching: every open stream advances in one batched model step.

A recurrent model's whole memory of a stream is its fixed-size state (an LSTM's h and c),
so many streams run as the rows of one batch, and a stream can join or leave between any
two steps: joining appends its primed state as a row, leaving drops the row. One worker
thread owns the model and the batch; the HTTP side hands it streams (``submit``), asks it to
drop one (``cancel``), and takes each stream's text as it is made (``take``).

The rows share the price of a step (one matrix product per layer): for the small preset on
one thread, 0.13 ms for one row, 0.60 ms for 32; and a row that leaves stops costing at once.

Each stream draws from its own generator (seeded by the request), through the one sampling
path, ``charrnn.generation.sample.sample_next``, with the noise of exactly its own rows: so
a seed gives the same text whether the stream ran alone or beside others, and the same text
as ``charrnn sample --seed`` (to float rounding of the batched product, which moves a logit
by ~1e-7: a draw changes only on a near-tie).

A stream passes through four states: waiting (queued for a slot), priming (its prompt runs
through the model), generating (a row of the batch) and done. A prompt is primed in pieces,
between the batched steps, the way llama.cpp prefills in chunks: each turn of the worker
gives priming about PRIME_BUDGET seconds, shared in turn by the streams that are priming,
then steps the batch. A running stream therefore waits about one piece between two
characters, whatever the length of another's prompt (primed in one pass, a
900,000-character prompt held every stream for 1.7-5.4 s on a 2-core machine, with its load;
docs/serve.md has the measurement). Pieces are never shorter than MIN_PIECE characters (a
prompt shorter than that runs whole, as ``charrnn sample`` runs it): with pieces of 32
characters or more the state and logits came out bit-identical to one pass over the whole
prompt for every cell and size measured, whereas shorter ones took other matrix kernels and
moved a logit by ~1e-6. A prompt primed in one piece is kept (``PrimedPrompts``, the most
recent few hundred): served again, it joins the batch from the kept state and logits without
a forward pass, and draws the same text.

The worker hands text to the event loop without waking it once per character: it calls
``wake`` when a step made news and no wake-up is pending, and the event loop takes all news
at once (``take_news``). A slow event loop therefore gets fewer, larger pieces, never a
backlog of wake-ups. ``wake(urgent)`` says whether the news should go out at once (a
stream's first text, or its end) or may wait for the event loop's next delivery.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from typing import Callable

import numpy as np
import torch

from charrnn.data.vocab import Vocab
from charrnn.data.vocab_kinds import piece_decoder
from charrnn.generation.noise import Noise, RowNoise
from charrnn.generation.sample import SampleConfig, first_ids, sample_next
from charrnn.generation.stops import StopMatcher
from charrnn.generation.stepper import FastState, FastStepper
from charrnn.serve.logprobs import start_logits
from charrnn.model.network import CharRNN
from charrnn.precision import autocast
from charrnn.threads import set_threads

# Seconds of prompt priming per turn of the worker: a long prompt or a burst of new requests
# delays each running stream by about this much per character. Counted in the worker's CPU
# time: on a busy machine, wall-clock pieces shrank until the call overhead was most of them
# (a 900,000-character prompt primed at half the speed of one pass, at a load of 6 on 2 cores),
# while the running streams' waits were the same either way.
PRIME_BUDGET = 0.004

# The fewest characters one piece of a prompt holds (module docstring). A piece is sized from
# the CPU time earlier pieces took per character, so it is never longer than the budget
# allows unless this floor is: for a 3x512 LSTM, whose priming took 0.6 ms per character on one
# thread, a turn then holds one 19 ms piece.
MIN_PIECE = 32

# The most characters one piece holds: a bound on the activations one piece allocates.
MAX_PIECE = 1 << 16

WAITING, PRIMING, GENERATING, DONE = "waiting", "priming", "generating", "done"

# Prompts whose primed state the worker keeps, the least recently used dropped first. A
# prompt primed in one piece costs the worker a forward pass of the model's own layers, about a
# millisecond for a few characters of the small preset whatever their number; served again
# (a fixed prefix, an empty or a repeated prompt), it costs a lookup. An entry holds a state
# and one row of logits (16 KiB for a 3x512 LSTM over 1,000 tokens): at most this many
# entries, and fewer where they would take more than PROMPT_CACHE_BYTES (a word vocabulary's
# logits can be large).
PROMPT_CACHE_ENTRIES = 256
PROMPT_CACHE_BYTES = 32 << 20


class PrimedPrompts:
    """The state and the last logits after each of the recently primed prompts, keyed by
    a digest of their ids. What a hit returns is exactly what priming computed, so a stream
    served from it draws the same text as one primed afresh."""

    def __init__(self, entries: int = PROMPT_CACHE_ENTRIES) -> None:
        self.entries = max(1, entries)
        self._primed: OrderedDict[bytes, tuple[FastState, torch.Tensor]] = OrderedDict()
        self.hits = 0

    @staticmethod
    def key(ids: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int64).tobytes(), digest_size=20).digest()

    def get(self, ids: np.ndarray) -> tuple[FastState, torch.Tensor] | None:
        """A copy of the state and logits (1, vocab) after ``ids``, or None."""
        key = self.key(ids)
        found = self._primed.get(key)
        if found is None:
            return None
        self._primed.move_to_end(key)
        self.hits += 1
        state, logits = found
        return state.copy(), logits.clone()

    def put(self, ids: np.ndarray, state: FastState, logits: torch.Tensor) -> None:
        self._primed[self.key(ids)] = (state.copy(), logits.detach().clone())
        while len(self._primed) > self.entries:
            self._primed.popitem(last=False)


class QueueFull(Exception):
    """Every slot is taken and the queue is at its bound."""


class NotAccepting(Exception):
    """The server is shutting down."""


class Stream:
    """One sequence being made: its sampling options, generator, text not yet taken, and
    why it ended. The worker alone draws from it; text crosses under the worker's lock."""

    def __init__(self, config: SampleConfig, vocab: Vocab, prompt_ids: np.ndarray | None = None) -> None:
        self.config = config
        self.phase = WAITING
        # The prompt's ids, encoded once by the caller that checked them; shared read-only by
        # the streams of one request.
        self.prompt_ids = vocab.encode(config.prime) if prompt_ids is None else prompt_ids
        self.primed = 0  # prompt characters run through the model so far
        self.prime_state = None  # the model's state after them
        self.generator = torch.Generator().manual_seed(config.seed)
        # One slab per character, fetched a block at a time, no more than the stream can use.
        self.noise = Noise(self.generator, 1, len(vocab), most=config.length + 1)
        self.decode = piece_decoder(vocab)
        self.matcher = StopMatcher(config.stop)
        self.scorer = None  # a charrnn.serve.logprobs.Scorer when the request asks for log probabilities
        self.prompt_tokens = len(self.prompt_ids)
        self.produced = 0  # ids drawn
        self.chars = 0  # characters given out
        self.done: str | None = None  # "stop" or "length", once the worker knows
        self.finish_reason: str | None = None  # what the taker is told: done, "shutdown", "cancelled", "error"
        self.cancel_step: int | None = None
        self.pending: list[str] = []
        self.listener: Callable[[], None] | None = None  # run on the event loop when there is news
        self.submitted = time.perf_counter()
        self.primed_at: float | None = None
        self.finished_at: float | None = None

    def feed(self, char_id: int) -> str:
        """The text this id makes (a stop string may hold some back), noting why the stream
        ends if it does."""
        self.produced += 1
        text = self.matcher.feed(self.decode(char_id))
        if self.matcher.stopped:
            self.done = "stop"
        elif self.produced >= self.config.length:
            self.done = "length"
            text += self.matcher.flush()
        return text

    @property
    def sampling_key(self) -> tuple:
        c = self.config
        return (c.temperature, c.top_k, c.top_p, c.min_p)


class BatchWorker:
    """The worker that advances every stream (module docstring)."""

    def __init__(
        self,
        model: CharRNN,
        vocab: Vocab,
        max_streams: int,
        max_queue: int,
        threads: int = 1,
        wake: Callable[[bool], None] = lambda urgent: None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.stepper = FastStepper(model, dtype)
        self.vocab = vocab
        self.max_streams, self.max_queue, self.threads = max_streams, max_queue, threads
        self.wake = wake
        self._cond = threading.Condition()
        self._waiting: deque[Stream] = deque()
        self._priming: deque[Stream] = deque()  # holding slots; the next to get a piece first
        self._active: list[Stream] = []  # the batch's rows, in order
        self._ids = np.zeros(0, np.int64)  # each row's last id: the next step's input
        self._state = self.stepper.initial_state(0)
        self._groups: list[tuple[SampleConfig, np.ndarray, list[Noise]]] | None = None
        self._open = 0  # submitted and not finished
        self._news: list[Stream] = []
        self._woken = False  # a wake-up is on its way and news not yet taken
        self._urgent = False  # news that should not wait: a stream's first text, or its end
        self._woken_urgent = False
        self._accepting = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.finished = 0
        self.cancelled = 0
        self.most_steps_after_cancel = 0
        self.busiest = 0  # the most rows one step has advanced
        self.prime_pieces = 0
        self.primed_chars = 0
        self.longest_piece = 0  # characters
        # Seconds and characters of the pieces primed so far, the older ones fading: their
        # ratio sizes the next piece. Summed rather than averaged per piece, so that a short
        # piece, whose time is mostly the call's own overhead, barely moves the estimate.
        self._prime_seconds = 0.0
        self._prime_chars = 0.0
        one = self.stepper.initial_state(1)
        entry_bytes = 4 * (one.h.size + (0 if one.c is None else one.c.size) + len(vocab))
        self._primed_prompts = PrimedPrompts(min(PROMPT_CACHE_ENTRIES, PROMPT_CACHE_BYTES // entry_bytes))

    # -- the HTTP side ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="charrnn-batch-worker", daemon=True)
        self._thread.start()

    def submit(self, streams: list[Stream]) -> None:
        """Queue streams (all or none); they join the batch as slots free."""
        with self._cond:
            if not self._accepting:
                raise NotAccepting()
            if not self._fits(len(streams)):
                raise QueueFull()
            self._waiting.extend(streams)
            self._open += len(streams)
            self._cond.notify()

    def has_room(self, count: int) -> bool:
        """Whether ``count`` more streams would be queued now. ``submit`` decides; this only
        spares the work of preparing streams that would be refused."""
        with self._cond:
            return self._accepting and self._fits(count)

    def _fits(self, count: int) -> bool:
        """Under the lock: whether ``count`` more open streams stay within the slots and the queue."""
        return self._open + count <= self.max_streams + self.max_queue

    def cancel(self, stream: Stream) -> None:
        """The client went away: the stream leaves before the next step."""
        with self._cond:
            if stream.finish_reason is None:
                stream.finish_reason = "cancelled"
                stream.cancel_step = self.steps
                self._cond.notify()

    def take(self, stream: Stream) -> tuple[str, str | None]:
        """The stream's text made since the last call, and why it ended (None: not yet)."""
        with self._cond:
            text = "".join(stream.pending)
            stream.pending.clear()
            return text, stream.finish_reason

    def take_news(self) -> list[Stream]:
        """The streams with text or an end not yet taken; re-arms ``wake``."""
        with self._cond:
            news, self._news = self._news, []
            self._woken = self._urgent = self._woken_urgent = False
        return news

    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    def end_all(self, reason: str) -> None:
        """End every open stream now (``reason``: why, for the client's last event)."""
        with self._cond:
            for stream in [*self._waiting, *self._priming, *self._active]:
                self._end(stream, reason)
            self._cond.notify()
        self._wake_if_news()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_accepting()
        self.end_all("shutdown")
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict:
        with self._cond:
            return {
                "active": len(self._active),
                "priming": len(self._priming),
                "queued": len(self._waiting),
                "open": self._open,
                "max_streams": self.max_streams,
                "max_queue": self.max_queue,
                "steps": self.steps,
                "busiest_step": self.busiest,
                "prime_pieces": self.prime_pieces,
                "primed_chars": self.primed_chars,
                "prompt_cache_hits": self._primed_prompts.hits,
                "longest_prime_piece": self.longest_piece,
                "finished": self.finished,
                "cancelled": self.cancelled,
                "most_steps_after_cancel": self.most_steps_after_cancel,
                "accepting": self._accepting,
            }

    # -- the worker -------------------------------------------------------------------

    def _end(self, stream: Stream, reason: str) -> None:
        """Under the lock: tell the taker the stream ended."""
        if stream.finish_reason is None:
            stream.finish_reason = reason
            stream.phase = DONE
            stream.finished_at = time.perf_counter()
            self._news.append(stream)
            self._urgent = True

    def _wake_if_news(self) -> None:
        with self._cond:
            urgent = self._urgent
            wake = bool(self._news) and (not self._woken or (urgent and not self._woken_urgent))
            if wake:
                self._woken = True
                self._woken_urgent = self._woken_urgent or urgent
        if wake:
            self.wake(urgent)

    def _run(self) -> None:
        set_threads(self.threads)
        with torch.no_grad():
            while self._wait_for_work():
                try:
                    self._admit()
                    self._prime()
                    if self._active:
                        self._step()
                except Exception:  # noqa: BLE001 - a failed step must not take the server down
                    self._fail_batch()
                self._wake_if_news()

    def _wait_for_work(self) -> bool:
        with self._cond:
            while True:
                self._leave([s for s in self._active if s.finish_reason is not None])
                for queue in (self._waiting, self._priming):
                    for stream in [s for s in queue if s.finish_reason is not None]:
                        queue.remove(stream)
                        self._forget(stream)
                if self._active or self._priming or self._waiting:
                    return True
                if self._stopping:
                    return False
                self._cond.wait()

    def _forget(self, stream: Stream) -> None:
        """Under the lock: a stream that ended is no longer open."""
        self._open -= 1
        if stream.finish_reason == "cancelled":
            self.cancelled += 1
            self.most_steps_after_cancel = max(self.most_steps_after_cancel, self.steps - stream.cancel_step)
        else:
            self.finished += 1

    def _admit(self) -> None:
        """Waiting streams take the free slots and start priming."""
        with self._cond:
            while self._waiting and len(self._active) + len(self._priming) < self.max_streams:
                stream = self._waiting.popleft()
                if stream.finish_reason is not None:
                    self._forget(stream)
                    continue
                stream.phase = PRIMING
                self._priming.append(stream)

    def _prime(self) -> None:
        """Run pieces of the priming streams' prompts, each in turn, for about PRIME_BUDGET;
        a stream whose prompt is through draws its first character and joins the batch."""
        started = time.thread_time()
        while self._priming:
            left = PRIME_BUDGET - (time.thread_time() - started)
            if left < PRIME_BUDGET / 4:
                return  # a piece this short would cost more in overhead than it primes
            # The stream stays in the queue while its piece runs, so that end_all (a
            # shutdown) finds it there; only this thread takes streams out.
            with self._cond:
                stream = self._priming[0]
                if stream.finish_reason is not None:  # cancelled or shut down meanwhile
                    self._forget(self._priming.popleft())
                    continue
            try:
                first = self._prime_piece(stream, left)
            except Exception:  # noqa: BLE001 - one stream's failure ends that stream only
                with self._cond:
                    self._end(stream, "error")
                    self._forget(self._priming.popleft())
                continue
            if first is None:
                with self._cond:
                    self._priming.rotate(-1)  # the others' turn first
                continue
            stream.primed_at = time.perf_counter()
            text = stream.feed(first)
            with self._cond:
                self._priming.popleft()
                if not self._publish(stream, text):
                    self._forget(stream)
                else:
                    self._join(stream, first, stream.prime_state)
                    stream.prime_state = None

    def _piece_length(self, remaining: int, seconds: float) -> int:
        if not self._prime_chars:
            wanted = MIN_PIECE
        else:
            rate = self._prime_seconds / self._prime_chars
            wanted = min(MAX_PIECE, max(MIN_PIECE, int(seconds / rate)))
        # Never leave a last piece shorter than MIN_PIECE (module docstring).
        return remaining if remaining - wanted < MIN_PIECE else wanted

    def _prime_piece(self, stream: Stream, seconds: float) -> int | None:
        """Run the next piece of the stream's prompt, sized to take about ``seconds``; after
        the last piece, the stream's first id (its state in ``prime_state``), else None. A
        prompt primed before in one piece is taken from ``PrimedPrompts`` whole (not one
        whose own log probabilities are asked for: those need every position's logits)."""
        ids = stream.prompt_ids
        if len(ids) == 0:
            # Nothing to run but the newline that starts an empty prompt: the shared path.
            first, state, _ = first_ids(self.stepper, self.vocab, stream.config, stream.generator, stream.noise)
            stream.prime_state = state
            if stream.scorer is not None:
                stream.scorer.drawn(start_logits(self.stepper, self.vocab), int(first[0]))
            return int(first[0])
        begin = stream.primed
        scorer = stream.scorer
        cacheable = begin == 0 and not (scorer is not None and scorer.score_prompt)
        cached = self._primed_prompts.get(ids) if cacheable else None
        if cached is not None:
            stream.prime_state, last = cached
            stream.primed = len(ids)
            return self._first_draw(stream, last)
        end = begin + self._piece_length(len(ids) - begin, seconds)
        piece = torch.from_numpy(ids[begin:end]).unsqueeze(0)
        model = self.stepper.model
        started = time.thread_time()
        logits = None
        with autocast(piece.device, self.stepper.dtype):
            if end < len(ids) and not (scorer is not None and scorer.score_prompt):
                # The decoder's logits are needed after the last character only (or to score it).
                _, stream.prime_state = model.rnn(model.embedding(piece), stream.prime_state)
            else:
                # The model's own forward, as charrnn sample's priming runs it (one call for a
                # prompt of one piece): the same logits, so the same first character.
                logits, _, state = model(piece, stream.prime_state)
                logits = logits.float()
        if logits is not None:
            if scorer is not None and scorer.score_prompt:
                scorer.prompt(logits[0], ids, begin, end)
            if end < len(ids):
                stream.prime_state = state
        took = time.thread_time() - started
        self._prime_seconds = 0.75 * self._prime_seconds + took
        self._prime_chars = 0.75 * self._prime_chars + (end - begin)
        stream.primed = end
        with self._cond:
            self.prime_pieces += 1
            self.primed_chars += end - begin
            self.longest_piece = max(self.longest_piece, end - begin)
        if end < len(ids):
            return None
        stream.prime_state = self.stepper.from_model_state(state)
        if cacheable and end == len(ids):  # primed in one piece
            self._primed_prompts.put(ids, stream.prime_state, logits[:, -1])
        return self._first_draw(stream, logits[:, -1])

    def _first_draw(self, stream: Stream, logits: torch.Tensor) -> int:
        """The stream's first id, drawn from the logits (1, vocab) after its prompt."""
        first = int(sample_next(logits, stream.config, stream.noise)[0])
        if stream.scorer is not None:
            stream.scorer.drawn(logits[0], first)
        return first

    def _publish(self, stream: Stream, text: str) -> bool:
        """Under the lock: hand over the stream's new text; False once it has ended."""
        if stream.finish_reason is not None:
            return False  # ended from outside (cancelled, shut down): nothing more goes out
        if text:
            self._urgent = self._urgent or stream.chars == 0
            stream.pending.append(text)
            stream.chars += len(text)
            self._news.append(stream)
        if stream.done is not None:
            self._end(stream, stream.done)
            return False
        return True

    def _join(self, stream: Stream, last_id: int, state: FastState | None) -> None:
        if state is None:
            state = self.stepper.initial_state(1)
        stream.phase = GENERATING
        self._active.append(stream)
        self._ids = np.append(self._ids, last_id)
        self._state.h = np.concatenate([self._state.h, state.h])
        if self._state.c is not None:
            self._state.c = np.concatenate([self._state.c, state.c], axis=1)
        self._groups = None

    def _leave(self, leaving: list[Stream]) -> None:
        """Under the lock: drop these rows from the batch."""
        if not leaving:
            return
        for stream in leaving:
            self._forget(stream)
        gone = {id(s) for s in leaving}
        keep = np.array([i for i, s in enumerate(self._active) if id(s) not in gone], dtype=np.int64)
        self._active = [self._active[i] for i in keep]
        self._ids = self._ids[keep]
        self._state.h = self._state.h[keep]
        if self._state.c is not None:
            self._state.c = self._state.c[:, keep]
        self._groups = None

    def _sampling_groups(self) -> list[tuple[SampleConfig, np.ndarray, list[Noise]]]:
        """Rows that sample alike (same temperature and filters), so that each group is one
        ``sample_next`` call."""
        if self._groups is None:
            rows: dict[tuple, list[int]] = {}
            for i, stream in enumerate(self._active):
                rows.setdefault(stream.sampling_key, []).append(i)
            self._groups = [
                (self._active[r[0]].config, np.array(r), [self._active[i].noise for i in r]) for r in rows.values()
            ]
        return self._groups

    def _step(self) -> None:
        n = len(self._active)
        logits = self.stepper.advance(self._ids, self._state)
        next_ids = np.empty(n, np.int64)
        for config, rows, noises in self._sampling_groups():
            part = logits if len(rows) == n else logits[rows]
            drawn = sample_next(part, config, RowNoise(noises))
            next_ids[rows] = drawn.numpy() if isinstance(drawn, torch.Tensor) else drawn
        self._ids = next_ids
        for i, stream in enumerate(self._active):
            if stream.scorer is not None:  # before the text goes out (logprobs.py)
                stream.scorer.drawn(logits[i], int(next_ids[i]))
        texts = [stream.feed(char_id) for stream, char_id in zip(self._active, next_ids.tolist())]
        with self._cond:
            self.steps += 1
            self.busiest = max(self.busiest, n)
            ended = [s for s, text in zip(self._active, texts) if not self._publish(s, text)]
            self._leave(ended)

    def _fail_batch(self) -> None:
        with self._cond:
            for stream in list(self._active):
                self._end(stream, "error")
            self._leave(list(self._active))
