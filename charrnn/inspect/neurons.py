"""Single units over text: one unit's activation at every character, and the search for the
units whose activation best follows a property of the text (``features``), by correlation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.errors import ConfigError
from charrnn.inspect.features import text_features
from charrnn.inspect.replayed import Replayed


def parse_neuron(spec: str, layers: int, units: int) -> tuple[int, int]:
    """``"L:N"`` -> (layer, unit), both counted from 0, checked against the model's size."""
    layer_text, sep, unit_text = str(spec).partition(":")
    try:
        layer, unit = int(layer_text), int(unit_text)
    except ValueError:
        layer = unit = None
    if not sep or layer is None:
        raise ConfigError(f"--neuron {spec}: give LAYER:UNIT, e.g. --neuron 1:42 (both counted from 0)")
    if not 0 <= layer < layers:
        raise ConfigError(f"--neuron {spec}: layer {layer} is out of range; the model has {layers} layer(s): 0..{layers - 1}")
    if not 0 <= unit < units:
        raise ConfigError(f"--neuron {spec}: unit {unit} is out of range; each layer has {units} units: 0..{units - 1}")
    return layer, unit


def state_for(replayed: Replayed, which: str) -> np.ndarray:
    if which not in ("h", "c"):
        raise ConfigError(f"--state must be h or c, not {which!r}")
    if which == "c" and replayed.cell is None:
        raise ConfigError(f"--state c: a {replayed.kind.upper()} has no cell state; use --state h")
    return replayed.state(which)


@dataclass(frozen=True)
class Match:
    feature: str
    layer: int
    unit: int
    correlation: float  # Pearson's r between the unit's activation and the feature

    @property
    def neuron(self) -> str:
        return f"{self.layer}:{self.unit}"


# Steps taken at a time: float64 copies of the whole of ``states`` would take twice its size.
CORRELATED_STEPS = 1 << 14


def correlations(states: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson's r of every unit of ``states`` (layers, T, H) with ``feature`` (T,); 0 where
    either does not vary."""
    f = feature - feature.mean()
    steps = states.shape[1]
    pieces = range(0, steps, CORRELATED_STEPS)
    mean = sum(states[:, a : a + CORRELATED_STEPS].sum(axis=1, dtype=np.float64) for a in pieces) / steps
    num = np.zeros(mean.shape)
    spread = np.zeros(mean.shape)
    for a in pieces:
        s = states[:, a : a + CORRELATED_STEPS].astype(np.float64) - mean[:, None, :]
        num += np.einsum("lth,t->lh", s, f[a : a + CORRELATED_STEPS])
        spread += (s * s).sum(axis=1)
    den = np.sqrt(spread * (f * f).sum())
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def find_units(replayed: Replayed, pieces, which: str = "h", top: int = 10) -> tuple[list[Match], list[str]]:
    """The ``top`` (feature, unit) pairs with the largest |r|, best first, and the features
    that never vary in this text (so no unit can follow them here)."""
    states = state_for(replayed, which)
    matches, absent = [], []
    for name, values in text_features(pieces).items():
        if values.std() == 0:
            absent.append(name)
            continue
        r = correlations(states, values)
        for layer, unit in zip(*np.unravel_index(np.argsort(-np.abs(r), axis=None)[:top], r.shape)):
            matches.append(Match(name, int(layer), int(unit), float(r[layer, unit])))
    matches.sort(key=lambda m: -abs(m.correlation))
    return matches[:top], absent


def best_per_feature(replayed: Replayed, pieces, which: str = "h") -> list[Match]:
    """For each feature that varies in the text, the unit that follows it best."""
    states = state_for(replayed, which)
    best = []
    for name, values in text_features(pieces).items():
        if values.std() == 0:
            continue
        r = correlations(states, values)
        layer, unit = np.unravel_index(int(np.argmax(np.abs(r))), r.shape)
        best.append(Match(name, int(layer), int(unit), float(r[layer, unit])))
    return best
