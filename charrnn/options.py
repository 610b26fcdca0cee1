"""The choices a user makes by name, as str Enums that the command line offers and the library
checks. Nothing here imports torch or numpy: ``charrnn --help`` and shell completion read these
and must start at once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import Enum

from charrnn.errors import ConfigError


# The largest seed: torch's generators take a signed 64-bit integer (2**64 and more overflow
# there), and negative seeds would be a second spelling of large ones.
MAX_SEED = 2**63 - 1


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"  # fp16 autocast on CUDA, fp32 on CPU
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Cell(str, Enum):
    lstm = "lstm"
    gru = "gru"
    rnn = "rnn"


class Schedule(str, Enum):
    cosine = "cosine"  # warmup, then cosine decay to min_lr over the step or time budget
    plateau = "plateau"  # warmup, then halve the rate whenever validation stops improving
    constant = "constant"


class Engine(str, Enum):
    auto = "auto"  # fast on CPU; the model's own fused layers (cuDNN) on GPU
    fast = "fast"
    eager = "eager"


class TokenizerKind(str, Enum):
    chars = "chars"  # one token per character of the corpus (the default)
    bytes = "bytes"  # UTF-8 bytes: 256 tokens, any text
    bpe = "bpe"  # byte-level BPE trained on the corpus


MAX_LR = 1e30


@dataclass
class TrainConfig:
    batch_size: int = 64
    seq_len: int = 64
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 20
    schedule: str = "cosine"
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int | None = None
    minutes: float | None = None
    # A full evaluation of tiny shakespeare's validation text costs ~30 training steps of 16x64.
    eval_every: int = 500
    eval_chars: int | None = None
    checkpoint_every: int | None = None
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    seed: int = 1337
    precision: str = "auto"
    # CPU training is reproducible as it is; this also forces deterministic CUDA kernels.
    deterministic: bool = False

    def __post_init__(self) -> None:
        self.schedule = Schedule(self.schedule).value
        for name in ("lr", "min_lr_frac", "weight_decay", "grad_clip", "minutes"):
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                # Checked first: NaN fails no comparison below, and inf passes the ranges.
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, not {value}")
        checks = [
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.seq_len >= 1, "--seq-len must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            # AdamW divides the rate by its bias correction and applies it in float32: anything
            # bigger overflows there (an internal error) instead of merely diverging.
            (self.lr <= MAX_LR, f"--lr must be at most {MAX_LR:g}"),
            (0 <= self.min_lr_frac <= 1, "--min-lr-frac must be in [0, 1]"),
            (self.warmup_steps >= 0, "--warmup-steps must be >= 0"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.grad_clip >= 0, "--grad-clip must be >= 0 (0 turns clipping off)"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.minutes is None or self.minutes > 0, "--minutes must be positive"),
            (self.eval_every >= 1, "--eval-every must be at least 1"),
            (self.eval_chars is None or self.eval_chars >= 2, "--eval-chars must be at least 2"),
            (
                self.checkpoint_every is None or self.checkpoint_every >= 1,
                "--checkpoint-every must be at least 1",
            ),
            (self.patience >= 0, "--patience must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# Measured on tiny shakespeare on 2 cores: 32x64 windows ran no slower per character than 64x128
# and made 4.6x the updates (6 minutes: 3001 vs 655 steps; val 1.577 vs 1.771 nats/char); 16x64
# runs ~10% slower per character than 32x64 but, over the same 6.1M characters, reached 1.515
# against 1.560 nats/char (README, "How the defaults were chosen").
CPU_BATCH_SIZE = 16
# On a GPU a step of 2x512 costs 11-13 ms from batch 128 to 1024 (H100, launch-bound), so a
# batch 8x the CPU's is free. Not larger by default: on a 1 MB corpus a 2-minute run already
# makes 100+ passes. Tiny shakespeare, medium, dropout 0.4 logged batch 128 1.447, 256 1.459,
# 512 1.468 nats/char, but with zero-state evaluation rows, which cost larger batches more;
# less that cost the three are level (~1.433-1.438, README, GPU). Raise it for large corpora.
GPU_BATCH_SIZE = 128
