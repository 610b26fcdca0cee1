"""`charrnn corpus list|fetch|suite`: the named corpora."""

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text


from charrnn.cli.shared import out


def corpus_list() -> None:
    """The corpora charrnn knows by name, and whether each is on this machine."""
    from charrnn.data.catalog import CATALOG, STDLIB_NAME, find_local, stdlib_corpus_path
    from charrnn.data.packaged import PACKAGED, find_packaged

    table = Table("name", "on this machine", "description", box=None)
    built = stdlib_corpus_path()
    table.add_row(
        STDLIB_NAME,
        Text(str(built) if built.exists() else "built on first use"),
        Text("the running Python's standard-library source (no download)"),
    )
    for name, corpus in PACKAGED.items():
        local = find_packaged(name)
        table.add_row(name, Text(str(local) if local else "no (charrnn corpus fetch builds it)"), Text(corpus.description))
    for entry in CATALOG.values():
        local = find_local(entry.train)
        table.add_row(entry.name, Text(str(local) if local else "no (charrnn corpus fetch)"), Text(entry.description))
    out.print(table)


def corpus_fetch(
    name: Annotated[str, typer.Argument(help="Corpus name from `charrnn corpus list`.", show_default=False)],
) -> None:
    """Download a corpus (checking its sha256), or build the stdlib corpus or one made from a package."""
    from charrnn.data.catalog import fetch

    found = fetch(name)
    for split in ("train", "valid", "test"):
        path = getattr(found, split)
        if path is not None:
            print(f"{split}: {path}")


def corpus_suite() -> None:
    """Build the corpus suite the defaults are judged on, and list each text's size, vocabulary, unigram baseline and sha256."""
    from charrnn.data.suite import build_suite

    table = Table("name", "characters", "vocabulary", "unigram bpc", "sha256", "path", box=None)
    for corpus in build_suite():
        if corpus.path is None:
            table.add_row(corpus.name, "-", "-", "-", "-", Text(corpus.note))
            continue
        table.add_row(
            corpus.name,
            f"{corpus.chars:,}",
            f"{corpus.vocab:,}",
            f"{corpus.unigram_bpc:.3f}",
            corpus.sha256[:16],
            Text(str(corpus.path)),
        )
    out.print(table)
