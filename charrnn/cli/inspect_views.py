"""What ``charrnn gradients`` and ``charrnn inspect`` show in the terminal: the gradient chart
and tables, the gate saturation table, the units found, and the text coloured by one unit
(rich colours, or a digit under each character where colour is off)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from charrnn.inspect.gradients import GradientFlow, decline
from charrnn.inspect.neurons import Match
from charrnn.inspect.plots import text_chart
from charrnn.inspect.render import BUCKETS, colour_of, plain_lines
from charrnn.cells import GATE_NAMES
from charrnn.inspect.saturation import GateSummary

SERIES_COLOURS = ("red", "green", "blue", "magenta", "cyan", "yellow")


def colour_on(console: Console) -> bool:
    return console.color_system is not None and not console.no_color


def _wide(console: Console) -> Console:
    """Tables keep one line per row when piped to a file, whatever the width of 80 says."""
    return console if console.is_terminal else Console(highlight=False, width=160, file=console.file)


def show_gradients(console: Console, flows: list[GradientFlow], window: str) -> None:
    console = _wide(console)
    steps = flows[0].steps
    console.print(
        f"gradient of the loss at the last step (predicting the character after {window}) "
        f"with respect to the input k steps before it, log scale:",
        markup=False, soft_wrap=True,
    )
    chart, markers = text_chart([(f.label, f.inputs) for f in flows])
    console.print(_coloured_chart(chart, markers, len(flows)), soft_wrap=True)
    ks = [k for k in (0, 1, 10, 20, 50, 100, 200, 500) if k < steps]
    if steps - 1 not in ks:
        ks.append(steps - 1)
    table = Table(title="||dL/dx|| and, per layer, ||dL/dh|| at k steps back", title_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("of", no_wrap=True)
    for k in ks:
        table.add_column(f"k={k}", justify="right", no_wrap=True)
    for flow in flows:
        table.add_row(flow.label, "input", *(f"{flow.inputs[k]:.1e}" for k in ks))
        for layer, norms in enumerate(flow.hidden):
            table.add_row("", f"h, layer {layer}", *(f"{norms[k]:.1e}" for k in ks))
    console.print(table)
    for flow in flows:
        console.print(f"{flow.label}: the gradient {decline(flow.inputs)}", markup=False, soft_wrap=True)


def _coloured_chart(chart: str, markers: list[str], series: int) -> Text:
    """The chart with each series' marker in its colour: in the plot area (right of the axis)
    and in the legend (its last lines), never in the labels' own letters."""
    styles = {marker: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, marker in enumerate(markers)}
    lines = chart.rstrip("\n").split("\n")
    text = Text()
    for number, line in enumerate(lines):
        start = line.find("|") + 1 if "|" in line else len(line)
        if number >= len(lines) - series:  # a legend line: its marker is its first non-space
            start = len(line) - len(line.lstrip())
            stop = start + 1
        else:
            stop = len(line)
        text.append(line[:start])
        for ch in line[start:stop]:
            text.append(ch, style=styles.get(ch))
        text.append(line[stop:] + "\n")
    return text


def show_saturation(console: Console, rows: list[GateSummary], steps: int) -> None:
    console = _wide(console)
    table = Table(title=f"gate saturation over {steps:,} steps", title_justify="left")
    for name, justify in [("layer", "right"), ("gate", "left"), ("left-saturated (<0.1)", "right"),
                          ("right-saturated (>0.9)", "right"), ("units mostly closed", "right"),
                          ("units mostly open", "right")]:  # fmt: skip
        table.add_column(name, justify=justify)
    for row in rows:
        table.add_row(
            str(row.layer), GATE_NAMES.get(row.gate, row.gate), f"{row.mean_left:.0%}", f"{row.mean_right:.0%}",
            f"{row.mostly_closed} of {row.units}", f"{row.mostly_open} of {row.units}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "a unit is 'mostly closed' (open) when its gate is below 0.1 (above 0.9) on more than "
        "half of the steps; the percentages are the mean over units of the fraction of steps",
        markup=False, soft_wrap=True,
    )


def show_matches(console: Console, top: list[Match], best: list[Match], absent: list[str], state: str) -> None:
    console = _wide(console)
    table = Table(title=f"units whose activation ({state}) follows the text, by correlation", title_justify="left")
    for name, justify in [("rank", "right"), ("property of the text", "left"), ("unit (layer:unit)", "left"), ("r", "right")]:
        table.add_column(name, justify=justify)
    for rank, match in enumerate(top, 1):
        table.add_row(str(rank), match.feature, match.neuron, f"{match.correlation:+.3f}")
    console.print(table)
    table = Table(title="the best unit for each property", title_justify="left")
    for name, justify in [("property of the text", "left"), ("unit", "left"), ("r", "right")]:
        table.add_column(name, justify=justify)
    for match in best:
        table.add_row(match.feature, match.neuron, f"{match.correlation:+.3f}")
    console.print(table)
    if absent:
        console.print(f"not in this text, so not searched: {', '.join(absent)}", markup=False, soft_wrap=True)


def show_neuron(console: Console, pieces, values) -> None:
    if not colour_on(console):
        console.file.write(plain_lines(pieces, values))
        console.file.write(f"(under each character its value: 0 = -1.0 ... {BUCKETS - 1} = +1.0)\n")
        console.file.flush()
        return
    text = Text()
    for piece, value in zip(pieces, values):
        if piece == "\n":
            text.append("\n")
        else:
            text.append(piece, style=f"black on {colour_of(value)}")
    console.print(text, soft_wrap=True)
    key = Text("key: ")
    for value in (-1.0, -0.5, 0.0, 0.5, 1.0):
        key.append(f" {value:+.1f} ", style=f"black on {colour_of(value)}")
    console.print(key)
