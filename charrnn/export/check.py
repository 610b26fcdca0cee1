"""The check an export runs on what it wrote: the file, loaded back by its own runtime, stepped
over a short text, against the checkpoint's own model.

The text is drawn from the checkpoint itself (seeded, temperature 1), so it needs no corpus
and every token is in the vocabulary, whatever its kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from charrnn.model.network import CharRNN

CHECK_TOKENS = 200
CHECK_SEED = 0

# (ids (B, 1) int64, state) -> (logits (B, V), state): one step of an exported model, run by
# its runtime (onnxruntime, torch.export).
StepFunction = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Comparison:
    tokens: int
    max_prob_diff: float  # largest |p_export - p_checkpoint| over every position and token
    bits_export: float  # mean bits per token of the text under the export
    bits_checkpoint: float

    def describe(self, with_bits: bool = False) -> str:
        line = f"max |Δp| {self.max_prob_diff:.1e} against the checkpoint over {self.tokens} tokens sampled from it"
        if with_bits:
            line += (
                f"; {self.bits_export:.4f} bits per token against the checkpoint's "
                f"{self.bits_checkpoint:.4f} ({self.bits_export - self.bits_checkpoint:+.4f})"
            )
        return line


@torch.no_grad()
def check_ids(model: CharRNN, count: int = CHECK_TOKENS, seed: int = CHECK_SEED) -> np.ndarray:
    """``count`` ids drawn from the model (temperature 1, seeded), from id 0 at the zero state."""
    generator = torch.Generator().manual_seed(seed)
    model = model.cpu().eval()
    ids = [0]
    state = None
    for _ in range(count - 1):
        logits, _, state = model(torch.tensor([[ids[-1]]]), state)
        probs = torch.softmax(logits[0, -1].double(), dim=-1)
        ids.append(int(torch.multinomial(probs, 1, generator=generator)))
    return np.asarray(ids, dtype=np.int64)


@torch.no_grad()
def reference_probs(model: CharRNN, ids: np.ndarray) -> np.ndarray:
    """(T, V): the checkpoint's next-token probabilities after each prefix of ``ids``."""
    logits, _, _ = model.cpu().eval()(torch.from_numpy(ids).unsqueeze(0))
    return torch.softmax(logits[0].double(), dim=-1).numpy()


def step_probs(step: StepFunction, state: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(T, V): an export's next-token probabilities, fed ``ids`` one at a time at batch 1."""
    rows = []
    for token in ids:
        logits, state = step(np.array([[token]], dtype=np.int64), state)
        rows.append(_softmax(np.asarray(logits[0], dtype=np.float64)))
    return np.stack(rows)


def compare(step: StepFunction, state: np.ndarray, model: CharRNN, ids: np.ndarray) -> Comparison:
    expected = reference_probs(model, ids)
    got = step_probs(step, state, ids)
    targets = ids[1:]
    return Comparison(
        tokens=len(ids),
        max_prob_diff=float(np.abs(got - expected).max()),
        bits_export=_mean_bits(got[:-1], targets),
        bits_checkpoint=_mean_bits(expected[:-1], targets),
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _mean_bits(probs: np.ndarray, targets: np.ndarray) -> float:
    chosen = probs[np.arange(len(targets)), targets]
    return float(-np.log(np.maximum(chosen, 1e-300)).mean() / math.log(2))
