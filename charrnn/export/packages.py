"""The optional packages an export format needs, checked without importing them (so a
missing one is named at once, before a checkpoint is read or torch is imported)."""

from __future__ import annotations

import importlib.util

from charrnn.errors import ExportError

INSTALL = "pip install 'charrnn[export]'"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def require_onnx() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format onnx needs {', '.join(missing)}, not installed here: {INSTALL}")
