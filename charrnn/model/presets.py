"""Named model sizes. Each is a set of option defaults; any option given explicitly wins."""

from __future__ import annotations

from enum import Enum


class Preset(str, Enum):
    tiny = "tiny"
    small = "small"
    medium = "medium"
    large = "large"


PRESETS: dict[str, dict] = {
    # ~0.1M parameters: fast sampling, embedded use, smoke tests.
    "tiny": {"layers": 1, "hidden": 128, "embed": 32, "dropout": 0.0},
    # ~0.9M parameters: the default; fits a few minutes of CPU on a 1 MB corpus. No dropout:
    # in a 6-minute run on tiny shakespeare 0.1 gained per step (1.492 against 1.506
    # nats/char at 7,750 steps) but cost 11% of the speed, and weight decay (below) did
    # better for free; raise it for runs of many epochs on a small corpus.
    "small": {"layers": 2, "hidden": 256, "embed": 64, "dropout": 0.0},
    # ~3.3M parameters: tens of minutes of CPU, or a GPU.
    "medium": {"layers": 2, "hidden": 512, "embed": 128, "dropout": 0.2},
    # ~5.4M parameters: a GPU, or an hour-plus of CPU on a multi-MB corpus.
    "large": {"layers": 3, "hidden": 512, "embed": 128, "dropout": 0.25},
}

DEFAULT_PRESET = "small"

# What `charrnn train` builds on a GPU when no --preset is given. A step of a 2x512 model costs
# about what a 2x256 one does there (cuDNN's time per step is launch-bound, 11-13 ms on an
# H100 at batch 128-1024), so the larger model is free; and at ~1M chars/s a 1 MB corpus is
# seen 100+ times in 2 minutes, so it needs more dropout than `medium` carries for PTB on a
# CPU. Tiny shakespeare, 2 minutes on an H100 (four runs sharing the GPU, batch 256): small
# 1.546 (alone), medium 1.487, medium with dropout 0.4 1.459.
GPU_DEFAULT_PRESET = "medium"
GPU_DEFAULT_OVERRIDES: dict = {"dropout": 0.4}


def resolve_preset(preset: str | None, device_type: str) -> tuple[str, dict]:
    """The preset's name and model options: those of ``preset``, or the device's default."""
    if preset:
        return preset, dict(PRESETS[preset])
    if device_type == "cuda":
        return GPU_DEFAULT_PRESET, {**PRESETS[GPU_DEFAULT_PRESET], **GPU_DEFAULT_OVERRIDES}
    return DEFAULT_PRESET, dict(PRESETS[DEFAULT_PRESET])


# Training defaults per preset (an explicit option wins).
# lr: small models take large steps: for `small` on tiny shakespeare (16x64 windows, 6000
#   steps) 3e-3, 5e-3 and 8e-3 reached 1.515, 1.509 and 1.498 nats/char. `medium` ran its PTB
#   hour at 5e-3; `large` keeps the cautious 3e-3.
# weight_decay: the regulariser that pays for itself in a short run on a small corpus. For
#   `small` on tiny shakespeare at 7,750 steps (what 6 minutes hold), AdamW's decay 0.01,
#   0.05, 0.1, 0.15 and 0.3 reached 1.506, 1.456, 1.466, 1.479 and ~1.52 nats/char; dropout
#   0.1 reached 1.492 and costs 11% of the speed (torch's CPU dropout masks). `medium` and
#   `large` keep 0.01, with which the PTB figures were measured.
PRESET_TRAINING: dict[str, dict] = {
    "tiny": {"lr": 8e-3, "weight_decay": 0.05},
    "small": {"lr": 8e-3, "weight_decay": 0.05},
    "medium": {"lr": 5e-3, "weight_decay": 0.01},
    "large": {"lr": 3e-3, "weight_decay": 0.01},
}


def preset_training(preset: str | None) -> dict:
    """Training option defaults of ``preset`` (the default preset when None)."""
    return dict(PRESET_TRAINING[preset or DEFAULT_PRESET])
