"""The per-step states of every layer written to one ``.npz`` file for study elsewhere.

Layout (T tokens of text, L layers of H units; every array loads with ``allow_pickle=False``):

=========  ==========  ========  ====================================================
name       shape       dtype     what
=========  ==========  ========  ====================================================
``h``      (L, T, H)   float32   hidden state of layer l after reading token t
``c``      (L, T, H)   float32   LSTM only: cell state (before tanh)
``gate_X`` (L, T, H)   float32   each gate's activation: LSTM i f g o, GRU r z n
``ids``    (T,)        int64     the token ids read
``text``   (T,)        str       the text of each token (one character for a chars vocabulary)
``cell``   ()          str       ``lstm``, ``gru`` or ``rnn``
=========  ==========  ========  ====================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from charrnn.errors import CheckpointError
from charrnn.inspect.replayed import Replayed


def dump_states(replayed: Replayed, ids: np.ndarray, pieces, path: Path) -> Path:
    # asarray, not astype: the replayed arrays are float32 already, and a copy of each would
    # double the memory the states take.
    arrays = {"h": np.asarray(replayed.hidden, dtype=np.float32)}
    if replayed.cell is not None:
        arrays["c"] = np.asarray(replayed.cell, dtype=np.float32)
    for name, values in replayed.gates.items():
        arrays[f"gate_{name}"] = np.asarray(values, dtype=np.float32)
    arrays["ids"] = np.asarray(ids, dtype=np.int64)
    arrays["text"] = np.array(pieces, dtype=str)
    arrays["cell"] = np.array(replayed.kind)
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")  # what numpy would write; the caller reports it
    try:
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}") from None
    return path
