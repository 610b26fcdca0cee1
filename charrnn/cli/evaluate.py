"""`charrnn eval`: bits per character a model assigns to any text."""

from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.shared import CheckpointArgument, BestOption, _thread_governor, _given_path, err, DeviceOption, ThreadsOption, EncodingOption
from charrnn.options import DEFAULTS, DeviceChoice


def evaluate_command(
    checkpoint: CheckpointArgument,
    files: Annotated[list[Path], typer.Argument(parser=_given_path, help="Text files to score, or a named corpus's split, e.g. ptb-char:test.", show_default=False)],
    best: BestOption = False,
    encoding: EncodingOption = DEFAULTS["corpus"]["encoding"],
    device: DeviceOption = DeviceChoice.auto,
    unknown: Annotated[str, typer.Option(metavar="<error|skip>", help="Characters outside the model's vocabulary: error, or skip (leave them out of the text scored, and say how many).")] = DEFAULTS["eval"]["unknown"],
    threads: ThreadsOption = None,
) -> None:
    """Print the bits per character the model assigns to text files, read as one stream (a list's items, for a run trained with --items)."""
    from charrnn.data.corpus import resolve_sources
    from charrnn.data.vocab_kinds import vocab_kind
    from charrnn.device import resolve_device
    from charrnn.errors import ConfigError
    from charrnn.model.evaluation import evaluate
    from charrnn.model.loading import load_model

    if unknown not in ("error", "skip"):
        raise ConfigError("--unknown must be 'error' or 'skip'")
    target = resolve_device(device.value)
    governor = _thread_governor(threads) if target.type == "cpu" else None
    model, vocab, saved = load_model(checkpoint, "best" if best else "last", device.value)
    sources = resolve_sources([str(f) for f in files], encoding=encoding)
    for notice in sources.notices:
        err.print(f"charrnn: warning: {notice}", markup=False)
    advice = "eval cannot score characters the model never saw; pass --unknown skip to leave them out"
    text = vocab_kind(vocab.kind).score_text(sources.train, vocab, encoding, unknown, advice)
    ids, tokens_per_char, skipped = text.ids, text.tokens_per_char, text.skipped
    if len(ids) < 2:
        from charrnn.errors import CorpusError

        left_out = f", after the {skipped:,} outside the vocabulary were left out" if skipped else ""
        raise CorpusError(f"the text to evaluate needs at least 2 characters; {len(ids)} {'is' if len(ids) == 1 else 'are'} left{left_out}")
    delimiter = getattr(saved.corpus, "items_delimiter", None)
    if delimiter is not None and delimiter in vocab.chars:
        from charrnn.model.evaluation import evaluate_items

        # As the run was trained and validated: each item from the zero state.
        nats = evaluate_items(model, ids, vocab.chars.index(delimiter), target)
    else:
        nats = evaluate(model, ids, target, governor=governor) * tokens_per_char
    scored = f"{len(ids) - 1:,} characters" if tokens_per_char == 1.0 else f"{text.chars:,} characters ({len(ids) - 1:,} tokens)"
    left_out = f" ({skipped:,} characters outside the vocabulary left out)" if skipped else ""
    from charrnn.units import nats_to_bpc

    from charrnn.data.unigram import unigram_bpc

    baseline = unigram_bpc(ids, tokens_per_char)
    print(
        f"{nats_to_bpc(nats):.4f} bpc ({nats:.4f} nats/char) over {scored}{left_out}; "
        f"unigram baseline {baseline:.4f} bpc"
    )
