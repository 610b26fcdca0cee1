"""``--lr auto``: a learning-rate range test at the start of a new run.

A copy of the new model trains on the run's first windows while the rate rises geometrically,
one step at each rate, from ``low`` to ``high`` (Smith, "Cyclical Learning Rates for Training
Neural Networks", 2017, section 3.3; fastai's ``lr_find``). The loss, smoothed, first falls
faster as the rate grows, then stops falling, then climbs or diverges. The rate chosen is
``1/fraction`` of the rate at which the smoothed loss was lowest: the highest rates that still
lower the loss within a few steps are too high to train on for thousands.

The test is deterministic: the copy starts from the run's own initial weights, reads the
windows the run will read first, and draws from forked random generators, so the run that
follows is exactly the run ``--lr CHOSEN`` would make. The chosen rate and the curve are
recorded in the checkpoint; a resumed run keeps the rate and does not test again.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from charrnn.errors import TrainingDiverged
from charrnn.model.network import CharRNN
from charrnn.options import DEFAULTS, TrainConfig
from charrnn.ranges import MAX_LR
from charrnn.training.trainer import Trainer

_RANGE = DEFAULTS["lr_auto"]


@dataclass
class RangeTest:
    """What the range test saw and chose."""

    lr: float  # the chosen peak rate
    lowest_at: float  # the rate at which the smoothed loss was lowest
    rates: list[float]  # the rate of each step taken
    losses: list[float]  # the smoothed training loss after each step (nats per token)
    seconds: float  # wall time of the test, counted in a time budget
    steps: int = _RANGE["steps"]
    low: float = _RANGE["low"]
    high: float = _RANGE["high"]
    fraction: float = _RANGE["fraction"]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RangeTest":
        return cls(**data)


def geometric_rates(low: float, high: float, steps: int) -> list[float]:
    """``steps`` rates from ``low`` to ``high``, each the same factor above the last."""
    if steps == 1:
        return [low]
    return [low * (high / low) ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float) -> list[float]:
    """Exponential moving average with bias correction (the first values are not pulled
    toward zero)."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def choose_rate(rates: list[float], smoothed: list[float], fraction: float) -> tuple[float, float]:
    """(the chosen rate, the rate at the lowest smoothed loss)."""
    best = int(np.argmin(smoothed))
    lowest_at = rates[best]
    return min(MAX_LR, lowest_at / fraction), lowest_at


def range_test(
    model: CharRNN,
    train_ids: np.ndarray,
    config: TrainConfig,
    device: torch.device,
    amp_dtype: torch.dtype = torch.float32,
    steps: int = _RANGE["steps"],
    low: float = _RANGE["low"],
    high: float = _RANGE["high"],
    fraction: float = _RANGE["fraction"],
) -> RangeTest:
    """Run the range test for a new run of ``model`` (left untouched) under ``config``."""
    started = time.perf_counter()
    rates = geometric_rates(low, min(high, MAX_LR), steps)
    probe = copy.deepcopy(model)
    # One step at each rate: no warmup, no decay, no evaluation. The batches and the optimizer
    # are the run's own, so the test sees what the run's first steps will see.
    trial = replace(config, schedule="constant", warmup_steps=0, max_steps=steps, minutes=None)
    trainer = Trainer(probe, trial, train_ids, None, device, amp_dtype, grad_stats=False)
    raw: list[float] = []
    devices = [] if device.type != "cuda" else [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices), _flushed_denormals():
        for rate in rates:
            trainer.config.lr = rate
            try:
                stats = trainer.train_step()
            except TrainingDiverged:
                break
            raw.append(stats.loss)
            smoothed = smooth(raw, _RANGE["beta"])
            # Well above its best, the loss will not come back at still higher rates.
            if len(raw) > 10 and smoothed[-1] > _RANGE["stop_above"] * min(smoothed):
                break
    if not raw:
        # Diverged at the lowest rate: no rate of the range trains this model.
        raise TrainingDiverged(f"--lr auto: the loss diverged at the lowest rate tried ({low:g}); give --lr explicitly")
    smoothed = smooth(raw, _RANGE["beta"])
    chosen, lowest_at = choose_rate(rates[: len(raw)], smoothed, fraction)
    return RangeTest(
        lr=_round_rate(chosen),
        lowest_at=lowest_at,
        rates=rates[: len(raw)],
        losses=smoothed,
        seconds=time.perf_counter() - started,
        steps=steps,
        low=low,
        high=high,
        fraction=fraction,
    )


@contextmanager
def _flushed_denormals():
    """Subnormal floats as zero, for the test only: at the highest rates the gates saturate
    and the backward pass fills with subnormals, which the CPU handles 10-25x slower (a 2x256
    LSTM's steps went from 0.05 s to 1.2 s); flushed, the losses agree to the third decimal.
    charrnn leaves the setting off everywhere else, so the test puts it back off."""
    flushes = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushes:
            torch.set_flush_denormal(False)


def _round_rate(rate: float) -> float:
    """Three significant figures: the rate is written to config.toml and read back as given."""
    return float(f"{rate:.3g}") if math.isfinite(rate) else rate
