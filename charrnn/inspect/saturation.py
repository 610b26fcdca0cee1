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

GATE_NAMES = {
    "i": "input gate", "f": "forget gate", "o": "output gate",
    "r": "reset gate", "z": "update gate",
}  # fmt: skip


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


def gate_saturation(replayed: Replayed) -> Saturation:
    check_has_gates(replayed.kind)
    names = SIGMOID_GATES[replayed.kind]
    left = {g: (replayed.gates[g] < LEFT).mean(axis=1) for g in names}
    right = {g: (replayed.gates[g] > RIGHT).mean(axis=1) for g in names}
    return Saturation(replayed.kind, left, right, replayed.hidden.shape[1])


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
