"""Learning curves from run directories: a PNG (matplotlib, optional) and a text chart.

Both read ``metrics.jsonl`` and show bits per character, train and validation on one scale
(the train loss is logged in nats per character), against steps or against wall time; and,
asked for, the gradient norm of each group of weights (log scale) and the share of recent
steps whose gradients were clipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.errors import CheckpointError, ConfigError
from charrnn.figures import save_figure
from charrnn.training.gradient_stats import CLIP_WINDOW, EXPLODING_SHARE
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
    grad_step: list[int] = field(default_factory=list)
    grad_seconds: list[float] = field(default_factory=list)
    grad_norms: dict[str, list[float]] = field(default_factory=dict)  # per group, one per grad_step
    clip_share: list[float] = field(default_factory=list)

    def grad_x(self, axis: str) -> list[float]:
        return [s / 60 for s in self.grad_seconds] if axis == "time" else list(self.grad_step)

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
                if isinstance(record.get("grad_norms"), dict):
                    _add_gradients(curves, record)
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


def _add_gradients(curves: Curves, record: dict) -> None:
    norms = {group: float(value) for group, value in record["grad_norms"].items()}
    count = len(curves.grad_step)
    for group, value in norms.items():
        # A group first seen later (a grown model) is padded, so every list lines up with steps.
        curves.grad_norms.setdefault(group, [math.nan] * count).append(value)
    for group, values in curves.grad_norms.items():
        if group not in norms:
            values.append(math.nan)
    curves.grad_step.append(int(record["step"]))
    curves.grad_seconds.append(float(record.get("elapsed") or 0.0))
    curves.clip_share.append(float(record.get("clip_share") or 0.0))


def smooth(values: list[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average: one window's loss is noisy, the trend is what matters."""
    out, current = [], None
    for v in values:
        # Restarts after a gap (NaN): a group's norms begin where the group first appears.
        current = v if current is None or not math.isfinite(current) else (1 - alpha) * current + alpha * v
        out.append(current)
    return out


