"""What `eval --dynamic` and `sample --adapt` share: the options of the update, and one
adaptation run (gradient statistics from the run's training text, then the text scored
segment by segment, each scored before the model learns from it), stopped by a first Ctrl-C
with the figure so far."""

from typing import TYPE_CHECKING, Annotated, NamedTuple, Optional

from charrnn.cli.shared import err, ranged
from charrnn.options import DEFAULTS

if TYPE_CHECKING:
    import torch

    from charrnn.model.dynamic import DynamicScore
    from charrnn.model.network import CharRNN

DYNAMIC = DEFAULTS["dynamic"]
PANEL = "Dynamic evaluation"

DynamicLr = Annotated[
    Optional[float],
    ranged("dynamic", "lr", help=f"Step size of the dynamic update, in units of the training gradients' RMS. \\[default: {DYNAMIC['lr']:g} x the square root of --dynamic-rows]", show_default=False, rich_help_panel=PANEL),
]
DynamicDecay = Annotated[
    Optional[float],
    ranged("dynamic", "decay", help=f"Pull back toward the trained weights at each update, scaled per weight by its RMS gradient. \\[default: {DYNAMIC['decay']:g}]", show_default=False, rich_help_panel=PANEL),
]
DynamicSeq = Annotated[
    Optional[int],
    ranged("dynamic", "seq", help=f"Characters per segment: scored, then one update from its gradient. \\[default: {DYNAMIC['seq']}]", show_default=False, rich_help_panel=PANEL),
]

DynamicRows = Annotated[
    Optional[int],
    ranged("dynamic", "rows", help=f"Rows of the text read side by side (in blocks of {DYNAMIC['row_chars']:,} characters a row), one update per segment of them all: 1 is the paper's single stream; more cost less on a CPU for a smaller gain. \\[default: {DYNAMIC['rows']}]", show_default=False, rich_help_panel=PANEL),
]


def dynamic_config(lr: Optional[float], decay: Optional[float], seq: Optional[int], rows: Optional[int], mode: Optional[str]):
    """The update's settings; options given without the mode that uses them (``mode`` is
    None) are refused."""
    from charrnn.errors import ConfigError
    from charrnn.model.dynamic import DynamicConfig

    given = {"--dynamic-lr": lr, "--dynamic-decay": decay, "--dynamic-seq": seq, "--dynamic-rows": rows}
    named = [name for name, value in given.items() if value is not None]
    if mode is None:
        if named:
            raise ConfigError(f"{', '.join(named)} set{'s' if len(named) == 1 else ''} the dynamic update: give --dynamic (eval) or --adapt FILE (sample) too, or drop {'it' if len(named) == 1 else 'them'}")
        return None
    chosen = {"lr": lr, "decay": decay, "seq": seq, "rows": rows}
    return DynamicConfig(**{k: v for k, v in chosen.items() if v is not None})


class Adaptation(NamedTuple):
    score: "DynamicScore"  # with the static figure over the same tokens
    model: "CharRNN"  # the adapted copy
    dtype: "torch.dtype"  # the dynamic pass's precision
    static_seconds: float  # the static pass's wall-clock time
    static_cpu_seconds: float  # and its CPU time


def adapt(model, vocab, saved, ids, config, target, precision: str = "fp32", static_dtype=None, governor=None) -> Adaptation:
    """The static reading first (each character's nats, ``token_nats``, in ``static_dtype``,
    fp32 by default), then gradient statistics, then ``ids`` scored dynamically on a copy of
    ``model``. A first Ctrl-C (or SIGTERM) stops the dynamic pass between segments; the score
    says how far it got, with the static figure over the same tokens at once. ``precision``:
    the dynamic pass's ``--precision`` (``auto``: timed, ``choose_precision``)."""
    import time

    import numpy as np
    import torch

    from charrnn.cli.signals import graceful_stop
    from charrnn.memory import require_memory
    from charrnn.model.dynamic import choose_precision, dynamic_evaluate, dynamic_memory, gradient_stats, training_sample
    from charrnn.model.evaluation import token_nats
    from charrnn.precision import DTYPE_NAMES, resolve_inference_precision

    held = 0 if isinstance(ids, np.memmap) else int(ids.nbytes)
    require_memory(
        dynamic_memory(model.config, config, held, tokens=len(ids) - 1),
        "dynamic evaluation",
        "it holds seven copies of the model's weights and a segment's activations for each row; "
        f"use a smaller model, a shorter --dynamic-seq{' or fewer --dynamic-rows' if config.rows > 1 else ''}",
        target,
    )
    # What can be refused is refused before any work: a run whose text is gone, a precision.
    sample = training_sample(saved.corpus, vocab, config.stats_chars)
    dtype = resolve_inference_precision(precision, target)
    started, cpu_started = time.perf_counter(), time.process_time()
    static = token_nats(model, ids, target, governor=governor, dtype=static_dtype or torch.float32)
    static_seconds, static_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    err.print(f"static pass: {len(static):,} tokens in {static_seconds:.1f} s", markup=False)
    if dtype is None:
        dtype, probe = choose_precision(model, ids, config, target)
        if probe is not None:
            speeds = ", ".join(f"{DTYPE_NAMES[d]} {1e3 * s:,.1f} ms" for d, s in probe.items())
            err.print(f"dynamic pass: {DTYPE_NAMES[dtype]} (auto: a segment's forward and backward took {speeds})", markup=False)
    stats = gradient_stats(model, sample, config.seq, config.stats_batch, target, dtype)
    err.print(
        f"gradient statistics: {stats.tokens:,} tokens of the training text ({stats.windows} windows of "
        f"{stats.rows}x{stats.tokens // max(stats.rows * stats.windows, 1)}) in {stats.seconds:.1f} s",
        markup=False,
    )
    stop = {"asked": False}

    def request_stop(signum: int) -> None:
        stop["asked"] = True

    with graceful_stop(request_stop):
        score, adapted = dynamic_evaluate(model, ids, stats, config, target, should_stop=lambda: stop["asked"], dtype=dtype, static=static)
    return Adaptation(score, adapted, dtype, static_seconds, static_cpu_seconds)
