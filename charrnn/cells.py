"""What a recurrent cell type is, in one place: its torch module, its gates in the order torch
stacks their weights, which of them are sigmoids (the ones that open and close), and the shape
of its state. The model, the steppers, the exports, the bench and the inspection tools all
read this registry; adding a cell type means an entry here plus its step functions (the
fast stepper's, the C model's and the inspection replay's). Torch-free, so --help can list
the choices at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellType:
    name: str  # as --cell names it
    module: str  # the torch.nn class: one fused call over every layer (cuDNN on a GPU)
    gates: tuple[str, ...]  # in the order torch stacks their weights
    sigmoid_gates: tuple[str, ...]  # squashed into (0, 1): the gates that open and close
    has_cell_state: bool  # the state is (h, c), not h alone
    # The state's products kept apart from the input's (a GRU's reset gate scales them before
    # they are added), so each has its own bias, and a step holds both.
    state_products_apart: bool = False

    @property
    def weight_blocks(self) -> int:
        """Blocks of ``hidden`` rows in each weight matrix: one per gate, one for a cell
        without gates."""
        return max(1, len(self.gates))

    @property
    def state_parts(self) -> int:
        return 2 if self.has_cell_state else 1


CELLS: dict[str, CellType] = {
    cell.name: cell
    for cell in (
        CellType("lstm", "LSTM", gates=("i", "f", "g", "o"), sigmoid_gates=("i", "f", "o"), has_cell_state=True),
        CellType("gru", "GRU", gates=("r", "z", "n"), sigmoid_gates=("r", "z"), has_cell_state=False, state_products_apart=True),
        CellType("rnn", "RNN", gates=(), sigmoid_gates=(), has_cell_state=False),
    )
}

# What each sigmoid gate is called where a person reads it (plots, tables).
GATE_NAMES = {
    "i": "input gate", "f": "forget gate", "o": "output gate",
    "r": "reset gate", "z": "update gate",
}  # fmt: skip


def cell_type(name: str) -> CellType:
    return CELLS[name]
