"""Gate saturation (Karpathy, Johnson and Fei-Fei 2015): for each unit of each sigmoid gate, the
fraction of steps it is left-saturated (below 0.1: closed) and right-saturated (above 0.9:
open). A gate that is always open or always closed acts as a fixed switch; a unit spread in
between decides step by step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.errors import ConfigError
from charrnn.inspect.cells import SIGMOID_GATES
from charrnn.inspect.replayed import Replayed

LEFT = 0.1
RIGHT = 0.9



@dataclass(frozen=True)
class Saturation:
    """``left[gate]`` and ``right[gate]``: (layers, units) fractions of the steps."""

    kind: str
    left: dict[str, np.ndarray]
    right: dict[str, np.ndarray]
    steps: int

    @property
    def gates(self) -> tuple[str, ...]:
        return tuple(self.left)


def check_has_gates(cell: str) -> None:
    if not SIGMOID_GATES[cell]:
        raise ConfigError(
            "--gates: a plain RNN has no gates (its step is h = tanh(W x + U h + b)); "
            "--neuron, --find and --dump-states work on it"
        )


# Steps counted at a time: a comparison over the whole text would take a byte per value.
COUNTED_STEPS = 1 << 16


def gate_saturation(replayed: Replayed) -> Saturation:
    check_has_gates(replayed.kind)
    steps = replayed.hidden.shape[1]
    left, right = {}, {}
    for gate in SIGMOID_GATES[replayed.kind]:
        values = replayed.gates[gate]
        below = np.zeros((values.shape[0], values.shape[2]), np.int64)
        above = np.zeros_like(below)
        for start in range(0, steps, COUNTED_STEPS):
            part = values[:, start : start + COUNTED_STEPS]
            below += np.count_nonzero(part < LEFT, axis=1)
            above += np.count_nonzero(part > RIGHT, axis=1)
        left[gate], right[gate] = below / steps, above / steps
    return Saturation(replayed.kind, left, right, steps)


@dataclass(frozen=True)
class GateSummary:
    layer: int
    gate: str
    mean_left: float
    mean_right: float
    mostly_closed: int  # units left-saturated on more than half the steps
    mostly_open: int  # units right-saturated on more than half the steps
    units: int


def summarise(saturation: Saturation) -> list[GateSummary]:
    rows = []
    for gate in saturation.gates:
        left, right = saturation.left[gate], saturation.right[gate]
        for layer in range(left.shape[0]):
            rows.append(GateSummary(
                layer, gate, float(left[layer].mean()), float(right[layer].mean()),
                int((left[layer] > 0.5).sum()), int((right[layer] > 0.5).sum()), left.shape[1],
            ))  # fmt: skip
    return sorted(rows, key=lambda row: (row.layer, saturation.gates.index(row.gate)))
