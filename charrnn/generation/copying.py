"""Learning or copying? How much of a generated text appears verbatim in the training text.

A model that has memorised its corpus reproduces long passages of it; one that has learned the
style writes new strings from familiar words. The measure is the matching statistic: for each
position of the sample, the longest run starting there that occurs somewhere in the training
text. From it come the longest copied substring and the share of the sample that lies in copied
runs of at least ``min_run`` characters. The same figures for an unseen passage of the corpus
(its validation text) show how much overlap ordinary language has by chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from charrnn.errors import CorpusError
from charrnn.data.corpus import hold_out
from charrnn.data.vocab_kinds import read_text
from charrnn.options import DEFAULTS
from charrnn.saved import CorpusOptions
from charrnn.text import shown

DEFAULT_MIN_RUN = DEFAULTS["sample"]["copy_min_run"]


@dataclass(frozen=True)
class CopyReport:
    chars: int  # length of the text checked
    longest: int  # the longest substring of it found verbatim in the training text
    longest_text: str
    copied_fraction: float  # share of its characters inside verbatim runs of >= min_run chars
    min_run: int


def matching_lengths(text: str, reference: str) -> list[int]:
    """For each position i, the length of the longest prefix of ``text[i:]`` found in ``reference``.

    The match at i+1 is at least the match at i minus one, so the loop makes at most
    2 * len(text) substring searches (each a C-speed scan of ``reference``)."""
    lengths = [0] * len(text)
    run = 0
    for i in range(len(text)):
        run = max(run - 1, 0)
        while i + run < len(text) and text[i : i + run + 1] in reference:
            run += 1
        lengths[i] = run
    return lengths


def copy_report(text: str, reference: str, min_run: int = DEFAULT_MIN_RUN) -> CopyReport:
    lengths = matching_lengths(text, reference)
    start = max(range(len(lengths)), key=lengths.__getitem__, default=0)
    longest = lengths[start] if lengths else 0
    covered = 0
    reach = 0  # text[:reach] is already counted
    for i, run in enumerate(lengths):
        if run >= min_run and i + run > reach:
            covered += i + run - max(i, reach)
            reach = i + run
    return CopyReport(
        chars=len(text),
        longest=longest,
        longest_text=text[start : start + longest],
        copied_fraction=covered / len(text) if text else 0.0,
        min_run=min_run,
    )


@dataclass(frozen=True)
class ReferenceTexts:
    """The text a model was trained on, and an unseen passage of the same corpus (if any)."""

    train: str
    unseen: str | None
    source: str  # where the training text came from, for the report


def _recorded(files: Sequence[str], encoding: str) -> str:
    """Files named in the checkpoint: if they moved, say how to point at them."""
    try:
        return "".join(read_text([Path(f) for f in files], encoding))
    except CorpusError as exc:
        raise CorpusError(f"{exc}; pass --training-text FILE") from None


def reference_texts(corpus: CorpusOptions | None, override: Path | None = None) -> ReferenceTexts:
    """The training text recorded in a saved run's corpus options, split as training split it
    (the validation files, or the last ``val_frac`` of the characters held out), or the whole of
    ``override`` when given."""
    if override is not None:
        return ReferenceTexts("".join(read_text([override], DEFAULTS["corpus"]["encoding"])), None, shown(override))
    files = [] if corpus is None else corpus.train_files
    if not files:
        raise CorpusError("the checkpoint does not record its training files; pass --training-text FILE")
    encoding = corpus.encoding
    text = _recorded(files, encoding)
    source = shown(files[0]) if len(files) == 1 else f"{len(files)} training files"
    if corpus.val_files:
        return ReferenceTexts(text, _recorded(corpus.val_files, encoding), source)
    # The character split training used (byte and BPE runs cut at a token, within a few
    # characters of this point).
    train, unseen = hold_out(text, corpus.val_frac)
    return ReferenceTexts(train, unseen, source)


def unseen_baseline(references: ReferenceTexts, chars: int, min_run: int = DEFAULT_MIN_RUN) -> CopyReport | None:
    """The same measure for a passage of ``chars`` characters the model never trained on."""
    if not references.unseen or chars <= 0:
        return None
    return copy_report(references.unseen[:chars], references.train, min_run)
