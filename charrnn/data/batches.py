"""Contiguous-stream batching for truncated backpropagation through time.

The id sequence is cut into B rows (streams) of equal length; training walks down the
columns in windows of T characters, so row i of window k+1 continues row i of window k and
the recurrent state can be carried from one window to the next::

    ids:   a b c d e f g h i j k l m n o p q r s t u v w x   (N = 24, B = 4 rows of n = 5)

           window 0   window 1
    row 0: a b c   |  d e          targets are the same rows shifted by one character:
    row 1: f g h   |  i j          row 0 predicts b c d | e f, and so on.
    row 2: k l m   |  n o
    row 3: p q r   |  s t

With torch.distributed the text is cut into B x world rows and rank r takes rows
r*B .. r*B+B-1, so every rank runs the same number of windows and carries its own state.
A text too short for B rows of T+1 characters shrinks B rather than failing (torch-rnn's
DataLoader does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charrnn.errors import CorpusError


@dataclass(frozen=True)
class StreamLayout:
    batch_size: int  # rows this rank trains on
    row_length: int  # characters per row (inputs; targets are shifted by one)
    seq_len: int

    @property
    def windows(self) -> int:
        """Full windows per epoch: the last partial window of each row is not trained on."""
        return self.row_length // self.seq_len

    def describe(self) -> str:
        return f"batch {self.batch_size}x{self.seq_len}"


def plan_layout(num_ids: int, batch_size: int, seq_len: int, world_size: int = 1) -> StreamLayout:
    """Rows and windows for ``num_ids`` characters, shrinking the batch for short texts."""
    usable = num_ids - 1  # the last character is only ever a target
    if usable < seq_len * world_size:
        raise CorpusError(
            f"the training text has {num_ids} characters, too few for one window of "
            f"--seq-len {seq_len}" + (f" on each of {world_size} ranks" if world_size > 1 else "")
            + "; use a longer text or a smaller --seq-len"
        )
    rows = min(batch_size, usable // (seq_len * world_size))
    return StreamLayout(rows, usable // (rows * world_size), seq_len)


class StreamBatches:
    """Windows of (inputs, targets) in contiguous-stream order, with a resumable cursor."""

    # Window k+1 of a row continues window k: the trainer carries the state across them
    # (a list's items, data/items.py, start each from the zero state instead).
    carries_state = True

    def __init__(
        self,
        ids: np.ndarray,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.layout = plan_layout(len(ids), batch_size, seq_len, world_size)
        rows, n = self.layout.batch_size, self.layout.row_length
        first = rank * rows
        total_rows = rows * world_size
        # Views, not copies: with a memory-mapped ``ids`` nothing is read until a window is used.
        self._inputs = ids[: total_rows * n].reshape(total_rows, n)[first : first + rows]
        self._targets = ids[1 : total_rows * n + 1].reshape(total_rows, n)[first : first + rows]
        self.window = 0  # next window to yield within the current epoch
        self.epoch = 0

    def __len__(self) -> int:
        return self.layout.windows

    def next_window(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The next window and whether it starts a new epoch (so the carried state must reset)."""
        starts_epoch = self.window == 0
        t = self.window * self.layout.seq_len
        span = slice(t, t + self.layout.seq_len)
        x, y = _ids_tensor(self._inputs[:, span]), _ids_tensor(self._targets[:, span])
        self.window += 1
        if self.window == self.layout.windows:
            self.window = 0
            self.epoch += 1
        return x, y, starts_epoch

    def state_dict(self) -> dict:
        return {"window": self.window, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.window = int(state["window"]) % self.layout.windows
        self.epoch = int(state["epoch"])


# Characters each evaluation row (but the first) reads before it is scored. A row that starts
# from a zero state scores its first characters badly: on tiny shakespeare's validation text a
# trained 2x256 model scored 1.4631 nats/char read as one stream, 1.4643 cut into 16 zero-state
# rows, 1.4745 into 128 and 1.5066 into 512. With 32 characters of burn-in 16 rows give 1.4632,
# and with 128 every split from 16 to 512 rows is within 1e-4 of the single stream.
EVAL_BURN_IN = 128


@dataclass(frozen=True)
class EvalStreams:
    """The evaluated text as ``rows`` parallel streams that together score every character once.

    Row r reads inputs ``r*n .. (r+1)*n - 1`` and scores the character after each. Row 0
    starts where the text starts, from a zero state, exactly as one stream would; every later
    row first reads the ``burn_in`` characters before its start (unscored), so that its state
    is what one stream would carry there. The inputs left over (fewer than ``rows``) are the
    ``tail``, which continues the last row. The inputs of a 14-character text (13 targets)::

        text:    a b c d e f g h i j k l m n        rows = 3, n = 4, burn_in = 2
        row 0:  |a b c d                            zero state; predicts b c d e
        row 1:       c d|e f g h                    reads c d first; predicts f g h i
        row 2:               g h|i j k l            predicts j k l m
        tail:                            m          continues row 2; predicts n
    """

    primer_inputs: np.ndarray | None  # (rows - 1, burn_in): what rows 1.. read before they are scored
    inputs: np.ndarray  # (rows, n)
    targets: np.ndarray  # (rows, n)
    tail_inputs: np.ndarray  # (k,), k < rows
    tail_targets: np.ndarray

    def primer(self) -> torch.Tensor | None:
        """What rows 1.. read before they are scored, or None for a single row."""
        return None if self.primer_inputs is None else _ids_tensor(self.primer_inputs)

    def tail(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(inputs, targets) of the leftover characters as a one-row batch, or None."""
        if not len(self.tail_targets):
            return None
        return _ids_tensor(self.tail_inputs[None]), _ids_tensor(self.tail_targets[None])

    def windows(self, seq_len: int):
        """(inputs, targets, where the targets stand) windows of the rows, ``seq_len`` columns at
        a time (the last shorter); see ``positions``."""
        n = self.inputs.shape[1]
        for t in range(0, n, seq_len):
            span = slice(t, min(t + seq_len, n))
            yield _ids_tensor(self.inputs[:, span]), _ids_tensor(self.targets[:, span]), self.positions(span)

    def positions(self, columns: slice) -> np.ndarray:
        """Where the targets of ``columns`` of every row stand among the text's targets
        (``ids[1:]``), shaped as the targets are: row r's column t is target r * n + t."""
        rows, n = self.targets.shape
        return np.arange(rows)[:, None] * n + np.arange(n)[columns]

    def tail_positions(self, columns: slice) -> np.ndarray:
        """``positions`` of the tail's targets (1, k)."""
        rows, n = self.targets.shape
        return rows * n + np.arange(len(self.tail_targets))[columns][None]


def eval_streams(ids: np.ndarray, rows: int, min_row: int = 1, burn_in: int = EVAL_BURN_IN) -> EvalStreams:
    """Cut ``ids`` into at most ``rows`` rows of at least ``min_row`` characters for evaluation."""
    usable = len(ids) - 1
    rows = max(1, min(rows, usable // max(min_row, 1)))
    n = usable // rows
    burn = min(burn_in, n)
    starts = np.arange(1, rows) * n
    primer = None
    if rows > 1 and burn > 0:
        primer = ids[starts[:, None] - burn + np.arange(burn)]
    return EvalStreams(
        primer_inputs=primer,
        inputs=ids[: rows * n].reshape(rows, n),
        targets=ids[1 : rows * n + 1].reshape(rows, n),
        tail_inputs=ids[rows * n : usable],
        tail_targets=ids[rows * n + 1 : usable + 1],
    )


def _ids_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
