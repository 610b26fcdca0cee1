"""``charrnn bench --export RUN``: what each export format costs and gives, on the run's own
validation text, beside the FastStepper (what ``charrnn sample`` runs at batch 1) measured in
the same process.

For each format the model is exported (into a scratch directory), loaded back by the format's
own runtime, and stepped at batch 1 over the first ``chars`` characters of the run's
validation text, one token at a time from the zero state, as a stream. That one pass gives
the latency per character (the fastest block of steps, since other work on the machine only
ever slows a block down) and the bits per character the export assigns to the text; the
FastStepper's pass over the same text gives the checkpoint's figure. Every runtime runs on
one thread.

The C rows: ``charrnn.export.c_model.export_c`` writes each C build (float32, int8, float16)
and ``c_model.measure`` compiles it, times its steps at batch 1 (each with a draw) and scores
the same validation text; its size is the compiled program's, weights inside. A build without
the C model leaves those rows out with a note.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from charrnn.errors import CharRNNError, CorpusError

# Steps timed together: a block is long enough for the clock, short enough that one burst of
# other work on the machine spoils only a few of them.
BLOCK = 100
# (format, quantize) rows after the reference, in the order of the table.
ROWS = (("pt2", None), ("onnx", None), ("onnx", "int8"))
C_QUANTIZE = (None, "int8", "float16")


@dataclass
class ExportRow:
    name: str  # "FastStepper (reference)", "pt2", "onnx int8", ...
    size_bytes: int | None
    seconds_per_char: float
    bpc: float
    bpc_change: float  # against the checkpoint's (the reference row's) on the same text

    @property
    def chars_per_s(self) -> float:
        return 1.0 / self.seconds_per_char


@dataclass
class RunFigures:
    run: str
    model: str  # "LSTM 2x256, 65 chars"
    parameters: int
    checkpoint_bytes: int
    chars: int  # characters of validation text stepped through
    best_val_bpc: float | None  # as training logged it, over the whole validation text
    rows: list[ExportRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportBenchResult:
    runs: list[RunFigures] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        for run, figures in zip(data["runs"], self.runs):
            for row, measured in zip(run["rows"], figures.rows):
                row["chars_per_s"] = measured.chars_per_s
        return data


def validation_text(saved, chars: int) -> str:
    """The first ``chars`` characters of the run's validation text."""
    from charrnn.generation.copying import reference_texts

    unseen = reference_texts(saved.corpus).unseen
    if not unseen:
        raise CorpusError("the run has no validation text to measure the exports on (it was trained with --val-frac 0)")
    return unseen[:chars]


def _timed_pass(step: Callable[[np.ndarray], np.ndarray], ids: np.ndarray) -> tuple[float, float]:
    """Feed ``ids[:-1]`` one at a time through ``step`` (id (1, 1) -> logits (1, V), keeping
    its own state): (seconds per step of the fastest block, summed nats of ``ids[1:]``)."""
    nats = 0.0
    best = math.inf
    for start in range(0, len(ids) - 1, BLOCK):
        block = ids[start : start + BLOCK + 1]
        rows = []
        began = time.perf_counter()
        for token in block[:-1]:
            rows.append(step(np.array([[token]], dtype=np.int64)))
        best = min(best, (time.perf_counter() - began) / (len(block) - 1))
        logits = np.concatenate(rows).astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        nats -= float(log_probs[np.arange(len(block) - 1), block[1:]].sum())
    return best, nats


