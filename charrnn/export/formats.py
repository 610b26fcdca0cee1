"""One entry point for every export format: which formats there are, what each takes, where
each writes by default, and the writer that makes it. Every writer returns an
``ExportReport`` (``charrnn.export.report``).

| format | file | runs with | quantize |
|---|---|---|---|
| pt2 (default) | model.pt2 | torch (``torch.export.load``) | none |
| onnx | model.onnx | onnxruntime, any language | int8 |
| c | model.c (and what the C writer adds) | a C99 compiler, libc and libm | int8, float16 |

pt2 is the default: it needs nothing beyond torch (which charrnn has), and it takes every
cell and vocabulary kind. ONNX needs the optional packages of ``charrnn[export]``.

A retired format (``RETIRED``: torchscript) stays a choice of ``--format`` and is refused by
``check_request``, with what to use instead, before anything is read or written.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from charrnn.errors import ConfigError, ExportError
from charrnn.outputs import check_output_directory, check_output_file
from charrnn.export.packages import require_onnx
from charrnn.export.report import ExportReport
from charrnn.options import DEFAULTS

if TYPE_CHECKING:
    from charrnn.model.network import CharRNN


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str  # of the default file name: model<suffix>
    quantizations: tuple[str, ...]
    description: str


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("pt2", ".pt2", (), "torch.export program, loads with torch.export.load"),
        ExportFormat("onnx", ".onnx", ("int8",), "ONNX, runs with onnxruntime"),
        ExportFormat("c", ".c", ("int8", "float16"), "one C99 source file, no dependency beyond libc and libm"),
    )
}
# Formats charrnn no longer writes, each with why and what to use instead.
RETIRED: dict[str, str] = {
    "torchscript": "torch deprecates TorchScript; use --format pt2 (torch.export, loads with torch alone) or --format c",
}
DEFAULT_FORMAT = DEFAULTS["export"]["format"]


def default_output(file_format: str, checkpoint: Path, run_directory: bool) -> Path:
    """RUN/model<suffix> for a run directory, CHECKPOINT<suffix> beside a checkpoint file."""
    suffix = FORMATS[file_format].suffix
    return checkpoint.parent / (f"model{suffix}" if run_directory else f"{checkpoint.stem}{suffix}")


def check_request(file_format: str, quantize: str | None) -> None:
    """What the options alone show to be wrong, before a checkpoint is read."""
    if file_format in RETIRED:
        raise ConfigError(f"--format {file_format} is retired: {RETIRED[file_format]}")
    if file_format not in FORMATS:
        raise ExportError(f"unknown format {file_format!r}; choose one of {', '.join(FORMATS)}")
    taken = FORMATS[file_format].quantizations
    if quantize is not None and quantize not in taken:
        what = f"takes --quantize {' or '.join(taken)}" if taken else "has no quantized form"
        others = ", ".join(f"{f.name} ({' or '.join(f.quantizations)})" for f in FORMATS.values() if f.quantizations)
        raise ConfigError(f"--format {file_format} {what}, not {quantize}; quantized exports: {others}")


def check_output(file_format: str, output: Path, inputs: tuple[Path, ...] | list[Path] = (), default: bool = False) -> None:
    """Refuse an output the format cannot use, or one that must not be written (an input, a
    checkpoint, a special file), before anything is exported."""
    output = Path(output)
    if file_format == "c" and output.suffix != ".c":
        # The C writer takes a directory to put model.c in (created if needed).
        check_output_directory(output, "--out", inputs, what="for the C source")
        if output.is_dir():
            check_output_file(output / c_model().SOURCE_NAME, "--out", inputs, default=default)
        return
    # Like the C writer's directory, a missing directory for the file is created.
    check_output_file(output, "--out", inputs, example=f"model{FORMATS[file_format].suffix}", default=default, create_parent=True)
    if file_format == "pt2" and output.suffix != ".pt2":
        # torch.export.load refuses any other name ("a file ending in .pt2, or a buffer").
        raise ConfigError(f"--format pt2 writes a .pt2 file (torch.export.load reads no other name): --out {output.with_suffix('.pt2')}")


def require_format(file_format: str) -> None:
    """The packages or modules ``file_format`` needs, checked before any checkpoint is read
    (one line naming what to install)."""
    if file_format == "onnx":
        require_onnx()
    elif file_format == "c":
        c_model()


def export_model(
    file_format: str,
    model: CharRNN,
    vocab,
    output: Path,
    quantize: str | None = None,
    source: dict | None = None,
) -> ExportReport:
    """Write ``model`` and ``vocab`` in ``file_format`` to ``output``, check it, and report."""
    check_request(file_format, quantize)
    output = Path(output)
    check_output(file_format, output)
    if file_format != "c":
        output.parent.mkdir(parents=True, exist_ok=True)
    if file_format == "pt2":
        from charrnn.export.pt2 import export_pt2

        return export_pt2(model, vocab, output, source)
    if file_format == "onnx":
        from charrnn.export.onnx_model import export_onnx

        return export_onnx(model, vocab, output, quantize, source)
    return c_model().export_c(model, vocab, output, quantize)


def c_model():
    """The C writer, ``charrnn.export.c_model``, imported when asked for."""
    try:
        return importlib.import_module("charrnn.export.c_model")
    except ModuleNotFoundError as exc:
        if exc.name != "charrnn.export.c_model":
            raise
        raise ExportError("--format c is not part of this charrnn build (charrnn.export.c_model is missing)") from None


_RUNTIMES = {"pt2": "charrnn.export.pt2", "onnx": "charrnn.export.onnx_model"}


def load_step(file_format: str, path: Path):
    """An exported file's step, run by its own runtime, as a ``StepFunction`` on numpy arrays
    (``charrnn.export.check``); the C model is run by ``charrnn.export.c_model`` itself."""
    return importlib.import_module(_RUNTIMES[file_format]).load_step(path)
