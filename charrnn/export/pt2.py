"""The model as a torch.export program (``.pt2``): the one-step module of
``charrnn.export.step`` with a dynamic batch, written by ``torch.export.save`` with the
model's description (``charrnn.json``) and the vocabulary (``tokenizer.json``) as extra files.
torch alone loads it (``torch.export.load``), without charrnn or any Python class of it::

    extra = {"charrnn.json": "", "tokenizer.json": ""}
    step = torch.export.load("model.pt2", extra_files=extra).module()
    logits, state = step(torch.tensor([[id]]), state)   # state: zeros (S, layers, 1, hidden)

This is the default format.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from charrnn.export.check import check_ids, compare
from charrnn.export.files import total_size
from charrnn.outputs import written_whole
from charrnn.export.report import ExportReport
from charrnn.export.step import MAX_BATCH, StepModule, carried_files, describe, example_inputs, zero_state
from charrnn.model.network import CharRNN

FORMAT = "charrnn-pt2-1"


def exported_program(model: CharRNN) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings():
        # torch.export notes that the recurrent layer's flattened weights were assigned while
        # tracing; they are parameters of the module and land in the program as such.
        warnings.simplefilter("ignore", UserWarning)
        return torch.export.export(StepModule(model).eval(), example_inputs(model), dynamic_shapes=({0: batch}, {2: batch}))


def export_pt2(model: CharRNN, vocab, output: Path, source: dict | None = None) -> ExportReport:
    program = exported_program(model)
    extra = carried_files(describe(model, vocab, FORMAT, source), vocab)
    with written_whole(output) as temporary:
        torch.export.save(program, str(temporary), extra_files=extra)
        comparison = compare(load_step(temporary), zero_state(model, 1).numpy(), model, check_ids(model))
    return ExportReport([Path(output)], total_size([output]), comparison.describe())


def load_step(path: Path):
    """The file's step as a ``StepFunction`` on numpy arrays."""
    module = torch.export.load(str(path)).module()

    @torch.no_grad()
    def step(ids: np.ndarray, state: np.ndarray):
        logits, state = module(torch.from_numpy(ids), torch.from_numpy(state))
        return logits.numpy(), state.numpy()

    return step
