"""What a run writes beside its checkpoints, as trainer callbacks: ``metrics.jsonl`` (one
JSON object per step, per evaluation and per gradient warning, cut back to the checkpoint's
step on resume so it reads as one run) and ``samples.txt`` (a short sample at every
evaluation, to watch the text improve)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from charrnn import checkpoint
from charrnn.errors import CheckpointError
from charrnn.data.vocab import Vocab
from charrnn.training.gradient_stats import GradientWarning
from charrnn.training.trainer import Callback, EvalStats, StepStats, Trainer
from charrnn.ranges import MAX_SEED


class MetricsLog(Callback):
    """Appends one JSON line per step and per evaluation, flushed so a crash loses nothing."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            # Steps after the checkpoint will be trained again: drop their old lines, and the
            # torn last line a kill -9 may have left. Rewritten atomically: a crash now must
            # not lose the history either.
            kept = []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                step = _line_step(line)
                if step is not None and step <= resume_step:
                    kept.append(line)
            checkpoint.atomic_write(path, "".join(line + "\n" for line in kept).encode("utf-8"), "metrics log")
        try:
            self.handle = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise CheckpointError(f"cannot write the metrics log {path}: {exc.strerror}") from None

    def _write(self, record: dict) -> None:
        try:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
        except OSError as exc:
            raise CheckpointError(
                f"cannot append to the metrics log {self.path}: {exc.strerror}; "
                "the checkpoints written so far are intact"
            ) from None

    def on_step(self, trainer: Trainer, stats: StepStats) -> None:
        self._write(
            {
                "event": "step",
                "step": stats.step,
                "epoch": stats.epoch,
                "loss": stats.loss,
                "lr": stats.lr,
                "grad_norm": stats.grad_norm,
                **(
                    {"grad_norms": stats.grad_norms, "clipped": stats.clipped, "clip_share": stats.clip_share}
                    if stats.grad_norms
                    else {}
                ),
                "chars_per_s": stats.chars / stats.seconds if stats.seconds else None,
                "threads": stats.threads,
                "elapsed": stats.elapsed,
                "time": time.time(),
            }
        )

    def on_eval(self, trainer: Trainer, stats: EvalStats) -> None:
        self._write(
            {
                "event": "eval",
                "step": stats.step,
                "val_loss": stats.val_loss,
                "val_bpc": stats.val_bpc,
                "improved": stats.improved,
                "elapsed": trainer.progress.elapsed,
                "time": time.time(),
            }
        )

    def on_warning(self, trainer: Trainer, warning: GradientWarning) -> None:
        self._write(
            {"event": "warning", "step": warning.step, "kind": warning.kind, "message": warning.message, "time": time.time()}
        )

    def close(self) -> None:
        self.handle.close()


def _line_step(line: str) -> int | None:
    """The step a metrics line belongs to, or None for a line that is not a whole record."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class EvalSamples(Callback):
    """Appends a short sample to ``samples.txt`` after every evaluation. The seed is the same
    each time, so successive samples differ only by what the model has learnt; sampling has
    its own generator, so training's random streams (and exact resume) are untouched."""

    def __init__(self, path: Path, vocab: Vocab, chars: int, seed: int, resume_step: int | None = None) -> None:
        self.path = path
        self.vocab = vocab
        self.chars = chars
        self.seed = seed
        if resume_step is not None and path.exists():
            self._append(f"=== resumed at step {resume_step} ===\n\n")

    def _append(self, text: str) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise CheckpointError(f"cannot append to {self.path}: {exc.strerror}") from None

    def on_eval(self, trainer: Trainer, stats: EvalStats) -> None:
        from charrnn.generation.sample import SampleConfig, generate_batch

        if self.chars <= 0:
            return
        # A run from before seeds were range-checked may hold a negative one: fold it in.
        config = SampleConfig(length=self.chars, seed=self.seed % (MAX_SEED + 1))  # otherwise `charrnn sample`'s defaults
        (text,) = generate_batch(trainer.model, self.vocab, config, trainer.device)
        self._append(f"=== step {stats.step}, val {stats.val_bpc:.4f} bpc ===\n{text}\n\n")
