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
        x = torch.from_numpy(np.ascontiguousarray(self._inputs[:, span], dtype=np.int64))
        y = torch.from_numpy(np.ascontiguousarray(self._targets[:, span], dtype=np.int64))
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


def eval_windows(ids: np.ndarray, batch_size: int, seq_len: int):
    """Every character of ``ids`` (but at most B-1 at the end) as contiguous windows, the last
    one possibly shorter, for exact evaluation with carried state."""
    usable = len(ids) - 1
    rows = max(1, min(batch_size, usable // max(seq_len, 1)))
    n = usable // rows
    inputs = ids[: rows * n].reshape(rows, n)
    targets = ids[1 : rows * n + 1].reshape(rows, n)
    for t in range(0, n, seq_len):
        span = slice(t, min(t + seq_len, n))
        yield (
            torch.from_numpy(np.ascontiguousarray(inputs[:, span], dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(targets[:, span], dtype=np.int64)),
        )
