"""`charrnn export`: the model as a file that runs without charrnn."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.cli.shared import CheckpointArgument, BestOption, err, _default, output_path
from charrnn.options import DEFAULTS, ExportFormatName, Quantization

EXPORT = DEFAULTS["export"]
FORMAT_HELP = (
    "pt2: torch.export, loads with torch alone; onnx: onnxruntime in any language (needs the "
    "optional onnx, onnxscript and onnxruntime); c: one C99 source file, libc and libm only; torchscript: "
    f"retired (torch deprecates it), refused. {_default('export', 'format')}"
)
QUANTIZE_HELP = (
    "Smaller weights: int8 for onnx (onnxruntime's dynamic quantization; a GRU's recurrent "
    "layers stay float32) and c (a scale per row); float16 for c. \\[default: none (float32 weights)]"
)


def export(
    checkpoint: CheckpointArgument,
    file_format: Annotated[ExportFormatName, typer.Option("--format", help=FORMAT_HELP, show_default=False)] = ExportFormatName(EXPORT["format"]),
    quantize: Annotated[Optional[Quantization], typer.Option(help=QUANTIZE_HELP, show_default=False)] = EXPORT["quantize"],
    output: Annotated[Optional[Path], typer.Option("--out", parser=output_path, metavar="<path>", help="File to write (its directory is created if needed); for --format c a directory (created if needed, receives model.c) or a path ending in .c. \\[default: RUN/model.pt2, model.onnx or model.c, or beside the checkpoint file]", show_default=False)] = None,
    best: BestOption = False,
) -> None:
    """Write the model, its vocabulary and shape as a file that runs without charrnn, check it
    against the checkpoint, and say its size and the check on stderr."""
    from charrnn.export.formats import FORMATS, check_output, check_request, default_output, export_model, require_format

    name = file_format.value
    quantize_name = None if quantize is None else quantize.value
    check_request(name, quantize_name)
    require_format(name)  # before torch is imported: a missing package is named at once
    from charrnn import checkpoint as ckpt
    from charrnn.model.loading import load_model

    path = ckpt.resolve(checkpoint, "best" if best else "last")
    chosen = output is None
    if chosen:
        output = default_output(name, path, checkpoint.is_dir())
    check_output(name, output, inputs=[checkpoint, path], default=chosen)
    model, vocab, saved = load_model(path, device="cpu")
    source = {"checkpoint": str(path), "step": saved.metrics.step}
    report = export_model(name, model, vocab, output, quantize_name, source)
    config = model.config
    weights = f", {quantize_name} weights" if quantize_name else ""
    err.print(
        f"wrote {', '.join(str(p) for p in report.paths)} ({_size(report.size_bytes)}; "
        f"{FORMATS[name].description}; {config.cell.upper()} {config.layers}x{config.hidden}, "
        f"vocabulary {len(vocab)} {vocab.kind}{weights})",
        markup=False,
    )
    err.print(f"check: {report.check}", markup=False)


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e6 else f"{size_bytes / 1e3:.1f} kB"
