"""`charrnn info`: what a checkpoint holds, as a table or JSON."""

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text


from charrnn.text import shown
from charrnn.cli.shared import CheckpointArgument, BestOption, out


def info(
    checkpoint: CheckpointArgument,
    best: BestOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a checkpoint's model, vocabulary, training progress and best validation bpc."""
    from charrnn import checkpoint as ckpt
    from charrnn.model.loading import load_model

    path = ckpt.resolve(checkpoint, "best" if best else "last")
    model, vocab, saved = load_model(path, device="cpu")
    facts = {
        "checkpoint": shown(path),
        "charrnn_version": saved.version,
        "model": saved.model_config.to_dict(),
        "parameters": model.num_parameters(),
        "vocab_size": len(vocab),
        "vocab": "".join(vocab.chars),
        "step": saved.metrics.step,
        "train_minutes": saved.metrics.elapsed / 60,
        "best_val_bpc": saved.metrics.best_val_bpc,
        "train_config": None if saved.train_config is None else saved.train_config.to_dict(),
        "corpus": None if saved.corpus is None else _printable(saved.corpus.to_dict()),
    }
    if as_json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
        return
    table = Table(show_header=False, box=None)
    for key, value in facts.items():
        if key == "train_minutes":
            key, value = "train_time", _duration(value * 60)
        elif key == "best_val_bpc":
            from charrnn.units import bpc_to_nats

            value = "-" if value is None else f"{value:.4f} bpc ({bpc_to_nats(value):.4f} nats/char)"
        elif key == "vocab":
            value = repr(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={_figure(v)}" for k, v in value.items())
        elif key in ("parameters", "vocab_size", "step") and isinstance(value, int):
            value = f"{value:,}"
        else:
            value = _figure(value)
        table.add_row(Text(key, style="bold"), Text(value))
    out.print(table)


def _printable(value):
    """``value`` with every string as it can be printed: a file name that is not UTF-8 is
    kept in the checkpoint as it is, and shown with its bytes escaped."""
    if isinstance(value, dict):
        return {key: _printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(item) for item in value]
    return shown(value) if isinstance(value, str) else value


def _figure(value) -> str:
    """A float to six significant digits (0.003, not 0.0030000000000000001); full precision
    stays in ``info --json``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"
