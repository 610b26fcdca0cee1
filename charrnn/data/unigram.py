"""The unigram baseline: the bits per character of a model that knows only how often each
character (token) occurs, and nothing of their order.

It is the entropy of the text's own frequencies, H = -sum p_i log2 p_i, counted over the text
that is scored (a run's validation text; each file ``eval`` reads), times its tokens per
character for byte and BPE vocabularies. No unigram model scores that text better: one
fitted on other text (the training split) lands a little above it. A recurrent model that
ends near it has learned the letters' proportions and no more."""

from __future__ import annotations

import numpy as np


def unigram_bpc(ids: np.ndarray, tokens_per_char: float = 1.0) -> float | None:
    """Bits per character of the best frequencies-only model of ``ids``; None for no text."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return None
    counts = np.bincount(ids.reshape(-1).astype(np.int64))
    p = counts[counts > 0] / ids.size
    return float(-(p * np.log2(p)).sum()) * tokens_per_char
