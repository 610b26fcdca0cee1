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
    # ~0.9M parameters: the default; fits a few minutes of CPU on a 1 MB corpus.
    "small": {"layers": 2, "hidden": 256, "embed": 64, "dropout": 0.1},
    # ~3.3M parameters: tens of minutes of CPU, or a GPU.
    "medium": {"layers": 2, "hidden": 512, "embed": 128, "dropout": 0.2},
    # ~5.4M parameters: a GPU, or an hour-plus of CPU on a multi-MB corpus.
    "large": {"layers": 3, "hidden": 512, "embed": 128, "dropout": 0.25},
}

DEFAULT_PRESET = "small"
