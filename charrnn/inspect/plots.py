"""Pictures of what the inspection found: gradient norms against steps back (log scale) as a
PNG and as a text chart, and the gate saturation scatter of Karpathy et al. (2015)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from charrnn.figures import save_figure
from charrnn.inspect.gradients import GradientFlow
from charrnn.cells import GATE_NAMES
from charrnn.inspect.saturation import Saturation

MARKERS = "*o+x#@%&"


def have_matplotlib() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # a module entry of None (blocked) or without a spec
        return False


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, plt, dpi: int = 110) -> Path:
    return save_figure(fig, path, plt, "--png", dpi)


def _positive(values: np.ndarray) -> np.ndarray:
    """Zeros have no place on a log scale: left out of the line rather than drawn at -inf."""
    return np.where(values > 0, values, np.nan)


def gradients_png(flows: list[GradientFlow], path: Path, title: str) -> Path:
    """Left: ||dL/dx|| against steps back, one line per model. Right: ||dL/dh|| per layer."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for i, flow in enumerate(flows):
        colour = colours[i % len(colours)]
        k = np.arange(flow.steps)
        left.plot(k, _positive(flow.inputs), color=colour, label=flow.label)
        for layer, norms in enumerate(flow.hidden):
            right.plot(k, _positive(norms), color=colour, linestyle=styles[layer % len(styles)],
                       label=f"{flow.label}, layer {layer}")  # fmt: skip
    left.set_title("input: ||dL/dx|| k steps back")
    right.set_title("hidden state per layer: ||dL/dh|| k steps back")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_xlabel("k (steps before the last)")
        ax.grid(alpha=0.3, which="both")
    left.set_ylabel("gradient norm of the last step's loss")
    left.legend(fontsize="small")
    right.legend(fontsize="x-small", ncol=1 if len(flows) < 3 else 2)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return _save(fig, path, plt)


def saturation_png(saturation: Saturation, path: Path, title: str) -> Path:
    """One panel per layer, one dot per unit and gate: x the fraction of steps the gate is
    below 0.1, y above 0.9."""
    plt = _pyplot()
    layers = next(iter(saturation.left.values())).shape[0]
    fig, axes = plt.subplots(1, layers, figsize=(3.6 * layers + 0.6, 3.9), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for layer, ax in enumerate(axes[0]):
        ax.plot([0, 1], [1, 0], color="0.75", linewidth=0.8)  # beyond it a unit would be both
        for i, gate in enumerate(saturation.gates):
            ax.scatter(saturation.left[gate][layer], saturation.right[gate][layer], s=9, alpha=0.6,
                       color=colours[i % len(colours)], label=GATE_NAMES.get(gate, gate))  # fmt: skip
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("fraction left-saturated (< 0.1)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction right-saturated (> 0.9)")
    axes[0][-1].legend(fontsize="small", loc="upper right")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return _save(fig, path, plt)


def text_chart(series: list[tuple[str, np.ndarray]], width: int = 72, height: int = 14) -> tuple[str, list[str]]:
    """Norms against steps back on a log scale, as text: one marker per series. Returns the
    chart and the marker of each series, in order."""
    markers = [MARKERS[i % len(MARKERS)] for i in range(len(series))]
    positive = [v[v > 0] for _, v in series]
    finite = np.concatenate([v[np.isfinite(v)] for v in positive]) if positive else np.array([])
    if finite.size == 0:
        return "(every gradient is zero)\n", markers
    top = math.ceil(math.log10(finite.max()))
    bottom = math.floor(math.log10(finite.min()))
    if top == bottom:
        bottom -= 1
    steps = max(len(v) for _, v in series)
    columns = min(width, steps)
    grid = [[" "] * columns for _ in range(height)]
    for marker, (_, values) in zip(markers, series):
        for column in range(columns):
            k = round(column * (steps - 1) / max(columns - 1, 1))
            if k >= len(values) or not values[k] > 0:
                continue
            row = round((top - math.log10(values[k])) / (top - bottom) * (height - 1))
            grid[min(max(row, 0), height - 1)][column] = marker
    label_width = len(f"1e{bottom}") + 1
    lines = []
    for row, cells in enumerate(grid):
        exponent = top - row * (top - bottom) / (height - 1)
        label = f"1e{round(exponent)}" if row % 3 == 0 or row == height - 1 else ""
        lines.append(f"{label:>{label_width}} |" + "".join(cells))
    lines.append(" " * label_width + " +" + "-" * columns)
    axis = f"k=0{'':>{max(columns - len(f'k={steps - 1}') - 3, 1)}}k={steps - 1}"
    lines.append(" " * (label_width + 2) + axis + "  (steps before the last)")
    for marker, (label, _) in zip(markers, series):
        lines.append(f"{'':>{label_width}}  {marker} {label}")
    return "\n".join(lines) + "\n", markers


def neuron_png(pieces, values, path: Path, title: str, columns: int = 100, rows: int = 40) -> Path:
    """The text as a grid of characters, each on its value's colour (as in the HTML page),
    cut to ``rows`` lines of ``columns`` characters."""
    from matplotlib.patches import Rectangle

    from charrnn.inspect.render import colour_of

    cells, row, column = [], 0, 0
    for piece, value in zip(pieces, values):
        for ch in piece:
            if ch == "\n":
                cells.append((row, column, "\u21b5", value))  # the newline itself, marked
                row, column = row + 1, 0
                continue
            if column >= columns:
                row, column = row + 1, 0
            cells.append((row, column, ch if ch.isprintable() else " ", value))
            column += 1
        if row >= rows:
            break
    cells = [cell for cell in cells if cell[0] < rows]
    shown_rows = max(cell[0] for cell in cells) + 1
    shown_columns = max(cell[1] for cell in cells) + 1
    plt = _pyplot()
    fig = plt.figure(figsize=(0.105 * shown_columns + 0.4, 0.2 * shown_rows + 0.7))
    ax = fig.add_axes([0.01, 0.01, 0.98, 1 - 0.45 / (0.2 * shown_rows + 0.7)])
    ax.set_xlim(0, shown_columns)
    ax.set_ylim(shown_rows, 0)
    ax.axis("off")
    for r, c, ch, value in cells:
        ax.add_patch(Rectangle((c, r), 1, 1, facecolor=colour_of(value), edgecolor="none"))
        if ch.strip():
            ax.text(c + 0.5, r + 0.55, ch, ha="center", va="center", family="monospace", fontsize=8,
                    color="0.6" if ch == "\u21b5" else "black")  # fmt: skip
    fig.suptitle(title, fontsize="small", y=0.995, va="top")
    return _save(fig, path, plt)
