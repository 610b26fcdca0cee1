"""Export a checkpoint as a TorchScript file that runs without charrnn (only torch).

The file holds the embedding, recurrent layers and decoder (dropout is gone: inference only)
and the vocabulary, both as methods and as an embedded ``tokenizer.json``::

    m = torch.jit.load("model.torchscript.pt")
    ids = m.encode("ROMEO:")                                   # list of ids
    logits, state = m(torch.tensor([ids]), m.initial_state(1)) # (1, T, V), state
    probs = m.next_char_probs("ROMEO:")                        # (V,) for the next character
    m.decode([...])                                            # ids -> text

``state`` is one tensor for every cell type, (2, layers, batch, hidden) for an LSTM (h and c)
and (1, layers, batch, hidden) for a GRU or RNN, so callers need not know the cell.

torch 2.13 marks TorchScript deprecated (``torch.jit.script``, ``save`` and ``load`` each warn,
"please switch to torch.export"); ``charrnn export --format pt2`` is that successor. This format
stays for libtorch (C++) and mobile users whose runtime loads TorchScript only.
"""

# No `from __future__ import annotations`: TorchScript reads the annotations at runtime.

import copy
import json
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

import numpy as np

from charrnn.cells import CELLS
from charrnn import __version__
from charrnn.errors import ExportError
from charrnn.export.check import check_ids, compare
from charrnn.export.files import total_size, written_whole
from charrnn.export.report import ExportReport
from charrnn.export.step import METADATA, TOKENIZER, zero_state
from charrnn.model.network import CharRNN
from charrnn.data.vocab import Vocab


def _utf8_length(text: str, start: int) -> int:
    """Bytes of the UTF-8 character that starts at byte ``start`` of ``text``."""
    # ord() of a one-byte TorchScript string is that byte; the mask keeps it 0..255 wherever
    # char is signed.
    lead = ord(text[start]) & 0xFF
    if lead < 0x80:
        return 1
    size = 0
    if 0xC2 <= lead < 0xE0:
        size = 2
    elif 0xE0 <= lead < 0xF0:
        size = 3
    elif 0xF0 <= lead < 0xF5:
        size = 4
    if size == 0 or start + size > len(text):
        raise ValueError("text is not valid UTF-8 at byte " + str(start))
    for k in range(start + 1, start + size):
        if (ord(text[k]) & 0xC0) != 0x80:
            raise ValueError("text is not valid UTF-8 at byte " + str(start))
    return size


def _codepoint_name(ch: str) -> str:
    """The code point of the one UTF-8 character ``ch`` as U+XXXX, which names even the
    characters that print as nothing."""
    lead = ord(ch[0]) & 0xFF
    point = lead
    if len(ch) > 1:
        point = lead & (0xFF >> (len(ch) + 1))
        for k in range(1, len(ch)):
            point = (point << 6) | (ord(ch[k]) & 0x3F)
    digits = "0123456789ABCDEF"
    out = ""
    while point > 0 or len(out) < 4:
        out = digits[point & 0xF] + out
        point = point >> 4
    return "U+" + out


