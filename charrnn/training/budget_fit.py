"""What a new run's budget will hold, decided before its first step.

A budget in steps (or passes) says at once how many passes over the training text the run
makes; a budget in minutes says it only once the speed of a step is known, so a probe first
times a few steps of this model, on a copy (the run's weights, windows and random state are not
touched). Two choices follow:

- the dropout of a preset that takes it from the budget (``DEFAULTS["budget_fit"]``): a run
  that sees its text many times needs more of it than one that sees it a few times;
- on a CPU with native bf16, whether ``--precision auto`` trains in bf16. In a budget of
  minutes the faster step makes more passes and, with the dropout they call for, learns more;
  in a budget of steps bf16 learns no more per step, so the run stays in fp32 and gives the
  same figures on every CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from charrnn import device as devices
from charrnn.data.batches import StreamLayout
from charrnn.model.network import CharRNN
from charrnn.options import DEFAULTS, ModelConfig, TrainConfig
from charrnn.precision import DTYPE_NAMES, PROBE_MARGIN, resolve_precision
from charrnn.training import distributed
from charrnn.training.trainer import Trainer

FIT = DEFAULTS["budget_fit"]


def dropout_for_passes(passes: float) -> float:
    """The dropout for a run that makes ``passes`` passes over its training text."""
    extra = max(0.0, passes - FIT["free_passes"]) * FIT["per_pass"]
    return round(min(FIT["most"], extra), 3)


@dataclass
class BudgetFit:
    """What a new run's budget holds and what was chosen by it."""

    passes: float  # over the training text, all processes together
    chars_per_step: int  # all processes together
    dropout: float | None = None  # chosen by the passes; None: the run's own stands
    precision: torch.dtype | None = None  # chosen by the probe; None: --precision decides
    # The probe's seconds per step in each precision it timed; empty where none ran.
    step_seconds: dict[torch.dtype, float] = field(default_factory=dict)

    @property
    def seconds_per_step(self) -> float:
        """The probe's time of a step in the precision the run trains in: the one chosen, or
        the only one timed."""
        return self.step_seconds[self.precision or next(iter(self.step_seconds))]

    def describe_passes(self, config: TrainConfig) -> str:
        """How many passes the budget holds, and from what."""
        passes = f"{self.passes:,.1f}" if self.passes >= 1 else f"{self.passes:.2g}"
        if not self.step_seconds:
            return f"{config.max_steps:,} steps are about {passes} passes over the training text"
        return (
            f"about {passes} passes over the training text in {config.minutes:g} min "
            f"at about {self.chars_per_step / self.seconds_per_step:,.0f} chars/s"
        )

    def describe_probe(self) -> str:
        """The probe's timings, as the header's precision line gives its reason."""
        return ", ".join(f"{DTYPE_NAMES[d]} {1e3 * s:.1f} ms" for d, s in self.step_seconds.items())


def fit_budget(
    config: TrainConfig,
    model_config: ModelConfig,
    train_ids: np.ndarray,
    layout: StreamLayout,
    device: torch.device,
    dropout_by_budget: bool,
) -> BudgetFit | None:
    """The passes a new run's budget holds and what they choose: ``dropout_by_budget`` (the
    preset takes its dropout from the budget and none was given) and, in a budget of minutes
    on a CPU with native bf16, ``--precision auto``. ``layout``: the windows of this process.
    None where nothing is to be chosen."""
    choose_precision = (
        config.precision == "auto"
        and device.type == "cpu"
        and config.minutes is not None
        and bool(devices.cpu_bf16_flags())
    )
    if not dropout_by_budget and not choose_precision:
        return None
    chars_per_step = layout.batch_size * layout.seq_len * distributed.world_size()
    steps = [float(config.max_steps)] if config.max_steps is not None else []
    fit = BudgetFit(passes=0.0, chars_per_step=chars_per_step)
    if config.minutes is not None:
        dtypes = [torch.float32, torch.bfloat16] if choose_precision else [resolve_precision(config.precision, device)]
        # A step with dropout costs more than one without (its masks), whatever the rate.
        probed = replace(model_config, dropout=FIT["most"]) if dropout_by_budget else model_config
        fit.step_seconds = _time_steps(probed, config, train_ids, device, dtypes)
        if choose_precision:
            fp32, bf16 = fit.step_seconds[torch.float32], fit.step_seconds[torch.bfloat16]
            fit.precision = torch.bfloat16 if bf16 * PROBE_MARGIN <= fp32 else torch.float32
        steps.append(config.minutes * 60 / fit.seconds_per_step)
    fit.passes = min(steps) / max(1, layout.windows)
    if dropout_by_budget:
        fit.dropout = dropout_for_passes(fit.passes)
    return fit


def _time_steps(
    model_config: ModelConfig, config: TrainConfig, train_ids: np.ndarray, device: torch.device, dtypes: list[torch.dtype]
) -> dict[torch.dtype, float]:
    """Seconds per training step of a fresh copy of the model in each of ``dtypes``: the
    fastest of a few rounds (a busy machine disturbs the fastest least), the precisions taking
    turns on the one copy (no more memory than the run's own model) so that a spell of load
    falls on both. Every process of a torchrun run takes the first's figures (the steps
    average their losses across processes, so all take part in the same number of them)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = CharRNN(model_config).to(device)
        trainer = Trainer(model, config, train_ids, None, device, dtypes[0], rank=distributed.rank(), world_size=distributed.world_size())
        seconds = {dtype: float("inf") for dtype in dtypes}
        for repeat in range(1 + FIT["probe_repeats"]):
            for dtype in dtypes:
                trainer.amp_dtype = dtype
                if repeat == 0:
                    _timed(trainer, 1)  # lays out weights and warms caches
                else:
                    seconds[dtype] = min(seconds[dtype], _timed(trainer, FIT["probe_steps"]) / FIT["probe_steps"])
    return {dtype: distributed.rank0_value(value) for dtype, value in seconds.items()}


def _timed(trainer: Trainer, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return time.perf_counter() - started