def write_png(runs: list[Curves], path: Path, dpi: int = 120, gradients: bool = False) -> Path:
    """Two panels, bpc against steps and against minutes; one colour per run. With
    ``gradients``, a second row: each group's gradient norm (log scale; one colour per group,
    one line style per run) and the share of recent steps clipped (one colour per run)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "the PNG needs matplotlib: pip install 'charrnn[plot]' (or use --terminal)"
        ) from None
    if gradients:
        require_gradients(runs)
        fig, grid = plt.subplots(2, 2, figsize=(12, 9))
        axes = grid[0]
        axes[1].sharey(axes[0])
    else:
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
    if gradients:
        _draw_gradients(runs, grid[1], colours)
    fig.suptitle("train (smoothed) and validation bpc" + ("; gradients" if gradients else ""))
    fig.tight_layout()
    return save_figure(fig, path, plt, "--out", dpi)


def require_gradients(runs: list[Curves]) -> None:
    missing = [run.name for run in runs if not run.grad_step]
    if missing:
        raise CheckpointError(
            f"{', '.join(missing)}: no gradient statistics in {METRICS} (a run trained before "
            "they were logged); plot it without --gradients"
        )


LINE_STYLES = ("-", "--", ":", "-.")


def _draw_gradients(runs: list[Curves], axes, colours: list[str]) -> None:
    norms_ax, clip_ax = axes
    groups = list(dict.fromkeys(group for run in runs for group in run.grad_norms))
    for i, run in enumerate(runs):
        style = LINE_STYLES[i % len(LINE_STYLES)]
        for j, group in enumerate(groups):
            if group in run.grad_norms:
                label = group if len(runs) == 1 else f"{run.name} {group}"
                norms_ax.plot(run.grad_step, smooth(run.grad_norms[group]), color=colours[j % len(colours)],
                              linestyle=style, linewidth=1.0, label=label)  # fmt: skip
        clip_ax.plot(run.grad_step, run.clip_share, color=colours[i % len(colours)], linewidth=1.2, label=run.name)
    norms_ax.set_yscale("log")
    norms_ax.set_ylabel("gradient norm (smoothed, before clipping)")
    clip_ax.set_ylabel(f"share of the last {CLIP_WINDOW} steps clipped")
    clip_ax.set_ylim(-0.02, 1.02)
    # Above this line the run is told its gradients explode.
    clip_ax.axhline(EXPLODING_SHARE, color="grey", linewidth=0.8, linestyle=":")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")


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
    # Validation points are few and matter most: they win a shared cell.
    lines = _grid_chart(series, width, height, lambda y: f"{y:7.3f}", prefer=str.isalpha)
    unit = "step" if axis == "step" else "minutes"
    lines.append(" " * (LABEL_WIDTH + 2) + f"bits per character against {unit}")
    for i, run in enumerate(runs):
        best = f"best val {min(run.val_bpc):.4f} bpc" if run.val_bpc else "no evaluation yet"
        last = f"last train {run.train_bpc[-1]:.4f} bpc at step {run.step[-1]}" if run.step else ""
        lines.append(
            f"  {train_marks[i % len(train_marks)]} train / {chr(ord('A') + i % 26)} val  "
            f"{run.name}: {', '.join(p for p in (last, best) if p)}"
        )
    return "\n".join(lines) + "\n"


def gradient_chart(run: Curves, axis: str = "step", width: int = 72, height: int = 16) -> str:
    """One run's gradient norm per group of weights as text, log scale (one mark per group),
    and a line on how often clipping acted."""
    require_gradients([run])
    series, legend = [], []
    for group, values in run.grad_norms.items():
        mark = _group_mark(group)
        pairs = [(x, math.log10(v)) for x, v in zip(run.grad_x(axis), smooth(values)) if v > 0 and math.isfinite(v)]
        series.append((mark, [x for x, _ in pairs], [y for _, y in pairs]))
        legend.append(f"{mark} {group}")
    # The recurrent weights, where gradients vanish, win a cell shared with another group.
    lines = _grid_chart(series, width, height, lambda y: f"{10**y:7.1e}", prefer=str.isdigit)
    unit = "step" if axis == "step" else "minutes"
    lines.append(" " * (LABEL_WIDTH + 2) + f"{run.name}: gradient norm (smoothed, log scale) against {unit}")
    lines.append("  " + "   ".join(legend))
    clipped = run.clip_share
    lines.append(
        f"  clipping acted on {clipped[-1]:.0%} of the last {CLIP_WINDOW} steps at step {run.grad_step[-1]}; "
        f"at most {max(clipped):.0%} over the run"
    )
    return "\n".join(lines) + "\n"


def _group_mark(group: str) -> str:
    """``e`` embedding, ``d`` decoder, the layer's digit for its recurrent weights
    (``weight_hh_l0`` -> ``0``), a letter for its input weights (``weight_ih_l0`` -> ``a``)."""
    if group == "embedding":
        return "e"
    if group == "decoder":
        return "d"
    layer = int(group.rsplit("_l", 1)[1])
    return str(layer % 10) if group.startswith("weight_hh") else "abcfghijkm"[layer % 10]


LABEL_WIDTH = 7


def _grid_chart(series, width: int, height: int, label, prefer=lambda mark: False) -> list[str]:
    """The chart's rows, frame and x-axis labels for ``series`` of (mark, xs, ys); a mark for
    which ``prefer`` holds wins a cell shared with another."""
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
            if prefer(mark) or grid[row][col] == " ":
                grid[row][col] = mark
    lines = []
    for r, cells in enumerate(grid):
        value = y1 - (y1 - y0) * r / (height - 1)
        text = label(value) if r in (0, height // 2, height - 1) else " " * LABEL_WIDTH
        lines.append(f"{text} |{''.join(cells)}")
    left, right = _fmt(x0), _fmt(x1)
    lines.append(" " * LABEL_WIDTH + " +" + "-" * width)
    lines.append(" " * (LABEL_WIDTH + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    return lines


def _fmt(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"
