"""Optional TensorBoard event files beside the metrics log (``train --tensorboard``).

The JSON-lines metrics log stays the record; this only mirrors it for people who already
live in TensorBoard. The package is an optional extra: ``pip install 'charrnn[tensorboard]'``.
"""

from __future__ import annotations

from pathlib import Path

from charrnn.errors import ConfigError
from charrnn.training.gradient_stats import GradientWarning
from charrnn.training.trainer import Callback, EvalStats, StepStats, Trainer
from charrnn.units import nats_to_bpc


class TensorBoardLog(Callback):
    def __init__(self, directory: Path, resume_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'charrnn[tensorboard]'"
            ) from None
        # purge_step drops events after the resumed checkpoint, as MetricsLog drops their lines.
        self.writer = SummaryWriter(
            log_dir=str(directory),
            purge_step=None if resume_step is None else resume_step + 1,
        )

    def on_step(self, trainer: Trainer, stats: StepStats) -> None:
        self.writer.add_scalar("train/loss_bits", nats_to_bpc(stats.loss), stats.step)
        self.writer.add_scalar("train/lr", stats.lr, stats.step)
        self.writer.add_scalar("train/grad_norm", stats.grad_norm, stats.step)
        if stats.seconds > 0:
            self.writer.add_scalar("train/chars_per_s", stats.chars / stats.seconds, stats.step)
        for group, norm in stats.grad_norms.items():
            self.writer.add_scalar(f"grad_norm/{group}", norm, stats.step)
        if stats.grad_norms:
            self.writer.add_scalar("grad_norm/clip_share", stats.clip_share, stats.step)

    def on_warning(self, trainer: Trainer, warning: GradientWarning) -> None:
        self.writer.add_text("warnings", warning.message, warning.step)

    def on_eval(self, trainer: Trainer, stats: EvalStats) -> None:
        self.writer.add_scalar("val/bpc", stats.val_bpc, stats.step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
