"""`charrnn plot`: learning curves as a PNG or as text."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.cli.shared import err, output_path, ranged


def plot(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", help="Run directories (or metrics.jsonl files); several are drawn on one figure.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--out", parser=output_path, help="PNG to write. \\[default: RUN/curves.png for one run, curves.png for several]", show_default=False)] = None,
    terminal: Annotated[bool, typer.Option("--terminal", help="Draw the curves as text on stdout instead (no display or matplotlib needed); with --out, the PNG too.")] = False,
    x_axis: Annotated[str, typer.Option("--x", metavar="<step|time>", help="Horizontal axis of the text chart: step or time.")] = "step",
    width: Annotated[int, ranged("plot", "width", checked=True, help="Text chart width in characters.")] = 72,
    height: Annotated[int, ranged("plot", "height", checked=True, help="Text chart height in lines.")] = 16,
    gradients: Annotated[bool, typer.Option("--gradients", help="Also draw each group of weights' gradient norm (embedding, weight_ih_l*, weight_hh_l*, decoder; log scale) and the share of recent steps whose gradients were clipped (see docs/training-diagnostics.md).")] = False,
) -> None:
    """Plot train and validation bits per character against steps and wall time."""
    from charrnn.errors import ConfigError
    from charrnn.training.plot import gradient_chart, load_curves, require_gradients, text_chart, write_png

    if x_axis not in ("step", "time"):
        raise ConfigError("--x must be step or time")
    from charrnn.outputs import check_output_file

    inputs = [*runs, *(run / "metrics.jsonl" for run in runs)]
    chosen = output is None and not terminal
    if chosen:
        output = runs[0] / "curves.png" if len(runs) == 1 and runs[0].is_dir() else Path("curves.png")
    if output is not None:
        from charrnn.figures import figure_path

        check_output_file(figure_path(output), "--out", inputs, example="curves.png", default=chosen)
    curves = [load_curves(path) for path in runs]
    if gradients:
        require_gradients(curves)
    if terminal:
        sys.stdout.write(text_chart(curves, x_axis, width, height))
        for run in curves if gradients else ():
            sys.stdout.write("\n" + gradient_chart(run, x_axis, width, height))
        sys.stdout.flush()
        if output is None:
            return
    written = write_png(curves, output, gradients=gradients)
    err.print(f"wrote {written}", markup=False)
