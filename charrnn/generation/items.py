"""Whole items of a list from a run trained with `--items` (`sample --items N`).

Every item starts as the training started every item: from the zero state, after the
delimiter, then the prime; it ends at the next delimiter. Items drawn in one batch; those
found verbatim in the run's list (with ``novel``), those drawn before, and those that did not
end within ``--length`` are dropped and more are drawn, at most ``MAX_DRAWS_PER_ITEM`` per item
asked for, so a model that only copies its list cannot loop for ever."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from charrnn.data.items import split_items
from charrnn.generation.sample import SampleConfig, generate_batch
from charrnn.ranges import MAX_SEED

# Draws allowed per item asked for: a model whose items are new one time in ten still gives
# its items, one that copies its list 19 times in 20 is stopped with what it made.
MAX_DRAWS_PER_ITEM = 20
# The share of draws assumed kept before any is drawn: the first batch asks for twice the items.
FIRST_ACCEPTANCE = 0.5


@dataclass
class ItemsReport:
    items: list[str] = field(default_factory=list)
    drawn: int = 0
    copied: int = 0  # found verbatim in the list
    repeated: int = 0  # drawn before in this command
    unfinished: int = 0  # no delimiter within --length
    empty: int = 0  # the delimiter at once

    def describe(self, asked: int) -> str:
        said = (
            f"{len(self.items)} of {asked} items: {self.drawn} drawn, {self.copied} copied from the list, "
            f"{self.repeated} repeated, {self.empty} empty, {self.unfinished} unfinished within --length"
        )
        if len(self.items) < asked:
            said += f"; stopped after {self.drawn} draws ({MAX_DRAWS_PER_ITEM} per item asked for)"
        return said


def list_items(text: str, delimiter: str) -> set[str]:
    return set(split_items(text, delimiter))


def sample_items(model, vocab, config: SampleConfig, count: int, delimiter: str, known: set[str] | None, device="cpu") -> ItemsReport:
    """``count`` items (fewer if the draws run out), none in ``known`` (None: no check) and
    none twice. Round r draws from seed + r, so a seed gives the same items."""
    report = ItemsReport()
    seen: set[str] = set()
    limit = count * MAX_DRAWS_PER_ITEM
    round_ = 0
    while len(report.items) < count and report.drawn < limit:
        needed = count - len(report.items)
        acceptance = len(report.items) / report.drawn if report.drawn else FIRST_ACCEPTANCE
        batch = min(limit - report.drawn, math.ceil(needed / max(acceptance, 1 / MAX_DRAWS_PER_ITEM)))
        wanted = replace(
            config,
            prime=delimiter + config.prime,
            num_samples=batch,
            seed=(config.seed + round_) % (MAX_SEED + 1),
            stop=(delimiter,) + tuple(config.stop),
        )
        for text in generate_batch(model, vocab, wanted, device):
            if len(report.items) == count:
                break  # the rest of the batch is not looked at, nor counted
            report.drawn += 1
            item = config.prime + text
            if len(text) >= config.length:
                report.unfinished += 1
            elif not item:
                report.empty += 1
            elif known is not None and item in known:
                report.copied += 1
            elif item in seen:
                report.repeated += 1
            else:
                report.items.append(item)
            seen.add(item)
        round_ += 1
    return report
