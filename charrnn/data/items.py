"""A text that is a list of short items (`train --items`): names, titles, words, one a line or
between a delimiter character.

Training reads the items, not a stream: every row of a batch is one item, run from the zero
state after the delimiter (so the model learns what a beginning looks like from the same
state each time) and trained to end with the delimiter (so a sample knows where an item
ends). Rows are padded to the batch's longest item, the padding's targets ignored by the loss.
The items are shuffled each epoch, in an order drawn from the run's seed and the epoch's
number alone, so that a resumed run reads them in the order it would have, and the model
does not learn the list's order. Sampling starts each item the same way (the zero state, the
delimiter, then ``--prime``), see ``charrnn.generation.items``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charrnn.errors import CorpusError

# The longest item trained on, in characters: a list's items are short; a longer one is most
# likely a file that is not a list (or the wrong delimiter), and one row of it would size the
# whole batch's padded window.
MAX_ITEM = 2000
IGNORED = -100  # a padding target: torch's cross_entropy skips it


def item_bounds(ids: np.ndarray, delimiter: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the non-empty items of ``ids`` between ``delimiter`` ids."""
    cuts = np.flatnonzero(ids == delimiter)
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(ids)]])
    keep = ends > starts
    return starts[keep], ends[keep]


def split_items(text: str, delimiter: str) -> list[str]:
    """The non-empty items of a text (what sampling compares its items with)."""
    return [item for item in text.split(delimiter) if item]


def padded_items(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, delimiter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per item: inputs the delimiter then the item, targets the item then the
    delimiter; padded to the longest, the padding's targets IGNORED."""
    lengths = ends - starts
    width = int(lengths.max()) + 1
    inputs = np.full((len(starts), width), delimiter, dtype=np.int64)
    targets = np.full((len(starts), width), IGNORED, dtype=np.int64)
    for row, (start, length) in enumerate(zip(starts, lengths)):
        item = ids[start : start + length]
        inputs[row, 1 : length + 1] = item
        targets[row, :length] = item
        targets[row, length] = delimiter
    return torch.from_numpy(inputs), torch.from_numpy(targets)


@dataclass(frozen=True)
class ItemLayout:
    batch_size: int  # items per step on this rank
    windows: int  # steps per epoch
    items: int  # in the training text

    def describe(self) -> str:
        return f"batch {self.batch_size} of {self.items:,} items"


class ItemBatches:
    """Batches of whole items, (inputs, targets) per step, with the resumable cursor of
    ``StreamBatches`` (``window``, ``epoch``). No state is carried from one step to the next."""

    carries_state = False

    def __init__(self, ids: np.ndarray, delimiter: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.ids, self.delimiter, self.seed = ids, delimiter, seed
        self.starts, self.ends = item_bounds(np.asarray(ids), delimiter)
        count = len(self.starts)
        if count < world_size:
            raise CorpusError(f"the training text holds {count} item(s), too few to train on; is it a list, one item a line?")
        longest = int((self.ends - self.starts).max())
        if longest > MAX_ITEM:
            at = int(np.argmax(self.ends - self.starts))
            raise CorpusError(
                f"item {at + 1} of the list is {longest:,} characters long (at most {MAX_ITEM:,}): "
                "--items is for lists of short items; check --items-delimiter"
            )
        rows = min(batch_size, count // world_size)
        self.layout = ItemLayout(rows, count // (rows * world_size), count)
        self.rank, self.world_size = rank, world_size
        self.window = 0
        self.epoch = 0
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.layout.windows

    def order(self, epoch: int) -> np.ndarray:
        """The items' order in ``epoch``: from the run's seed and the epoch alone."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.starts)))
        return self._order[1]

    def next_window(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The next batch of items and whether it starts an epoch."""
        starts_epoch = self.window == 0
        rows = self.layout.batch_size
        first = (self.window * self.world_size + self.rank) * rows
        chosen = self.order(self.epoch)[first : first + rows]
        inputs, targets = padded_items(self.ids, self.starts[chosen], self.ends[chosen], self.delimiter)
        self.window += 1
        if self.window == self.layout.windows:
            self.window = 0
            self.epoch += 1
        return inputs, targets, starts_epoch

    def state_dict(self) -> dict:
        return {"window": self.window, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.window = int(state["window"]) % self.layout.windows
        self.epoch = int(state["epoch"])