class _Exported(nn.Module):
    """What every exported model has: the layers and the vocabulary."""

    chars: List[str]
    index: Dict[str, int]

    def __init__(self, model: CharRNN, vocab: Vocab) -> None:
        super().__init__()
        model = copy.deepcopy(model).cpu().eval()
        self.embedding = model.embedding
        self.rnn = model.rnn
        self.decoder = model.decoder
        self.chars = list(vocab.chars)
        self.index = {c: i for i, c in enumerate(vocab.chars)}
        self.layers = model.config.layers
        self.hidden = model.config.hidden
        self.state_parts = CELLS[model.config.cell].state_parts

    @torch.jit.export
    def encode(self, text: str) -> List[int]:
        # A TorchScript str is its UTF-8 bytes (len, indexing and iteration go byte by byte),
        # so each character is cut out whole, its length read from its first byte, and looked
        # up as the UTF-8 string that the index holds.
        ids: List[int] = []
        start = 0
        while start < len(text):
            end = start + _utf8_length(text, start)
            ch = text[start:end]
            if ch not in self.index:
                raise ValueError("character not in the vocabulary: " + ch + " (" + _codepoint_name(ch) + ")")
            ids.append(self.index[ch])
            start = end
        return ids

    @torch.jit.export
    def decode(self, ids: List[int]) -> str:
        for i in ids:
            # A negative id would index from the end and decode to a wrong character.
            if i < 0 or i >= len(self.chars):
                raise ValueError("id " + str(i) + " is not in the vocabulary (ids 0.." + str(len(self.chars) - 1) + ")")
        return "".join([self.chars[i] for i in ids])

    @torch.jit.export
    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(self.state_parts, self.layers, batch_size, self.hidden)

    @torch.jit.export
    def next_char_probs(self, text: str) -> torch.Tensor:
        """Probabilities (V,) of the character after ``text`` (from the initial state)."""
        if len(text) == 0:
            raise ValueError("next_char_probs needs at least one character of text")
        ids = torch.tensor([self.encode(text)], dtype=torch.long)
        with torch.no_grad():
            logits, _ = self.forward(ids, self.initial_state(1))
        return torch.softmax(logits[0, -1], dim=-1)

    def forward(self, ids: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class _ExportedLSTM(_Exported):
    def forward(self, ids: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out, (h, c) = self.rnn(self.embedding(ids), (state[0], state[1]))
        return self.decoder(out), torch.stack([h, c])


class _ExportedRecurrent(_Exported):
    def forward(self, ids: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out, h = self.rnn(self.embedding(ids), state[0])
        return self.decoder(out), h.unsqueeze(0)


def to_torchscript(model: CharRNN, vocab: Vocab) -> torch.jit.ScriptModule:
    wrapper = (_ExportedLSTM if CELLS[model.config.cell].has_cell_state else _ExportedRecurrent)(model, vocab)
    with warnings.catch_warnings():
        # torch marks TorchScript deprecated in favour of torch.export, but TorchScript is
        # what loads everywhere (C++ libtorch, mobile) without Python-side code.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(wrapper.eval())


def export_torchscript(model: CharRNN, vocab: Vocab, path: Path, source: Dict[str, object] | None = None) -> ExportReport:
    """Write the TorchScript file, with the vocabulary and model description embedded."""
    if not isinstance(vocab, Vocab):
        raise ExportError(
            f"--format torchscript embeds a character vocabulary as code; a {vocab.kind} model "
            "exports with --format pt2 or onnx, which carry its tokenizer.json"
        )
    scripted = to_torchscript(model, vocab)
    metadata = {
        "format": "charrnn-torchscript-1",
        "charrnn_version": __version__,
        "model_config": model.config.to_dict(),
        "vocab": list(vocab.chars),
        "state_shape": "(2 if lstm else 1, layers, batch, hidden)",
        **(source or {}),
    }
    extra = {
        METADATA: json.dumps(metadata, ensure_ascii=False, indent=2),
        TOKENIZER: vocab.to_tokenizer().to_str(),
    }
    path = Path(path)
    with written_whole(path) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # see to_torchscript
        torch.jit.save(scripted, str(temporary), _extra_files=extra)
        comparison = compare(load_step(temporary), zero_state(model, 1).numpy(), model, check_ids(model))
    return ExportReport([path], total_size([path]), comparison.describe())


def load_step(path: Path):
    """The file's forward as a one-step ``StepFunction`` on numpy arrays."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # see to_torchscript
        module = torch.jit.load(str(path))

    @torch.no_grad()
    def step(ids: np.ndarray, state: np.ndarray):
        logits, state = module(torch.from_numpy(ids), torch.from_numpy(state))
        return logits[:, -1].numpy(), state.numpy()

    return step
