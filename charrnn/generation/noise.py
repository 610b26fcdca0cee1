"""The random source of sampling: Exp(1) noise drawn from a seeded generator in blocks, and
the draw of one id per row that uses it (the same draws as ``torch.multinomial``)."""

from __future__ import annotations

import numpy as np
import torch


class Noise:
    """The Exp(1) noise ``draw`` needs, one (N, V) slab per character.

    On the CPU the slabs are fetched from the generator in blocks: one fill of (B, N, V)
    consumes the generator exactly as B fills of (N, V) do (a test checks it), so a seed makes
    the same text whatever the block, and a character costs a slice instead of a torch call.
    CUDA's generator is counter-based, so there each slab is its own fill."""

    def __init__(
        self, generator: torch.Generator, rows: int, vocab: int, device: torch.device | str = "cpu", most: int | None = None
    ) -> None:
        """``most``: the slabs this noise will ever be asked for, if known (a short completion
        then fetches only what it uses; the slabs themselves are the same)."""
        self.generator = generator
        self.shape = (rows, vocab)
        self.block = 1 if torch.device(device).type == "cuda" else max(1, NOISE_BLOCK_VALUES // (rows * vocab))
        if most is not None:
            self.block = max(1, min(self.block, most))
        self.device = device
        self.slabs: torch.Tensor | None = None
        self.gumbel_slabs: np.ndarray | None = None
        self.used = self.block  # slabs of the current block taken: none fetched yet counts as all

    def _fetch(self) -> None:
        self.slabs = torch.empty((self.block, *self.shape), device=self.device).exponential_(1, generator=self.generator)
        self.gumbel_slabs = None
        self.used = 0

    def _advance(self) -> int:
        # Compared with the block's size, an int: a tensor's len() costs a microsecond, and the
        # server draws for every row of every step.
        if self.used == self.block:
            self._fetch()
        self.used += 1
        return self.used - 1

    def prefetch(self) -> None:
        """Fetch the first block now (the same values ``next`` would fetch then): a caller on
        another thread takes the fill's time off the thread that will draw."""
        if self.slabs is None:
            self._fetch()

    def next(self) -> torch.Tensor:
        index = self._advance()  # first: it may fetch a new block
        return self.slabs[index]

    def next_gumbel(self) -> np.ndarray:
        """The same slab as ``next`` would give, as -log(q) in numpy (Gumbel noise): then
        argmax(z + g) picks what argmax(softmax(z) / q) picks, in two cheap operations."""
        index = self._advance()
        if self.gumbel_slabs is None:
            # One log over the whole block; a character then costs a numpy view.
            self.gumbel_slabs = -np.log(self.slabs.cpu().numpy())
        return self.gumbel_slabs[index]


# Noise values fetched at a time: 64 characters of a 4k vocabulary, or 4k of a 65-character one.
NOISE_BLOCK_VALUES = 1 << 18


def draw(probs: torch.Tensor, noise: Noise) -> torch.Tensor:
    """One id per row of ``probs`` (N, V): exactly ``torch.multinomial(probs, 1, generator)``
    (same draws from the same generator state; a test checks it), which samples one id as
    argmax(p / q) with q ~ Exp(1), but without its input checks, which cost half a
    character's time when sampling at batch 1."""
    return probs.div_(noise.next()).argmax(dim=-1)


class RowNoise:
    """The noise of several samples drawn in one batch, each row from its own ``Noise`` (its
    own generator), in the form ``sample_next`` asks a ``Noise`` for it (the server's
    streams: each keeps the text of its seed whoever it is batched with)."""

    def __init__(self, noises: list[Noise]) -> None:
        self.noises = noises

    def next(self) -> torch.Tensor:
        return torch.cat([noise.next() for noise in self.noises])

    def next_gumbel(self) -> np.ndarray:
        return np.concatenate([noise.next_gumbel() for noise in self.noises])
