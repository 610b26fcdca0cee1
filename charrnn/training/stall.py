"""One warning for a run that learns nothing beyond the characters' frequencies: its
validation still sits near the unigram baseline (``charrnn.data.unigram``) after enough
steps that any working setting is well below it. The warning goes to a function the caller
gives (the command line writes it to stderr); the library prints nothing."""

from __future__ import annotations

from typing import Callable

from charrnn.training.trainer import Callback, EvalStats, Trainer

# Enough steps for a working run to leave the baseline far behind: at 300 steps of the small
# preset tiny shakespeare is at 2.8 bpc against a baseline of 4.8, Django's catalogues at
# 3 against 5.5; a run that cannot learn stays within a few hundredths of it.
STALL_AFTER_STEPS = 300
# Within this fraction of the baseline counts as near it.
STALL_MARGIN = 0.1


class StallWatch(Callback):
    def __init__(
        self,
        unigram_bpc: float | None,
        warn: Callable[[str], None],
        after_steps: int = STALL_AFTER_STEPS,
        margin: float = STALL_MARGIN,
    ) -> None:
        self.unigram_bpc = unigram_bpc
        self.warn = warn
        self.after_steps = after_steps
        self.margin = margin
        self.warned = False

    def on_eval(self, trainer: Trainer, stats: EvalStats) -> None:
        if self.warned or self.unigram_bpc is None or stats.step < self.after_steps:
            return
        if stats.val_bpc < (1 - self.margin) * self.unigram_bpc:
            return
        self.warned = True
        self.warn(stall_message(stats.val_bpc, stats.step, self.unigram_bpc, trainer.config.lr))


def stall_message(val_bpc: float, step: int, unigram_bpc: float, lr: float) -> str:
    where = "no better than" if val_bpc >= unigram_bpc else "close to"
    return (
        f"validation is {val_bpc:.3f} bpc at step {step}, {where} the unigram baseline of "
        f"{unigram_bpc:.3f} bpc: the model has learned at most how often each character occurs. Try a lower learning rate (--lr {lr / 4:.2g}), more --warmup-steps, "
        "or --schedule constant; on a text of a few KB, a smaller --preset"
    )
