"""`charrnn eval`: bits per character a model assigns to any text."""

from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.dynamic import PANEL, DynamicDecay, DynamicLr, DynamicRows, DynamicSeq, dynamic_config
from charrnn.cli.shared import CheckpointArgument, BestOption, _thread_governor, _given_path, err, DeviceOption, ThreadsOption, EncodingOption, EvalPrecisionOption, say_precision
from charrnn.options import DEFAULTS, DeviceChoice, Precision


def evaluate_command(
    checkpoint: CheckpointArgument,
    files: Annotated[list[Path], typer.Argument(parser=_given_path, help="Text files to score, or a named corpus's split, e.g. ptb-char:test.", show_default=False)],
    best: BestOption = False,
    encoding: EncodingOption = DEFAULTS["corpus"]["encoding"],
    device: DeviceOption = DeviceChoice.auto,
    unknown: Annotated[str, typer.Option(metavar="<error|skip>", help="Characters outside the model's vocabulary: error, or skip (leave them out of the text scored, and say how many).")] = DEFAULTS["eval"]["unknown"],
    threads: ThreadsOption = None,
    precision: EvalPrecisionOption = Precision(DEFAULTS["eval"]["precision"]),
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Also score the text dynamically (Krause et al. 2018): a copy of the model learns from each segment after scoring it; prints the static and the dynamic figure. The checkpoint is not changed.", rich_help_panel=PANEL)] = False,
    dynamic_lr: DynamicLr = None,
    dynamic_decay: DynamicDecay = None,
    dynamic_seq: DynamicSeq = None,
    dynamic_rows: DynamicRows = None,
) -> None:
    """Print the bits per character the model assigns to text files, read as one stream (a list's items, for a run trained with --items)."""
    from charrnn.data.corpus import resolve_sources
    from charrnn.data.vocab_kinds import vocab_kind
    from charrnn.device import resolve_device
    from charrnn.errors import ConfigError
    from charrnn.model.loading import load_model
    from charrnn.precision import resolve_inference_precision

    if unknown not in ("error", "skip"):
        raise ConfigError("--unknown must be 'error' or 'skip'")
    config = dynamic_config(dynamic_lr, dynamic_decay, dynamic_seq, dynamic_rows, "eval" if dynamic else None)
    target = resolve_device(device.value)
    dtype = resolve_inference_precision(precision.value, target, probed=False)
    governor = _thread_governor(threads) if target.type == "cpu" else None
    model, vocab, saved = load_model(checkpoint, "best" if best else "last", device.value)
    delimiter = getattr(saved.corpus, "items_delimiter", None)
    items = delimiter is not None and delimiter in vocab.chars
    if items and config is not None:
        raise ConfigError("--dynamic reads the text as one stream, and a run trained with --items is scored item by item from the zero state: drop --dynamic")
    sources = resolve_sources([str(f) for f in files], encoding=encoding)
    for notice in sources.notices:
        err.print(f"charrnn: warning: {notice}", markup=False)
    advice = "eval cannot score characters the model never saw; pass --unknown skip to leave them out"
    text = vocab_kind(vocab.kind).score_text(sources.train, vocab, encoding, unknown, advice)
    if len(text.ids) < 2:
        from charrnn.errors import CorpusError

        left_out = f", after the {text.skipped:,} outside the vocabulary were left out" if text.skipped else ""
        raise CorpusError(f"the text to evaluate needs at least 2 characters; {len(text.ids)} {'is' if len(text.ids) == 1 else 'are'} left{left_out}")
    say_precision(precision.value, dtype, target)
    if config is not None:
        _evaluate_dynamically(model, vocab, saved, text, config, target, governor, dtype, precision.value)
        return
    if items:
        from charrnn.model.evaluation import evaluate_items

        # As the run was trained and validated: each item from the zero state.
        nats = evaluate_items(model, text.ids, vocab.chars.index(delimiter), target, dtype=dtype)
    else:
        from charrnn.model.evaluation import evaluate

        nats = evaluate(model, text.ids, target, governor=governor, dtype=dtype) * text.tokens_per_char
    from charrnn.units import nats_to_bpc

    print(f"{nats_to_bpc(nats):.4f} bpc ({nats:.4f} nats/char) over {_scored(text, len(text.ids) - 1)}; unigram baseline {_baseline(text):.4f} bpc")


def _scored(text, tokens: int) -> str:
    """How much was scored, in characters (and tokens where they differ), and what was left out."""
    if text.tokens_per_char == 1.0:
        scored = f"{tokens:,} characters"
    else:
        chars = text.chars if tokens == len(text.ids) - 1 else round(tokens / text.tokens_per_char)
        scored = f"{chars:,} characters ({tokens:,} tokens)"
    return scored + (f" ({text.skipped:,} characters outside the vocabulary left out)" if text.skipped else "")


def _baseline(text) -> float:
    from charrnn.data.unigram import unigram_bpc

    return unigram_bpc(text.ids, text.tokens_per_char)


def _evaluate_dynamically(model, vocab, saved, text, config, target, governor, dtype, precision: str) -> None:
    """Static and dynamic figures over what the dynamic pass scored (all of it unless a Ctrl-C
    stopped it): both on one line, their times on stderr. ``dtype``: the static figure's
    precision (``auto``: fp32, the model's exact figure); ``precision``: the choice the
    dynamic pass resolves for itself (``auto``: the faster, timed)."""
    from charrnn.cli.dynamic import adapt
    from charrnn.cli.errors import EXIT_INTERRUPTED, fail
    from charrnn.precision import DTYPE_NAMES
    from charrnn.units import nats_to_bpc

    adaptation = adapt(model, vocab, saved, text.ids, config, target, precision, static_dtype=dtype, governor=governor)
    score, dynamic_dtype = adaptation.score, adaptation.dtype
    static_seconds, static_cpu = adaptation.static_seconds, adaptation.static_cpu_seconds
    static = score.static_mean * text.tokens_per_char
    dynamic = score.mean * text.tokens_per_char
    gain = nats_to_bpc(dynamic) - nats_to_bpc(static)
    line = (
        f"static {nats_to_bpc(static):.4f} bpc, dynamic {nats_to_bpc(dynamic):.4f} bpc ({gain:+.4f}) "
        f"over {_scored(text, score.tokens)}; unigram baseline {_baseline(text):.4f} bpc"
    )
    if score.stopped:
        # The static pass read the whole text, the dynamic one a part: no ratio between them.
        times = (
            f"time: static {static_seconds:.2f} s (the whole text), dynamic {score.seconds:.2f} s (the part scored); "
            f"CPU time: static {static_cpu:.2f} s, dynamic {score.cpu_seconds:.2f} s; "
        )
    else:
        times = (
            f"time: static {static_seconds:.2f} s, dynamic {score.seconds:.2f} s "
            f"({score.seconds / max(static_seconds, 1e-9):.1f}x static); CPU time: static {static_cpu:.2f} s, "
            f"dynamic {score.cpu_seconds:.2f} s ({score.cpu_seconds / max(static_cpu, 1e-9):.1f}x); "
        )
    err.print(
        f"{times}"
        f"lr {config.lr:g}, decay {config.decay:g}, segments of {config.seq}{f' in {config.rows} rows' if config.rows > 1 else ''}"
        f"{f', dynamic in {DTYPE_NAMES[dynamic_dtype]}' if dynamic_dtype != dtype else ''}",
        markup=False,
    )
    print(line, flush=True)
    if score.stopped:
        fail(f"charrnn: interrupted: the figures above are over the first {score.tokens:,} of {len(text.ids) - 1:,} tokens", EXIT_INTERRUPTED)
