"""`charrnn gradients`: how the gradient fades over the steps before the loss."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.cli.shared import RunArgument, BestOption, err, out, _generation_threads, output_path, read_inputs, _note_no_png, ranged, ReplayThreadsOption, EncodingOption
from charrnn.options import DEFAULTS


def gradients(
    checkpoint: RunArgument,
    text: Annotated[Optional[Path], typer.Option(help="Text whose first characters make the window. \\[default: the run's training text]", show_default=False)] = None,
    steps: Annotated[int, ranged("gradients", "steps", checked=True, help="Steps in the window: the gradient is followed this far back.")] = DEFAULTS["gradients"]["steps"],
    compare: Annotated[bool, typer.Option("--compare", help="Also draw a plain RNN, a GRU, an LSTM with forget bias 1 (charrnn's) and one with forget bias 0, all of this architecture at initialisation, on the same text.")] = False,
    png: Annotated[Optional[Path], typer.Option(parser=output_path, metavar="<path>", help="Also draw the norms (log scale) in this PNG.", show_default=False)] = None,
    seed: Annotated[int, ranged("gradients", "seed", checked=True, help="Seed of the weights drawn for the models at initialisation.")] = DEFAULTS["gradients"]["seed"],
    best: BestOption = False,
    encoding: EncodingOption = DEFAULTS["corpus"]["encoding"],
    threads: ReplayThreadsOption = None,
) -> None:
    """Show how the gradient of the loss at the last step fades over the steps before it: trained against initialisation, or several cells compared."""
    from charrnn.cli.inspect_views import show_gradients
    from charrnn.inspect.gradients import compare_cells, fresh_model, gradient_flow
    from charrnn.inspect.plots import gradients_png
    from charrnn.inspect.text import read_text
    from charrnn.model.loading import load_model
    from charrnn.model.network import ModelConfig

    from charrnn.figures import figure_path
    from charrnn.outputs import check_output_files

    _generation_threads(threads, paced=False)
    model, vocab, saved = load_model(checkpoint, "best" if best else "last", "cpu")
    check_output_files([(png and figure_path(png), "--png", "gradients.png")], read_inputs(checkpoint, best, text, saved))
    from charrnn.inspect.gradients import COMPARED, check_gradient_memory

    config = model.config
    check_gradient_memory(config, steps, [cell for _, cell, _ in COMPARED] if compare else None)
    window = read_text(text, saved, vocab, steps + 1, encoding, at_least=2, option="--steps")
    if len(window) < steps + 1:
        err.print(f"charrnn: {window.source} has {len(window)} characters: the window is {len(window) - 1} step(s)", markup=False)
    flows = [gradient_flow(model, window.ids, f"trained (step {saved.metrics.step:,})")]
    if compare:
        flows += compare_cells(config, window.ids, seed)
    else:
        bare = ModelConfig(config.vocab_size, config.cell, config.layers, config.hidden, config.embed, 0.0)
        flows.append(gradient_flow(fresh_model(bare, seed), window.ids, "at initialisation"))
    show_gradients(out, flows, f"{len(window) - 1} characters of {Path(window.source).name}")
    if _note_no_png(png):
        shape = f"{config.cell.upper()} {config.layers}x{config.hidden}"
        written = gradients_png(flows, png, f"{shape}: gradient of the last step's loss, {len(window) - 1} steps of {Path(window.source).name}")
        err.print(f"wrote {written}", markup=False)
