"""`charrnn inspect`: gate saturation, one unit over a text, units that follow structure, state dumps."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.cli.shared import RunArgument, BestOption, err, out, _generation_threads, output_path, read_inputs, INSPECT, WHAT_TO_SHOW, _note_no_png, ranged, ReplayThreadsOption, EncodingOption
from charrnn.options import DEFAULTS


def inspect_command(
    checkpoint: RunArgument,
    text: Annotated[Optional[Path], typer.Option(help="Text to read. \\[default: the run's training text]", show_default=False)] = None,
    chars: Annotated[int, ranged("inspect", "chars", checked=True, help="Characters of the text to read (from its start).")] = INSPECT["chars"],
    gates: Annotated[bool, typer.Option("--gates", help="Gate saturation: per layer and gate, the fraction of steps each unit is below 0.1 or above 0.9 (LSTM, GRU).", rich_help_panel=WHAT_TO_SHOW)] = False,
    neuron: Annotated[Optional[str], typer.Option(metavar="L:N", help="Colour the text by unit N of layer L (both from 0).", rich_help_panel=WHAT_TO_SHOW, show_default=False)] = None,
    find: Annotated[bool, typer.Option("--find", "--search", help="Rank the units whose activation best follows properties of the text: inside quotes, inside brackets, position in the line, indentation, start of a word.", rich_help_panel=WHAT_TO_SHOW)] = False,
    dump_states: Annotated[Optional[Path], typer.Option("--dump-states", parser=output_path, metavar="FILE.npz", help="Write every layer's per-step states (and gates) to a numpy .npz file (layout in docs/inspect.md).", rich_help_panel=WHAT_TO_SHOW, show_default=False)] = None,
    html: Annotated[Optional[Path], typer.Option(parser=output_path, metavar="<path>", help="With --neuron: also write the coloured text as one self-contained HTML page.", show_default=False)] = None,
    png: Annotated[Optional[Path], typer.Option(parser=output_path, metavar="<path>", help="Also draw a PNG: with --gates the saturation plot (one dot per unit), with --neuron the coloured text (its first 40 lines).", show_default=False)] = None,
    state: Annotated[str, typer.Option(metavar="<h|c>", help="Which activation --neuron and --find read: h (the hidden state), or c (an LSTM's cell state, through tanh).")] = INSPECT["state"],
    top: Annotated[int, ranged("inspect", "top", checked=True, help="With --find: how many units to list.")] = INSPECT["top"],
    best: BestOption = False,
    encoding: EncodingOption = DEFAULTS["corpus"]["encoding"],
    threads: ReplayThreadsOption = None,
) -> None:
    """Look inside the network on a text: gate saturation, one unit over the text, the units that follow its structure, the states themselves."""
    from charrnn.errors import ConfigError

    _check_what_to_show(gates, neuron, find, dump_states, html, png, state)

    from charrnn.cli.inspect_views import show_matches, show_saturation
    from charrnn.inspect.neurons import best_per_feature, find_units, parse_neuron
    from charrnn.inspect.plots import saturation_png
    from charrnn.inspect.replayed import replay_text
    from charrnn.inspect.saturation import check_has_gates, gate_saturation, summarise
    from charrnn.inspect.states import dump_states as write_states
    from charrnn.inspect.text import read_text
    from charrnn.model.loading import load_model

    _generation_threads(threads, paced=False)
    model, vocab, saved = load_model(checkpoint, "best" if best else "last", "cpu")
    from charrnn.figures import figure_path
    from charrnn.outputs import check_output_files

    outputs = [(html, "--html", "neuron.html"), (png and figure_path(png), "--png", "gates.png"), (dump_states, "--dump-states", "states.npz")]
    check_output_files(outputs, read_inputs(checkpoint, best, text, saved))
    config = model.config
    if gates:
        check_has_gates(config.cell)
    from charrnn.cells import CELLS

    if state == "c" and not CELLS[config.cell].has_cell_state:
        raise ConfigError(f"--state c: a {config.cell.upper()} has no cell state; use --state h")
    unit = parse_neuron(neuron, config.layers, config.hidden) if neuron is not None else None
    from charrnn.inspect.replayed import replay_bytes_per_char

    keeps = replay_bytes_per_char(config.cell, config.layers, config.hidden)
    read = read_text(text, saved, vocab, chars, encoding, option="--chars", keeps_per_char=keeps)
    replayed = replay_text(model, read.ids)
    name = Path(read.source).name
    if dump_states is not None:
        written = write_states(replayed, read.ids, read.pieces, dump_states)
        err.print(f"wrote {written} ({config.layers} layers x {len(read):,} steps x {config.hidden} units)", markup=False)
    if gates:
        saturation = gate_saturation(replayed)
        show_saturation(out, summarise(saturation), saturation.steps)
        if _note_no_png(png):
            title = f"{config.cell.upper()} {config.layers}x{config.hidden}: gate saturation over {len(read):,} characters of {name}"
            err.print(f"wrote {saturation_png(saturation, png, title)}", markup=False)
    if find:
        matches, absent = find_units(replayed, read.pieces, state, top)
        show_matches(out, matches, best_per_feature(replayed, read.pieces, state), absent, state)
    if unit is not None:
        _show_unit(config, read, replayed, unit, state, html, png)


def _show_unit(config, read, replayed, unit: tuple[int, int], state: str, html: Optional[Path], png: Optional[Path]) -> None:
    """One unit over the text: its range on stderr, the coloured text on stdout, and the HTML
    page and PNG asked for."""
    from charrnn.cli.inspect_views import show_neuron
    from charrnn.inspect.neurons import state_for
    from charrnn.inspect.plots import neuron_png
    from charrnn.inspect.render import write_html

    name = Path(read.source).name
    layer, index = unit
    values = state_for(replayed, state)[layer, :, index]
    err.print(
        f"unit {layer}:{index} ({state}) over {len(read):,} characters of {name}: "
        f"min {values.min():+.2f}, mean {values.mean():+.2f}, max {values.max():+.2f}",
        markup=False,
    )
    show_neuron(out, read.pieces, values)
    if html is not None:
        legend = f"{config.cell.upper()} {config.layers}x{config.hidden}, unit {layer}:{index} ({state}); red positive, blue negative; hover for the value"
        written = write_html(html, read.pieces, values, f"unit {layer}:{index} over {name}", legend)
        err.print(f"wrote {written}", markup=False)
    if _note_no_png(png):
        title = f"{config.cell.upper()} {config.layers}x{config.hidden}, unit {layer}:{index} ({state}) over {name}: red positive, blue negative"
        err.print(f"wrote {neuron_png(read.pieces, values, png, title)}", markup=False)


def _check_what_to_show(gates: bool, neuron: Optional[str], find: bool, dump_states: Optional[Path], html: Optional[Path], png: Optional[Path], state: str) -> None:
    """Refuse a request that shows nothing, or asks for a picture of what it does not show."""
    from charrnn.errors import ConfigError

    if not (gates or neuron or find or dump_states):
        raise ConfigError("choose what to show: --gates, --neuron L:N, --find or --dump-states FILE.npz")
    if html is not None and neuron is None:
        raise ConfigError("--html draws one unit over the text; give it with --neuron L:N")
    if png is not None and gates == (neuron is not None):
        raise ConfigError("--png draws one picture: the gate saturation plot (with --gates) or one unit over the text (with --neuron L:N); give one of them")
    if state not in ("h", "c"):
        raise ConfigError(f"--state must be h or c, not {state!r}")
