"""Training progress on stderr: a live rich display on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from charrnn.training.gradient_stats import GradientWarning
from charrnn.training.trainer import Callback, EvalStats, StepStats, Trainer
from charrnn.units import bpc_to_nats


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= timedelta.max.total_seconds():  # a step budget no machine will finish
        return f"{seconds / (365.25 * 86400):.3g} years"
    return str(timedelta(seconds=int(max(0, seconds))))


def _rate(chars_per_s: float) -> str:
    return f"{chars_per_s / 1000:.1f}k" if chars_per_s >= 1000 else f"{chars_per_s:.0f}"


class TrainingDisplay(Callback):
    """Shows step, train loss, val bpc, chars/s, elapsed and remaining time.

    "val" is the latest validation figure, the one metrics.jsonl logged last. The last step's
    evaluation comes after its step, so the closing line is written when training ends, not
    at the last step, where it would still show the evaluation before.
    """

    def __init__(self, console: Console, plain_every_s: float = 10.0) -> None:
        self.console = console
        self.live = console.is_terminal
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0
        self._loss_ema: float | None = None
        self._rate_ema: float | None = None
        self.val_bpc: float | None = None
        self.best_bpc: float | None = None
        self._progress: Progress | None = None
        self._task = None
        self._fields: dict | None = None  # of the latest step
        self._printed: dict | None = None  # the latest plain line
        # (elapsed, progress) at the first step shown: the time left is extrapolated from the
        # pace since then, not from time spent before this display (an earlier session of a
        # resumed run, or the range test of --lr auto), which may have gone at another pace.
        self._origin: tuple[float, float] | None = None

    def __enter__(self) -> "TrainingDisplay":
        if self.live:
            self._progress = Progress(
                TextColumn("step {task.fields[step]}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("val {task.fields[val]} bpc"),
                TextColumn("{task.fields[rate]} chars/s"),
                TextColumn("{task.fields[elapsed]} elapsed"),
                TextColumn("{task.fields[left]} left"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=1000, step=0, loss="-", val="-", rate="-", elapsed="0:00:00", left="?"
            )
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif exc_type is None and self._fields is not None and self._fields != self._printed:
            self._print_plain()

    def on_step(self, trainer: Trainer, stats: StepStats) -> None:
        alpha = 0.1
        rate = stats.chars / stats.seconds if stats.seconds > 0 else 0.0
        self._loss_ema = stats.loss if self._loss_ema is None else (1 - alpha) * self._loss_ema + alpha * stats.loss
        self._rate_ema = rate if self._rate_ema is None else (1 - alpha) * self._rate_ema + alpha * rate
        left = self._time_left(trainer, stats)
        fields = {
            "step": stats.step,
            "loss": f"{self._loss_ema:.3f}",
            "val": "-" if self.val_bpc is None else f"{self.val_bpc:.3f}",
            "rate": _rate(self._rate_ema),
            "elapsed": _clock(stats.elapsed),
            "left": _clock(left),
        }
        self._fields = fields
        if self._progress is not None:
            self._progress.update(self._task, completed=int(stats.progress * 1000), **fields)
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self._print_plain()

    def _time_left(self, trainer: Trainer, stats: StepStats) -> float | None:
        if self._origin is None:  # where the budget stood before this display's first step
            before = stats.elapsed - stats.seconds
            self._origin = (before, trainer.budget_fraction(stats.step - 1, before))
        elapsed0, progress0 = self._origin
        if stats.progress <= progress0:
            return None
        return (stats.elapsed - elapsed0) * (1 - stats.progress) / (stats.progress - progress0)

    def _print_plain(self) -> None:
        fields = self._printed = dict(self._fields)
        self.console.print(
            f"step {fields['step']} | loss {fields['loss']} nats | val {fields['val']} bpc | "
            f"{fields['rate']} chars/s | {fields['elapsed']} elapsed | {fields['left']} left",
            markup=False,
            highlight=False,
        )

    def on_warning(self, trainer: Trainer, warning: GradientWarning) -> None:
        self.console.print(f"charrnn: warning: step {warning.step}: {warning.message}", markup=False, highlight=False)

    def on_eval(self, trainer: Trainer, stats: EvalStats) -> None:
        self.val_bpc = stats.val_bpc
        if self._fields is not None:
            self._fields = {**self._fields, "val": f"{stats.val_bpc:.3f}"}
            if self._progress is not None:
                self._progress.update(self._task, val=self._fields["val"])
        if stats.improved:
            self.best_bpc = stats.val_bpc
        mark = " (best)" if stats.improved else ""
        self.console.print(
            f"step {stats.step}: val {stats.val_bpc:.4f} bpc ({bpc_to_nats(stats.val_bpc):.4f} nats/char){mark}",
            markup=False,
            highlight=False,
        )
