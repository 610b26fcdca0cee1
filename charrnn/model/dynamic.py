"""Dynamic evaluation (Krause, Kahembwe, Murray and Renals, "Dynamic Evaluation of Neural
Sequence Models", ICML 2018): a copy of the model goes on learning from a text as it scores
it. The text is read as one stream (or several rows side by side, ``Adapter``) in segments;
each segment is scored first, then the copy takes one step from that segment's gradient, so
nothing is learned before it is predicted.

The step is the paper's RMS update with a global prior (its section 5):

    theta <- theta - lr * g / (RMS + epsilon) + decay * RMS_norm * (theta_0 - theta)

``g`` is the gradient of the segment's mean cross-entropy; ``RMS`` the root of each weight's
mean squared gradient over windows of the training text (``gradient_stats``); ``theta_0`` the
trained weights; ``RMS_norm`` each weight's RMS divided by the mean RMS (the mean of each
weight tensor's mean, as the paper's code takes it), clipped at ``1 / decay`` so that no
weight decays past its trained value. Weights whose gradients were large in training move
back toward their trained values fastest.

The model given is never changed: the adaptation works on a copy.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from charrnn.cells import CELLS
from charrnn.data.batches import eval_streams
from charrnn.errors import ConfigError, CorpusError
from charrnn.precision import autocast, faster_precision
from charrnn.model.network import CharRNN, ModelConfig, detach_state
from charrnn.options import DEFAULTS
from charrnn.ranges import check_ranges
from charrnn.saved import CorpusOptions

_DYNAMIC = DEFAULTS["dynamic"]


def default_lr(rows: int) -> float:
    """The step size for ``rows`` rows: the one-stream default times the square root of the
    rows, as the mean gradient of ``rows`` segments is that much less noisy than one's
    (measured on two models' validation text: docs/results.md, "Several rows")."""
    return _DYNAMIC["lr"] * math.sqrt(rows)


@dataclass(frozen=True)
class DynamicConfig:
    """The update's settings; the defaults are `eval --dynamic`'s (the defaults table's)."""

    lr: float | None = None  # None: default_lr(rows)
    decay: float = _DYNAMIC["decay"]
    seq: int = _DYNAMIC["seq"]
    rows: int = _DYNAMIC["rows"]
    row_chars: int = _DYNAMIC["row_chars"]
    epsilon: float = _DYNAMIC["epsilon"]
    stats_chars: int = _DYNAMIC["stats_chars"]
    stats_batch: int = _DYNAMIC["stats_batch"]

    def __post_init__(self) -> None:
        # The ranges first: the default step is computed from --dynamic-rows.
        check_ranges("dynamic", {k: v for k, v in asdict(self).items() if v is not None}, prefix="dynamic_")
        if self.lr is None:
            object.__setattr__(self, "lr", default_lr(self.rows))
        checks = [
            (self.epsilon > 0, "epsilon must be positive"),
            (self.stats_chars >= 2, "the gradient statistics need at least 2 characters"),
            (self.stats_batch >= 1, "the gradient statistics need at least one row"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class GradientStats:
    """Per weight tensor (in ``model.parameters()`` order): the RMS of its gradients over
    training windows, and its decay rate ``RMS / mean RMS``."""

    rms: list[torch.Tensor]
    decay_rate: list[torch.Tensor]
    tokens: int  # training tokens the statistics were gathered over
    windows: int
    seconds: float
    rows: int = 1  # read side by side, each window ``tokens / (rows * windows)`` long


@dataclass(frozen=True)
class DynamicScore:
    """What a dynamic pass scored: total nats over ``tokens`` tokens, and whether a stop
    request ended it early; with the static figure over the same tokens where the pass was
    given each token's static nats."""

    nats: float
    tokens: int
    seconds: float
    stopped: bool
    cpu_seconds: float = 0.0  # the process's CPU time (all its threads), which a busy machine does not inflate
    segments: int = 0  # updates taken (segments scored)
    static_nats: float | None = None  # the unchanged model's nats over the same tokens

    @property
    def mean(self) -> float:
        return self.nats / max(self.tokens, 1)

    @property
    def static_mean(self) -> float | None:
        return None if self.static_nats is None else self.static_nats / max(self.tokens, 1)


def _ids(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def _no_cudnn(device: torch.device):
    """cuDNN runs an RNN's backward pass only in training mode (which would turn dropout on):
    on a GPU the gradients are taken with torch's own kernels instead."""
    return torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else torch.enable_grad()


def gradient_stats(
    model: CharRNN, ids: np.ndarray, seq: int, batch: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> GradientStats:
    """The mean squared gradient of every weight over windows of the training text ``ids``,
    read as ``batch`` rows of ``seq``-token windows carrying the state (as the paper's code
    reads them), without dropout. ``model`` is left as it was."""
    from charrnn.data.batches import plan_layout

    if len(ids) < 2:
        raise CorpusError("the training text read for the gradient statistics holds fewer than 2 characters")
    started = time.perf_counter()
    seq = min(seq, len(ids) - 1)
    layout = plan_layout(len(ids), batch, seq)
    rows, n = layout.batch_size, layout.row_length
    inputs = ids[: rows * n].reshape(rows, n)
    targets = ids[1 : rows * n + 1].reshape(rows, n)
    work = copy.deepcopy(model).to(device).eval()
    params = list(work.parameters())
    sums = [torch.zeros_like(p) for p in params]
    state = work.initial_state(rows, device)
    with _no_cudnn(device):
        for w in range(layout.windows):
            span = slice(w * seq, (w + 1) * seq)
            work.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                _, loss, state = work(_ids(inputs[:, span]).to(device), state, _ids(targets[:, span]).to(device))
            loss.backward()
            state = detach_state(state)
            with torch.no_grad():
                for total, p in zip(sums, params):
                    total.add_(p.grad * p.grad)
    rms = [torch.sqrt(total / layout.windows) for total in sums]
    mean = sum(float(r.mean()) for r in rms) / len(rms)
    decay_rate = [r / max(mean, 1e-30) for r in rms]
    return GradientStats(rms, decay_rate, rows * layout.windows * seq, layout.windows, time.perf_counter() - started, rows)


class Adapter:
    """A copy of ``model`` that scores a text segment by segment and, after each, takes the
    update above.

    One row is the paper's reading: one stream. With several, the text is read a block of
    ``rows * row_chars`` characters at a time, each block cut into ``rows`` rows side by side
    as static evaluation cuts a text (``_block``); a segment is ``seq`` characters of every
    row, scored together, and the update follows their mean gradient. Every character is
    still scored before anything learns from it, but by then the model has learned from the
    other rows of its block, some of them later in the text, and it updates once per ``rows *
    seq`` characters. Several rows share each read of the weights, which makes a pass on a CPU
    several times cheaper; short blocks keep the rows near one another, so that the update
    still follows the text at hand (docs/results.md, "Several rows").
    """

    def __init__(
        self, model: CharRNN, stats: GradientStats, config: DynamicConfig, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> None:
        self.config = config
        self.device = device
        self.dtype = dtype
        self.model = copy.deepcopy(model).to(device).eval()
        self.params = list(self.model.parameters())
        if len(self.params) != len(stats.rms):
            raise ValueError("the gradient statistics were gathered on another model")
        with torch.no_grad():
            self.trained = [p.detach().clone() for p in self.params]
            self.scale = [config.lr / (r.to(device) + config.epsilon) for r in stats.rms]
            # decay x RMS_norm, clipped at 1: a weight never moves past its trained value.
            self.pull = [torch.clamp(config.decay * d.to(device), max=1.0) for d in stats.decay_rate]
        self.state = self.model.initial_state(1, device)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Score one segment, ``x`` and ``y`` (rows, length), from the current state (its
        total nats), then learn from it."""
        x, y = x.to(self.device), y.to(self.device)
        self.model.zero_grad(set_to_none=True)
        with _no_cudnn(self.device):
            with autocast(self.device, self.dtype):
                _, loss, state = self.model(x, self.state, y)
            loss.backward()
        self.state = detach_state(state)
        with torch.no_grad():
            # p += pull * (start - p) - scale * grad, as fused multi-tensor operations: one
            # temporary per weight instead of four.
            towards_start = torch._foreach_sub(self.trained, self.params)
            torch._foreach_addcmul_(self.params, self.pull, towards_start)
            torch._foreach_addcmul_(self.params, self.scale, [p.grad for p in self.params], value=-1.0)
        return float(loss.detach()) * y.numel()

    def segments(self, ids: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        """(nats, the targets scored) of each segment of ``ids``, read from the start of the
        text; the targets as their places among the text's targets (``ids[1:]``), every one
        scored once. The state ends where the text ends."""
        config = self.config
        usable = len(ids) - 1
        block = usable if config.rows == 1 else config.rows * config.row_chars
        self.state = self.model.initial_state(1, self.device)
        for start in range(0, usable, block):
            for nats, positions in self._block(ids[start : min(start + block, usable) + 1]):
                yield nats, start + positions

    def _block(self, ids: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        """The segments of one block, cut into rows as ``eval_streams`` cuts a text: row 0
        goes on from the state the last block ended in, every later row first reads the
        characters before it with the weights as they stand; the block's leftover tail
        continues its last row, where the next block goes on."""
        from charrnn.model.evaluation import last_row, primed_state

        seq = self.config.seq
        streams = eval_streams(ids, self.config.rows, min_row=seq)
        with autocast(self.device, self.dtype):
            self.state = detach_state(primed_state(self.model, streams, self.device, first=self.state))
        for x, y, positions in streams.windows(seq):
            yield self.step(x, y), positions
        self.state = last_row(self.state)
        tail = streams.tail()
        if tail is not None:
            x, y = tail
            for start in range(0, x.shape[1], seq):
                part = slice(start, start + seq)
                yield self.step(x[:, part], y[:, part]), streams.tail_positions(part)


def dynamic_evaluate(
    model: CharRNN,
    ids: np.ndarray,
    stats: GradientStats,
    config: DynamicConfig,
    device: torch.device,
    should_stop: Callable[[], bool] = lambda: False,
    dtype: torch.dtype = torch.float32,
    static: np.ndarray | None = None,
) -> tuple[DynamicScore, CharRNN]:
    """Score ``ids`` dynamically; returns the score (so far, where ``should_stop`` ended it
    between segments) and the adapted copy of the model. ``dtype``: the forward's precision
    (the weights and their updates stay fp32). ``static``: each target's nats under the
    unchanged model (``token_nats``), summed over the targets the pass scores, so that a stop
    has its static figure at once, whichever tokens it scored."""
    adapter = Adapter(model, stats, config, device, dtype)
    started, cpu_started = time.perf_counter(), time.process_time()
    nats, tokens, segments, stopped = 0.0, 0, 0, False
    static_nats = None if static is None else 0.0
    for segment_nats, positions in adapter.segments(ids):
        nats += segment_nats
        tokens += positions.size
        segments += 1
        if static is not None:
            static_nats += float(static[positions].sum(dtype=np.float64))
        if should_stop():
            stopped = tokens < len(ids) - 1
            break
    adapted = adapter.model
    adapted.zero_grad(set_to_none=True)
    adapted.requires_grad_(False)  # ready for inference, as a loaded model is
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return DynamicScore(nats, tokens, seconds, stopped, cpu_seconds, segments, static_nats), adapted


# ``auto`` times bf16 for a dynamic pass only from this many rows up; below, it stays fp32
# without a probe. On a 2-core Xeon with AMX a segment's forward and backward pass in bf16 took
# twice fp32's time in one row and ran 1.0-1.17x fp32's speed in 8 rows, but 1.6-1.9x in 16:
# near a tie a probe finds only noise, and a busy machine would flip the figure (and the text
# `sample --adapt` gives) from run to run.
PROBE_MIN_ROWS = 16


def choose_precision(
    model: CharRNN, ids: np.ndarray, config: DynamicConfig, device: torch.device
) -> tuple[torch.dtype, dict[torch.dtype, float] | None]:
    """``auto``'s precision for a dynamic pass on a CPU with native bf16: from
    ``PROBE_MIN_ROWS`` rows up, whichever of fp32 and bf16 runs the forward and backward
    pass of the first block's first segment faster (``charrnn.precision.faster_precision``),
    timed on a copy; fp32 below. Returns the choice and each precision's seconds per segment
    (None where nothing was timed)."""
    from charrnn.model.evaluation import primed_state

    if config.rows < PROBE_MIN_ROWS:
        return torch.float32, None
    work = copy.deepcopy(model).to(device).eval()
    first_block = ids[: config.rows * config.row_chars + 1]
    streams = eval_streams(first_block, config.rows, min_row=config.seq)
    x, y, _ = next(streams.windows(config.seq))
    x, y = x.to(device), y.to(device)
    start = primed_state(work, streams, device)

    def segment(dtype: torch.dtype):
        def run() -> None:
            work.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                _, loss, _ = work(x, start, y)
            loss.backward()

        return run

    return faster_precision({dtype: segment(dtype) for dtype in (torch.float32, torch.bfloat16)})


def training_sample(corpus: CorpusOptions | None, vocab, chars: int) -> np.ndarray:
    """The first ``chars`` characters of a run's training text, encoded with its vocabulary
    and cut where its validation text begins (where training held the last part out)."""
    from charrnn.data.corpus import read_head

    files = [] if corpus is None else corpus.train_files
    if not files:
        raise CorpusError("the checkpoint does not record its training text, which dynamic evaluation takes its gradient statistics from")
    try:
        text = read_head([Path(f) for f in files], chars, corpus.encoding)
    except CorpusError as exc:
        raise CorpusError(f"dynamic evaluation takes its gradient statistics from the run's training text: {exc}") from None
    ids = vocab.encode(text, "skip") if vocab.kind == "chars" else vocab.encode(text)
    if not corpus.val_files and corpus.fingerprint is not None:
        ids = ids[: corpus.fingerprint.train_ids]
    return np.asarray(ids, dtype=np.int64)


def dynamic_memory(config: ModelConfig, dynamic: DynamicConfig, text_bytes: int = 0, tokens: int = 0) -> int:
    """Bytes dynamic evaluation takes beside the loaded model: the adapted copy, the trained
    weights, the statistics and the step's factors, the gradients (seven copies of the weights
    in float32), the activations of a statistics window, ``text_bytes`` of text held, and
    the static nats of ``tokens`` tokens (``token_nats``, float32)."""
    weights = 7 * 4 * config.num_parameters()
    width = config.layers * config.hidden * (CELLS[config.cell].weight_blocks + 2) + 2 * config.vocab_size + config.embed
    activations = 2 * 4 * max(dynamic.stats_batch, dynamic.rows) * dynamic.seq * width
    return weights + activations + text_bytes + 4 * tokens