def _stateful(step, state: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A ``StepFunction`` that carries its own state, for ``_timed_pass``."""
    held = [state]

    def advance(ids: np.ndarray) -> np.ndarray:
        logits, held[0] = step(ids, held[0])
        return logits

    return advance


def _fast_stepper(model) -> Callable[[np.ndarray], np.ndarray]:
    from charrnn.generation.stepper import FastStepper

    stepper = FastStepper(model)
    state = stepper.initial_state(1)
    return lambda ids: stepper.advance(ids[0], state).copy()


def measure_run(run: Path, chars: int, progress: Callable[[str], None] = lambda message: None) -> RunFigures:
    from charrnn import checkpoint as ckpt
    from charrnn.export.formats import FORMATS, export_model, load_step
    from charrnn.export.step import zero_state
    from charrnn.model.loading import load_model
    from charrnn.units import LN2

    path = ckpt.resolve(run, "last")
    model, vocab, saved = load_model(path, device="cpu")
    config = model.config
    text = validation_text(saved, chars)
    ids, text_chars = np.asarray(vocab.encode(text), dtype=np.int64), len(text)
    figures = RunFigures(
        run=str(run),
        model=f"{config.cell.upper()} {config.layers}x{config.hidden}, {len(vocab)} {vocab.kind}",
        parameters=model.num_parameters(),
        checkpoint_bytes=path.stat().st_size,
        chars=text_chars,
        best_val_bpc=saved.metrics.best_val_bpc,
    )
    tokens_per_char = (len(ids) - 1) / max(text_chars - 1, 1)

    def row(name: str, size: int | None, seconds_per_token: float, nats: float) -> ExportRow:
        bpc = nats / LN2 / max(text_chars - 1, 1)
        reference = figures.rows[0].bpc if figures.rows else bpc
        return ExportRow(name, size, seconds_per_token * tokens_per_char, bpc, bpc - reference)

    progress(f"{run}: FastStepper (reference), {text_chars:,} validation characters at batch 1")
    figures.rows.append(row("FastStepper (reference)", None, *_timed_pass(_fast_stepper(model), ids)))

    with tempfile.TemporaryDirectory(prefix="charrnn-bench-export-") as scratch:
        for file_format, quantize in ROWS:
            name = file_format if quantize is None else f"{file_format} {quantize}"
            progress(f"{run}: {name}: export, then {text_chars:,} characters at batch 1")
            output = Path(scratch) / f"{name.replace(' ', '-')}{FORMATS[file_format].suffix}"
            try:
                report = export_model(file_format, model, vocab, output, quantize)
            except CharRNNError as exc:
                figures.notes.append(f"{name}: {exc}")
                continue
            step = _stateful(load_step(file_format, output), zero_state(model, 1).numpy())
            figures.rows.append(row(name, report.size_bytes, *_timed_pass(step, ids)))
        _measure_c(model, vocab, text, Path(scratch), figures, progress)
    return figures


def _measure_c(model, vocab, text: str, scratch: Path, figures: RunFigures, progress) -> None:
    """The C rows: each C build written by ``export_c``, then compiled, timed and made to
    score ``text`` by ``c_model.measure``."""
    from charrnn.export.formats import c_model

    try:
        module = c_model()
    except CharRNNError as exc:
        figures.notes.append(f"c: left out: {exc}")
        return
    reference = figures.rows[0].bpc
    flags = None
    for quantize in C_QUANTIZE:
        name = "c" if quantize is None else f"c {quantize}"
        progress(f"{figures.run}: {name}: export, build, then {figures.chars:,} characters at batch 1")
        try:
            report = module.export_c(model, vocab, scratch / f"{name.replace(' ', '-')}.c", quantize)
            measured = module.measure(report.paths[0], text=text)
        except CharRNNError as exc:
            figures.notes.append(f"{name}: {exc}")
            continue
        # The size of what ships: the compiled program, weights inside.
        figures.rows.append(ExportRow(name, measured.program_bytes, measured.seconds_per_char, measured.bpc, measured.bpc - reference))
        flags = measured.flags
    if flags is not None:
        figures.notes.append(f"c: size is the compiled program, weights inside; built with {' '.join(flags)}")


def run_export_bench(runs: list[Path], chars: int, progress: Callable[[str], None] = lambda message: None) -> ExportBenchResult:
    from charrnn.threads import set_threads

    # Batch 1 is a few matrix-vector products per token: one thread, as `charrnn sample` runs
    # a single stream, for every runtime alike.
    set_threads(1)
    result = ExportBenchResult()
    for run in runs:
        result.runs.append(measure_run(Path(run), chars, progress))
    return result
