"""Scoring text with a model: the mean cross-entropy of a stream of ids, as training's
validation and `charrnn eval` both measure it."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.data.batches import EvalStreams, eval_streams
from charrnn.data.items import IGNORED, item_bounds, padded_items
from charrnn.model.network import CharRNN, State
from charrnn.precision import autocast
from charrnn.threads import ThreadGovernor

EVAL_WINDOW = 256  # characters per forward call when evaluating


@torch.no_grad()
def evaluate_items(
    model: CharRNN, ids: np.ndarray, delimiter: int, device: torch.device, batch_size: int = 64, dtype: torch.dtype = torch.float32
) -> float:
    """Mean cross-entropy in nats per character of the items of ``ids`` (a list, ``train
    --items``), each read as training reads it: from the zero state after the delimiter, its
    characters and the delimiter that ends it scored. ``dtype``: the forward's precision."""
    was_training = model.training
    model.eval()
    starts, ends = item_bounds(np.asarray(ids), delimiter)
    total, count = 0.0, 0
    for first in range(0, len(starts), batch_size):
        x, y = padded_items(ids, starts[first : first + batch_size], ends[first : first + batch_size], delimiter)
        with autocast(device, dtype):
            logits, _, _ = model(x.to(device))
        y = y.to(device)
        total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=IGNORED, reduction="sum"))
        count += int((y != IGNORED).sum())
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device,
    batch_size: int = 64,
    seq_len: int = EVAL_WINDOW,
    governor: ThreadGovernor | None = None,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Mean cross-entropy in nats per character of ``ids`` under ``model``, read as one stream
    from a zero state: every character after the first is scored once, ``batch_size`` rows at
    a time (each primed with the text before it), so the figure does not depend on the batch.
    ``dtype``: the forward's precision (bf16: autocast; the loss is summed in fp32)."""
    total, count = 0.0, 0
    for y, nats, _ in _read(model, ids, device, batch_size, seq_len, governor, dtype, each=False):
        total += nats
        count += y.numel()
    return total / max(count, 1)


@torch.no_grad()
def token_nats(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device,
    batch_size: int = 64,
    seq_len: int = EVAL_WINDOW,
    governor: ThreadGovernor | None = None,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """``evaluate``'s reading with each character's nats kept, in the text's order: (len(ids)
    - 1,) float32, 4 bytes a character. The static figure over any part of the text is then a
    sum, with no second pass (``eval --dynamic`` stopped part-way)."""
    out = np.zeros(max(len(ids) - 1, 0), np.float32)
    for _, nats, positions in _read(model, ids, device, batch_size, seq_len, governor, dtype, each=True):
        out[positions] = nats
    return out


def _read(model, ids, device, batch_size, seq_len, governor, dtype, each: bool):
    """The reading both figures share: (targets, their nats, where they stand among the
    text's targets) a window at a time; the nats summed, or each target's (``each``)."""
    was_training = model.training
    model.eval()
    streams = eval_streams(ids, batch_size, min_row=seq_len)
    with autocast(device, dtype):
        state = primed_state(model, streams, device)

    def windows():
        # Lazily: a long text's windows of ids would take 16 bytes a character at once.
        for x, y, positions in streams.windows(seq_len):
            yield x, y, positions, False
        tail = streams.tail()
        if tail is not None:
            yield (*tail, streams.tail_positions(slice(None)), True)  # continues the last row

    try:
        for x, y, positions, is_tail in windows():
            started = time.perf_counter()
            with autocast(device, dtype):
                logits, loss, after = model(x.to(device), last_row(state) if is_tail else state, None if each else y.to(device))
            if not is_tail:
                state = after
            if each:
                nats = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1).to(device), reduction="none")
                nats = nats.cpu().numpy().reshape(positions.shape)
            else:
                nats = loss.item() * y.numel()
            if governor is not None and not is_tail:
                governor.observe(time.perf_counter() - started, y.numel())
            yield y, nats, positions
    finally:
        model.train(was_training)


def primed_state(model: CharRNN, streams: EvalStreams, device: torch.device, first: State | None = None) -> State:
    """The state each row of ``streams`` starts from: row 0 ``first`` (None: the zero state,
    the text's start, as one stream), every later row the state after reading its primer."""
    state = model.initial_state(1, device) if first is None else first
    primer = streams.primer()
    if primer is None:
        return state
    with torch.no_grad():
        _, _, primed = model(primer.to(device))
    if isinstance(state, tuple):
        return tuple(torch.cat([row0, rest], dim=1) for row0, rest in zip(state, primed))
    return torch.cat([state, primed], dim=1)


def last_row(state: State) -> State:
    """The last row of a batch's state (where the text's tail continues)."""
    if isinstance(state, tuple):
        return tuple(s[:, -1:].contiguous() for s in state)
    return state[:, -1:].contiguous()
