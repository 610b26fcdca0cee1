"""The model as ONNX: the one-step module of ``charrnn.export.step`` (inputs ``ids`` (B, 1) and
``state``; outputs ``logits`` (B, V) and ``next_state``), dynamic batch, exported through
torch's dynamo exporter, with the model's description and the vocabulary in the file's
``metadata_props`` (keys ``charrnn.json`` and ``tokenizer.json``). onnxruntime runs it in any
of its languages; ONNX's own ``LSTM`` and ``GRU`` operators carry the recurrent layers (a plain
RNN arrives as its matrix products and ``Tanh``).

A step and not the whole sequence: torch.export, under the exporter, cannot keep the time axis
dynamic through a recurrent layer (upstream pytorch#115092), and generation feeds one token at
a time anyway.

``quantize="int8"``: onnxruntime's dynamic quantization stores weights as int8 with a scale,
and quantizes activations on the fly. It quantizes LSTM nodes (as ``DynamicQuantizeLSTM``,
after ``quant_pre_process`` has folded the weights the exporter passes through ``Unsqueeze``)
and every matrix product, but it has no quantized GRU: a GRU's recurrent weights stay float32
and only its decoder shrinks.

Needs the optional packages onnx, onnxscript and onnxruntime: ``pip install 'charrnn[export]'``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from charrnn.errors import ExportError
from charrnn.export.check import check_ids, compare
from charrnn.export.files import total_size
from charrnn.outputs import written_whole
from charrnn.export.packages import require_onnx
from charrnn.export.report import ExportReport
from charrnn.export.step import MAX_BATCH, StepModule, carried_files, describe, example_inputs, zero_state
from charrnn.model.network import CharRNN

FORMAT = "charrnn-onnx-1"
INPUTS = ["ids", "state"]
OUTPUTS = ["logits", "next_state"]
QUANTIZATIONS = ("int8",)
# What int8 leaves in float, by cell: said in the export's message and the docs.
INT8_COVERAGE = {
    "lstm": "int8 weights: LSTM layers and decoder",
    "gru": "int8 weights: the decoder only (onnxruntime has no quantized GRU; the GRU layers stay float32)",
    "rnn": "int8 weights: RNN layers (exported as matrix products) and decoder",
}


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter reports its stages and the operator sets it skips (torchvision's, absent
    here) on stdout, stderr and torch's loggers; none of it concerns the user."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def onnx_proto(model: CharRNN):
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _quiet_exporter():
        program = torch.onnx.export(
            StepModule(model).eval(),
            example_inputs(model),
            input_names=INPUTS,
            output_names=OUTPUTS,
            dynamic_shapes=({0: batch}, {2: batch}),
            dynamo=True,
            verbose=False,
        )
    return program.model_proto


def _quantize_int8(float_path: Path, output: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="charrnn-onnx-") as scratch, _quiet_exporter():
        prepared = Path(scratch) / "prepared.onnx"
        # The dynamo exporter hands the LSTM its weights through Unsqueeze nodes; without
        # this pass quantize_dynamic sees no constant weights there and leaves the LSTM float.
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(output), weight_type=QuantType.QInt8)


def _with_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))


def load_step(path: Path):
    """The file's step as a ``StepFunction``, run by onnxruntime on one thread (a batch-1 step
    is a few matrix-vector products: more threads only wait on each other)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are for onnxruntime's developers
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sess = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def step(ids: np.ndarray, state: np.ndarray):
        logits, state = sess.run(OUTPUTS, {"ids": ids, "state": state})
        return logits, state

    return step


def export_onnx(model: CharRNN, vocab, output: Path, quantize: str | None = None, source: dict | None = None) -> ExportReport:
    require_onnx()
    import onnx

    if quantize not in (None, *QUANTIZATIONS):
        raise ExportError(f"--format onnx takes --quantize {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    description = describe(model, vocab, FORMAT, source)
    description["weights"] = "float32" if quantize is None else INT8_COVERAGE[model.config.cell]
    props = carried_files(description, vocab)
    proto = onnx_proto(model)
    with written_whole(output) as temporary:
        onnx.save(proto, str(temporary))
        if quantize == "int8":
            _quantize_int8(temporary, temporary)
        _with_metadata(temporary, props)
        comparison = compare(load_step(temporary), zero_state(model, 1).numpy(), model, check_ids(model))
    check = comparison.describe(with_bits=quantize is not None)
    if quantize is not None:
        check = f"{description['weights']}; {check}"
    return ExportReport([Path(output)], total_size([output]), check)
