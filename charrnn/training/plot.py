"""Learning curves from run directories: a PNG (matplotlib, optional) and a text chart.

Both read ``metrics.jsonl`` and show bits per character, train and validation on one scale
(the train loss is logged in nats per character), against steps or against wall time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.errors import CheckpointError, ConfigError
from charrnn.figures import save_figure
from charrnn.units import nats_to_bpc

METRICS = "metrics.jsonl"


@dataclass
class Curves:
    name: str
    step: list[int] = field(default_factory=list)
    train_bpc: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_bpc: list[float] = field(default_factory=list)
    val_seconds: list[float] = field(default_factory=list)

    def x(self, axis: str, validation: bool = False) -> list[float]:
        if axis == "time":
            return [s / 60 for s in (self.val_seconds if validation else self.train_seconds)]
        return list(self.val_step if validation else self.step)


def load_curves(run_dir: Path) -> Curves:
    """The curves of one run; a damaged line (a crash mid-write) is skipped, not fatal."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no {METRICS} here; is it a charrnn run directory?")
    curves = Curves(name=(path.parent.name if path.name == METRICS else path.stem))
    try:
        # A torn or foreign line is skipped below; undecodable bytes must not end the reading.
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    records = 0
    for line in lines:
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or record.get("event") not in ("step", "eval"):
                continue
            records += 1
            if record.get("event") == "step" and record.get("loss") is not None:
                curves.step.append(int(record["step"]))
                curves.train_bpc.append(nats_to_bpc(float(record["loss"])))
                curves.train_seconds.append(float(record.get("elapsed") or 0.0))
            elif record.get("event") == "eval":
                curves.val_step.append(int(record["step"]))
                curves.val_bpc.append(float(record["val_bpc"]))
                curves.val_seconds.append(float(record.get("elapsed") or 0.0))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    if records == 0 and len(lines) > 0:
        raise CheckpointError(
            f"{path}: not a run directory or a {METRICS} (it holds no training records); "
            "plot takes run directories or their metrics.jsonl"
        )
    if not curves.step and not curves.val_step:
        raise CheckpointError(f"{path}: no training steps logged yet")
    return curves


def smooth(values: list[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average: one window's loss is noisy, the trend is what matters."""
    out, current = [], None
    for v in values:
        current = v if current is None else (1 - alpha) * current + alpha * v
        out.append(current)
    return out


def write_png(runs: list[Curves], path: Path, dpi: int = 120) -> Path:
    """Two panels, bpc against steps and against minutes; one colour per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "the PNG needs matplotlib: pip install 'charrnn[plot]' (or use --terminal)"
        ) from None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        colour = colours[i % len(colours)]
        for ax, axis in zip(axes, ("step", "time")):
            if run.step:
                ax.plot(run.x(axis), run.train_bpc, color=colour, alpha=0.15, linewidth=0.8)
                ax.plot(run.x(axis), smooth(run.train_bpc), color=colour, linewidth=1.2, label=f"{run.name} train")
            if run.val_step:
                ax.plot(
                    run.x(axis, validation=True), run.val_bpc, color=colour, marker="o", markersize=3,
                    linestyle="--", linewidth=1.2, label=f"{run.name} val",
                )
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("wall time (minutes)")
    axes[0].set_ylabel("bits per character")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="small")
    fig.suptitle("train (smoothed) and validation bpc")
    fig.tight_layout()
    return save_figure(fig, path, plt, "--out", dpi)


def text_chart(runs: list[Curves], axis: str = "step", width: int = 72, height: int = 16) -> str:
    """A plain-character chart of the same curves for a terminal without a display:
    smoothed train bpc as ``.`` (``:`` ``+`` ... for further runs), validation as letters."""
    train_marks = ".:+=~-"
    series = []  # (marker, xs, ys)
    for i, run in enumerate(runs):
        if run.step:
            series.append((train_marks[i % len(train_marks)], run.x(axis), smooth(run.train_bpc)))
        if run.val_step:
            series.append((chr(ord("A") + i % 26), run.x(axis, validation=True), run.val_bpc))
    xs = [x for _, sx, _ in series for x in sx]
    ys = [y for _, _, sy in series for y in sy if math.isfinite(y)]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    grid = [[" "] * width for _ in range(height)]
    for mark, sx, sy in series:
        for x, y in zip(sx, sy):
            if not math.isfinite(y):
                continue
            col = round((x - x0) / (x1 - x0) * (width - 1))
            row = height - 1 - round((y - y0) / (y1 - y0) * (height - 1))
            # Validation points are few and matter most: they win a shared cell.
            if mark.isalpha() or grid[row][col] == " ":
                grid[row][col] = mark
    label_width = 7
    lines = []
    for r, cells in enumerate(grid):
        value = y1 - (y1 - y0) * r / (height - 1)
        label = f"{value:{label_width}.3f}" if r in (0, height // 2, height - 1) else " " * label_width
        lines.append(f"{label} |{''.join(cells)}")
    unit = "step" if axis == "step" else "minutes"
    left, right = _fmt(x0), _fmt(x1)
    lines.append(" " * label_width + " +" + "-" * width)
    lines.append(" " * (label_width + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    lines.append(" " * (label_width + 2) + f"bits per character against {unit}")
    for i, run in enumerate(runs):
        best = f"best val {min(run.val_bpc):.4f} bpc" if run.val_bpc else "no evaluation yet"
        last = f"last train {run.train_bpc[-1]:.4f} bpc at step {run.step[-1]}" if run.step else ""
        lines.append(
            f"  {train_marks[i % len(train_marks)]} train / {chr(ord('A') + i % 26)} val  "
            f"{run.name}: {', '.join(p for p in (last, best) if p)}"
        )
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"
