"""The truncated-BPTT trainer. It knows nothing of files or terminals: callbacks hear about
steps, evaluations and the moments a checkpoint is due, and ``state_dict`` hands them every
piece of state needed to continue bit-for-bit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from charrnn.training import distributed
from charrnn.training.gradient_stats import GradientGroups, GradientWarning, GradientWatch, tensor_norms
from charrnn.data.batches import StreamBatches
from charrnn.device import capture_rng_state, restore_rng_state
from charrnn.errors import ConfigError, TrainingDiverged
from charrnn.precision import DTYPE_NAMES, autocast
from charrnn.options import CPU_BATCH_SIZE, GPU_BATCH_SIZE, TrainConfig
from charrnn.units import nats_to_bpc
from charrnn.model.evaluation import EVAL_WINDOW, evaluate, evaluate_items
from charrnn.model.network import CharRNN, State, detach_state, state_as_list, state_batch_size, state_from_list, state_to


def default_batch_size(device: torch.device) -> int:
    """The batch used when none is given: the GPU's is large, the CPU's keeps steps frequent."""
    return GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


@dataclass
class StepStats:
    step: int
    epoch: int
    loss: float  # nats per character, this window
    lr: float
    grad_norm: float
    chars: int  # characters trained on in this step (all ranks)
    seconds: float  # wall time of this step
    elapsed: float  # training time so far, across resumes
    progress: float  # fraction of the step or time budget used, 0..1
    threads: int = 1  # CPU threads the step ran on
    # Gradient norm per group of weights (embedding, weight_ih_l*, weight_hh_l*, decoder),
    # before clipping; empty when the trainer's grad_stats is off.
    grad_norms: dict[str, float] = field(default_factory=dict)
    clipped: bool = False  # the clip scaled this step's gradients down
    clip_share: float = 0.0  # of the last CLIP_WINDOW steps (this one included), clipped
    warnings: list[GradientWarning] = field(default_factory=list)  # raised at this step


@dataclass
class EvalStats:
    step: int
    val_loss: float  # nats per token (a character, unless --tokenizer bytes or bpe)
    improved: bool
    seconds: float
    tokens_per_char: float = 1.0  # of the validation text: turns nats per token into bpc

    @property
    def val_bpc(self) -> float:
        return nats_to_bpc(self.val_loss, self.tokens_per_char)


@dataclass
class FitResult:
    status: str  # "finished", "time", "early_stop", "interrupted"
    step: int
    best_val_loss: float | None


class Callback:
    """Hooks the trainer calls; override what you need."""

    def on_step(self, trainer: "Trainer", stats: StepStats) -> None: ...

    def on_eval(self, trainer: "Trainer", stats: EvalStats) -> None: ...

    def on_checkpoint(self, trainer: "Trainer", best: bool) -> None:
        """A checkpoint is due: ``best`` after a new best validation loss, else periodic/final."""

    def on_warning(self, trainer: "Trainer", warning: GradientWarning) -> None:
        """Gradients explode or vanish: each kind is told once per run, after its step."""


@dataclass
class _Progress:
    step: int = 0
    elapsed: float = 0.0
    best_val_loss: float | None = None
    evals_without_improvement: int = 0
    lr_scale: float = 1.0  # the plateau schedule's decay so far
    # Where the cosine decay currently runs from: the start, or the point at which the budget
    # was last extended, with the scale the rate had reached there (see ``extend_budget``).
    cosine_step: int = 0
    cosine_elapsed: float = 0.0
    cosine_scale: float = 1.0


class Trainer:
    def __init__(
        self,
        model: CharRNN,
        config: TrainConfig,
        train_ids: np.ndarray,
        val_ids: np.ndarray | None,
        device: torch.device,
        amp_dtype: torch.dtype = torch.float32,
        callbacks: list[Callback] | None = None,
        rank: int = 0,
        world_size: int = 1,
        ddp_model: torch.nn.Module | None = None,
        grad_stats: bool = True,
        batches=None,  # what reads the training text: a stream's windows (None) or ItemBatches
    ) -> None:
        self.model = model
        self.forward_model = ddp_model or model  # a DDP wrapper syncs gradients in backward
        self.config = config
        self.device = device
        self.amp_dtype = amp_dtype
        self.callbacks = list(callbacks or [])
        self.rank = rank
        self.world_size = world_size
        self.batches = batches or StreamBatches(train_ids, config.batch_size, config.seq_len, rank, world_size)
        self.val_ids = val_ids
        if val_ids is not None and config.eval_chars is not None:
            self.val_ids = val_ids[: config.eval_chars]
        if self.val_ids is not None and len(self.val_ids) < 2:
            self.val_ids = None
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            # Biases and embeddings are not shrunk toward zero (as in nanoGPT and AWD-LSTM).
            # nn.LSTM names its biases bias_ih_l0, bias_hh_l0, ...: match the leaf name's prefix.
            leaf = name.rsplit(".", 1)[-1]
            (no_decay if leaf.startswith("bias") or name.startswith("embedding") else decay).append(param)
        # One fused kernel instead of ~10 foreach passes over the parameters: measured 6-15x
        # faster optimizer steps on the CPU too (4 -> 0.6 ms for 2x256, 30 -> 5 ms for 3x512).
        fused = device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
            betas=(0.9, 0.99),
            **({"fused": True} if fused else {}),
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.hidden: State | None = None
        self.progress = _Progress()
        # The step of the newest state a checkpoint holds (the one resumed from, or the last
        # on_checkpoint): what a diverged run can go back to. None: no checkpoint yet.
        self.checkpoint_step: int | None = None
        self.tokens_per_char = 1.0  # set by the run for byte and BPE vocabularies
        # Per-group gradient norms and the explode/vanish watch; off only to measure their cost.
        self.grad_stats = grad_stats
        self.gradient_groups = GradientGroups(model.named_parameters())
        self.gradient_watch = GradientWatch(model.config.cell)
        self._stop_requested = False
        # ``--lr auto``: the range test that chose config.lr (RangeTest.to_dict()), kept in
        # every checkpoint of the run; None when the rate was given.
        self.lr_range: dict | None = None

    # -- schedule --------------------------------------------------------------------

    @property
    def step(self) -> int:
        return self.progress.step

    def budget_fraction(self, step: int | None = None, elapsed: float | None = None) -> float:
        """How much of the step or time budget is used, 0..1: now, or at ``step`` and ``elapsed``."""
        step = self.progress.step if step is None else step
        elapsed = self.progress.elapsed if elapsed is None else elapsed
        fractions = [0.0]
        if self.config.max_steps:
            fractions.append(step / self.config.max_steps)
        if self.config.minutes:
            fractions.append(elapsed / (self.config.minutes * 60))
        return min(1.0, max(fractions))

    def _cosine_fraction(self) -> float:
        """How far the cosine decay has gone, 0..1: from its start (the run's start, or its last
        extension) to the end of the budget, by steps or time, whichever is further along."""
        c, p = self.config, self.progress
        fractions = [0.0]
        if c.max_steps:
            fractions.append(_leg(p.step, p.cosine_step, c.max_steps))
        if c.minutes:
            fractions.append(_leg(p.elapsed, p.cosine_elapsed, c.minutes * 60))
        return min(1.0, max(fractions))

    def _cosine_scale(self) -> float:
        c, p = self.config, self.progress
        cosine = 0.5 * (1 + math.cos(math.pi * self._cosine_fraction()))
        return c.min_lr_frac + (p.cosine_scale - c.min_lr_frac) * cosine

    def learning_rate(self) -> float:
        c = self.config
        warmup = min(1.0, (self.progress.step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        if c.schedule == "cosine":
            scale = self._cosine_scale()
        elif c.schedule == "plateau":
            scale = max(c.min_lr_frac, self.progress.lr_scale)
        else:
            scale = 1.0
        return c.lr * warmup * scale

    def extend_budget(self, steps: int = 0, minutes: float = 0.0) -> None:
        """Add ``steps`` and ``minutes`` to the budget. The cosine schedule does not start over
        (a bigger budget would move it back up): from the rate reached so far it decays to the
        minimum over the rest of the new budget, so a finished run goes on at the minimum."""
        c, p = self.config, self.progress
        scale = self._cosine_scale()
        self.config = replace(
            c,
            max_steps=c.max_steps + steps if steps else c.max_steps,
            minutes=c.minutes + minutes if minutes else c.minutes,
        )
        p.cosine_step, p.cosine_elapsed, p.cosine_scale = p.step, p.elapsed, scale

    def budget_spent(self) -> str | None:
        """"finished" when the step budget is spent, "time" when the time budget is, else None."""
        return self._budget_spent()

    # -- state -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        p = self.progress
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "batches": self.batches.state_dict(),
            "hidden": state_as_list(self.hidden),
            "rng": capture_rng_state(),
            "progress": {
                "step": p.step,
                "elapsed": p.elapsed,
                "best_val_loss": p.best_val_loss,
                "evals_without_improvement": p.evals_without_improvement,
                "lr_scale": p.lr_scale,
                "cosine_step": p.cosine_step,
                "cosine_elapsed": p.cosine_elapsed,
                "cosine_scale": p.cosine_scale,
            },
            "world_size": self.world_size,
            "gradients": self.gradient_watch.state_dict(),
            # What the steps ran in: a resumed run whose --precision auto chose by its budget
            # goes on in it (charrnn.training.budget_fit).
            "precision": DTYPE_NAMES[self.amp_dtype],
        }
        if self.lr_range is not None:
            state["lr_range"] = self.lr_range
        if self.world_size > 1:
            # A collective: every rank calls state_dict at the same checkpoint. Each rank's
            # streams and random state differ; the weights must not (the digest shows it).
            state["ranks"] = distributed.gather(
                {
                    "hidden": state["hidden"],
                    "rng": state["rng"],
                    "weights_sha256": distributed.weights_digest(self.model),
                }
            )
        return state

    def load_state_dict(self, state: dict) -> None:
        distributed.check_world_size(int(state.get("world_size", 1)), self.world_size)
        if self.world_size > 1:
            own = state["ranks"][self.rank]
            state = {**state, "hidden": own["hidden"], "rng": own["rng"]}
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["batches"])
        hidden = state_from_list(state["hidden"], self.model.config.cell)
        if hidden is not None and state_batch_size(hidden) != self.batches.layout.batch_size:
            hidden = None  # a different batch layout cannot continue the old streams
        self.hidden = None if hidden is None else state_to(hidden, self.device)
        restore_rng_state(state["rng"])
        self.gradient_watch.load_state_dict(state.get("gradients", {}))  # none before it existed
        self.lr_range = state.get("lr_range")
        p = state["progress"]
        self.progress = _Progress(
            best_val_loss=p["best_val_loss"],
            evals_without_improvement=int(p["evals_without_improvement"]),
            lr_scale=float(p["lr_scale"]),
        )
        self.load_schedule_position(p)

    def continue_schedule(self, state: dict) -> None:
        """From a ``state_dict`` whose optimizer state no longer fits the model (its vocabulary
        grew): only the run's place in its budget and schedule carries on (and the record of
        the range test that chose its rate)."""
        self.load_schedule_position(state["progress"])
        self.lr_range = state.get("lr_range")

    def load_schedule_position(self, progress: dict) -> None:
        """Where a run stands in its budget and schedule: steps, training time, and the start of
        the cosine decay (checkpoints written before budgets could be extended have none: the
        decay runs from the start)."""
        p = self.progress
        p.step = int(progress["step"])
        p.elapsed = float(progress["elapsed"])
        p.cosine_step = int(progress.get("cosine_step", 0))
        p.cosine_elapsed = float(progress.get("cosine_elapsed", 0.0))
        p.cosine_scale = float(progress.get("cosine_scale", 1.0))
        self.checkpoint_step = p.step

    # -- the loop --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the current step, then return from ``fit`` with status "interrupted"."""
        self._stop_requested = True

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def _emit(self, event: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        return TrainingDiverged(f"the {what} became {value} at step {self.progress.step + 1}; {self._what_now()}")

    def _what_now(self) -> str:
        """What a diverged run can do: resume from its last checkpoint, or, where none was
        written yet, start again; both with gentler steps."""
        gentler = "with a lower --lr or a smaller --grad-clip"
        if self.checkpoint_step is None:
            return f"no checkpoint was written before it, so there is none to resume: start again {gentler}"
        return (
            f"no checkpoint was written for it. Resume from the last checkpoint "
            f"(step {self.checkpoint_step}) {gentler}"
        )

    def train_step(self) -> StepStats:
        started = time.perf_counter()
        threads = torch.get_num_threads()
        x, y, new_epoch = self.batches.next_window()
        if new_epoch or not self.batches.carries_state:
            self.hidden = None  # the streams start over from the top of the text (items: always)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.forward_model.train()
        with self._autocast():
            _, loss, hidden = self.forward_model(x, self.hidden, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        if self.grad_stats:
            # The per-tensor norms the clip needs anyway, kept: read back with the loss in one
            # transfer, and folded into group norms on the host.
            norms = torch.stack(tensor_norms([p.grad for p in self.gradient_groups.parameters]))
            norm = torch.linalg.vector_norm(norms, 2.0)
            torch.nn.utils.clip_grads_with_norm_(self.gradient_groups.parameters, clip, norm)
            values = torch.cat([loss.detach().float().view(1), norm.float().view(1), norms.float()])
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            values = torch.stack([loss.detach().float(), norm.float()])
        # One read-back per step, after backward (on a GPU each one waits for the queue to
        # drain). No update has been applied yet, so a bad loss still stops the run before it
        # touches the weights.
        loss_value, grad_norm, *per_tensor = values.tolist()
        # Under torchrun: the loss of the whole global batch, and every rank sees a divergence.
        loss_value = distributed.mean(loss_value)
        if not math.isfinite(loss_value):
            raise self._diverged("loss", loss_value)
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            # Without a grad scaler (which skips such steps itself) this update would turn the
            # weights into NaN; stop before it touches them.
            raise self._diverged("gradient", grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.hidden = detach_state(hidden)
        gradients = {}
        if self.grad_stats:
            gradients = self._gradient_stats(grad_norm, per_tensor, clip)
        seconds = time.perf_counter() - started
        self.progress.step += 1
        self.progress.elapsed += seconds
        return StepStats(
            step=self.progress.step,
            epoch=self.batches.epoch,
            loss=loss_value,
            lr=lr,
            grad_norm=grad_norm,
            chars=x.numel() * self.world_size,
            seconds=seconds,
            elapsed=self.progress.elapsed,
            progress=self.budget_fraction(),
            threads=threads,
            **gradients,
        )

    def _gradient_stats(self, grad_norm: float, per_tensor: list[float], clip: float) -> dict:
        """This step's StepStats fields about gradients; the watch hears of the step."""
        # What clip_grads_with_norm_ did: scale by clip / (norm + 1e-6) when that is below 1.
        # A non-finite norm is an fp16 overflow, a step the grad scaler skips: not clipped.
        clipped = math.isfinite(grad_norm) and grad_norm + 1e-6 > clip
        groups = self.gradient_groups.norms(per_tensor)
        step = self.progress.step + 1
        warnings = self.gradient_watch.observe(step, grad_norm, clipped, groups, self.config.grad_clip)
        return dict(grad_norms=groups, clipped=clipped, clip_share=self.gradient_watch.clip_share(), warnings=warnings)

    def _budget_spent(self) -> str | None:
        c = self.config
        if c.max_steps is not None and self.progress.step >= c.max_steps:
            return "finished"
        if c.minutes is not None and self.progress.elapsed >= c.minutes * 60:
            return "time"
        return None

    def fit(self) -> FitResult:
        """Train until the step or time budget is spent, early stopping, or ``request_stop``."""
        if self.config.max_steps is None and self.config.minutes is None:
            raise ConfigError("give a budget: --max-steps, --epochs or --minutes")
        self._stop_requested = False
        # The time budget is wall time (steps, evaluations and checkpoints alike), across resumes.
        fit_started, elapsed_before = time.perf_counter(), self.progress.elapsed
        status = self._budget_spent()
        while status is None:
            stats = self.train_step()
            # Under torchrun every rank reads rank 0's clock, so that all take the same
            # budget and learning-rate decisions (a no-op for one process).
            self.progress.elapsed = stats.elapsed = distributed.rank0_value(
                elapsed_before + time.perf_counter() - fit_started
            )
            self._emit("on_step", stats)
            for warning in stats.warnings:
                self._emit("on_warning", warning)
            improved = False
            step = self.progress.step
            status = self._budget_spent()
            if self.val_ids is not None and (step % self.config.eval_every == 0 or status):
                eval_stats = self.evaluate_and_track()
                improved = eval_stats.improved
                self._emit("on_eval", eval_stats)
                if improved:
                    self._check_finite()
                    self._emit("on_checkpoint", True)
                    self.checkpoint_step = step
                self.progress.elapsed = distributed.rank0_value(
                    elapsed_before + time.perf_counter() - fit_started
                )
                if self.config.patience and (
                    self.progress.evals_without_improvement >= self.config.patience
                ):
                    status = status or "early_stop"
            periodic = self.config.checkpoint_every or self.config.eval_every
            if distributed.any_rank(self._stop_requested):
                status = "interrupted"
            if status or step % periodic == 0:
                self._check_finite()
                self._emit("on_checkpoint", False)
                self.checkpoint_step = step
        return FitResult(status, self.progress.step, self.progress.best_val_loss)

    def _check_finite(self) -> None:
        """The last guard before a checkpoint: never write NaN or infinite weights over a good one."""
        for name, param in self.model.named_parameters():
            if not bool(torch.isfinite(param).all()):
                raise TrainingDiverged(
                    f"the weights ({name}) became NaN or infinite by step {self.progress.step}; {self._what_now()}"
                )

    def evaluate_and_track(self) -> EvalStats:
        started = time.perf_counter()
        val_loss = self.evaluate(self.val_ids)
        p = self.progress
        improved = p.best_val_loss is None or val_loss < p.best_val_loss
        if improved:
            p.best_val_loss = val_loss
            p.evals_without_improvement = 0
        else:
            p.evals_without_improvement += 1
            if self.config.schedule == "plateau":
                p.lr_scale *= 0.5
        return EvalStats(
            self.progress.step, val_loss, improved, time.perf_counter() - started, self.tokens_per_char
        )

    @torch.no_grad()
    def evaluate(self, ids: np.ndarray) -> float:
        # As many rows as the training batch, which the device is known to hold; longer windows
        # than training's only save per-call overhead, the state is carried. A list's items
        # are scored as they are trained: each from the zero state.
        if not self.batches.carries_state:
            return evaluate_items(self.model, ids, self.batches.delimiter, self.device, self.config.batch_size)
        return evaluate(self.model, ids, self.device, self.config.batch_size, max(self.config.seq_len, EVAL_WINDOW))


def _leg(now: float, start: float, end: float) -> float:
    span = end - start
    return 1.0 if span <= 0 else (now - start) / span
