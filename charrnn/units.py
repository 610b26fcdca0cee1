"""Nats and bits: training minimises cross-entropy in nats per token, and charrnn reports bits
per character, the figure that compares across models, corpora and tokenizers."""

from __future__ import annotations

import math

LN2 = math.log(2.0)


def nats_to_bpc(nats: float, tokens_per_char: float = 1.0) -> float:
    """Bits per character from a cross-entropy in nats per token. A byte or BPE model spends
    ``tokens_per_char`` tokens (of the text it was scored on) per character, so its figure
    then compares with a character model's."""
    return nats * tokens_per_char / LN2


def bpc_to_nats(bpc: float) -> float:
    """Nats per character from bits per character."""
    return bpc * LN2
