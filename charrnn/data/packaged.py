"""Corpora assembled from packages on the ordinary package registries (a PyPI wheel, a Debian
package), for judging the defaults on text unlike tiny shakespeare: many scripts, a large
vocabulary, markup, another alphabet.

Each is pinned twice: the package file by its sha256, and the text built from it by its
sha256, so two machines that build ``django-po`` train on the same bytes. The package is
downloaded with the registry's own client (``pip download``, ``apt-get download``) into the
corpora directory's ``packages/``; a package file already there (copied by hand onto a
machine without network) is used as it is. Nothing of the packages is kept in the project.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from charrnn.errors import CorpusError, DownloadError
from charrnn.outputs import write_whole

CORPORA_SUBDIR = "corpora"


@dataclass(frozen=True)
class Package:
    registry: str  # "pypi" or "debian"
    name: str
    version: str
    filename: str  # the file the registry's client saves
    sha256: str


@dataclass(frozen=True)
class PackagedCorpus:
    name: str
    description: str
    package: Package
    extract: Callable[[bytes], str]  # the package file's bytes -> the corpus text
    sha256: str  # of the corpus text, UTF-8

    @property
    def filename(self) -> str:
        return f"{self.name}.txt"


def corpora_dir() -> Path:
    """Where built corpora live: the user's cache (``$CHARRNN_CACHE`` or
    ``$XDG_CACHE_HOME/charrnn``, else ``~/.cache/charrnn``), under ``corpora/``; never the
    project's tree."""
    from charrnn.data.cache import CACHE_ENV

    configured = os.environ.get(CACHE_ENV)
    if configured and configured.lower() not in ("off", "0", "none"):
        return Path(configured) / CORPORA_SUBDIR
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charrnn" / CORPORA_SUBDIR


def _shuffled(names: list[str]) -> list[str]:
    """A fixed order that mixes the languages: sorted by the sha256 of each path. Sorted by
    path, the held-out last tenth would be the last languages of the alphabet alone."""
    return sorted(names, key=lambda n: hashlib.sha256(n.encode("utf-8")).hexdigest())


def django_translations(wheel: bytes) -> str:
    """Django's translation catalogues (``.po``) of its core and its admin: ~100 languages in
    a dozen scripts, with the gettext markup, in an order that mixes the languages."""
    prefixes = ("django/conf/locale/", "django/contrib/admin/locale/")
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        names = [n for n in archive.namelist() if n.endswith(".po") and n.startswith(prefixes)]
        return "".join(_ending_in_newline(archive.read(n).decode("utf-8")) for n in _shuffled(names))


def russian_fortunes(deb: bytes) -> str:
    """The Russian fortune-cookie files: quotations, aphorisms and anecdotes in Cyrillic prose,
    ``%`` between entries; files in sorted order, without the ``.dat`` indexes and the
    ``.u8`` links."""
    members = _deb_files(deb, "./usr/share/games/fortunes/ru/")
    texts = [
        members[name]
        for name in sorted(members)
        if not name.endswith((".dat", ".u8"))
    ]
    return "".join(_ending_in_newline(t.decode("utf-8")) for t in texts)


def _ending_in_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _deb_files(deb: bytes, prefix: str) -> dict[str, bytes]:
    """The regular files under ``prefix`` of a Debian package (an ``ar`` archive holding
    ``data.tar.*``), read with the standard library alone."""
    if not deb.startswith(b"!<arch>\n"):
        raise CorpusError("not a Debian package (no ar header)")
    offset = 8
    while offset + 60 <= len(deb):
        header = deb[offset : offset + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = deb[offset + 60 : offset + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                return {
                    m.name: tar.extractfile(m).read()
                    for m in tar.getmembers()
                    if m.isfile() and m.name.startswith(prefix)
                }
        offset += 60 + size + (size % 2)
    raise CorpusError("the Debian package has no data.tar member")


PACKAGED: dict[str, PackagedCorpus] = {
    corpus.name: corpus
    for corpus in [
        PackagedCorpus(
            "django-po",
            "Django 5.2.8's translation catalogues (.po): ~100 languages, many scripts, gettext markup",
            Package(
                "pypi",
                "Django",
                "5.2.8",
                "django-5.2.8-py3-none-any.whl",
                "37e687f7bd73ddf043e2b6b97cfe02fcbb11f2dbb3adccc6a2b18c6daa054d7f",
            ),
            django_translations,
            "a998ae744292639286206035056790c346ba65b9a93a7fa1631e2f0c3aae81b9",
        ),
        PackagedCorpus(
            "fortunes-ru",
            "Russian prose in Cyrillic: Debian's fortunes-ru 1.52 (quotations and anecdotes)",
            Package(
                "debian",
                "fortunes-ru",
                "1.52-3.1",
                "fortunes-ru_1.52-3.1_all.deb",
                "2dc76af9c0e02e2926d36f88dcb685bb171fab8677e553a6def41efe8a551cc6",
            ),
            russian_fortunes,
            "cd25834f2d5ed98ea52d558aa3071617238d7e048f305a9b33cce0d8a34b4e43",
        ),
    ]
}


def packaged_path(corpus: PackagedCorpus, directory: Path | None = None) -> Path:
    return (directory or corpora_dir()) / corpus.filename


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(package: Package, directory: Path) -> None:
    if package.registry == "pypi":
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--dest", str(directory), f"{package.name}=={package.version}",
        ]
        how = "pip"
    else:
        command = ["apt-get", "download", f"{package.name}={package.version}"]
        how = "apt-get (a Debian or Ubuntu machine)"
    try:
        done = subprocess.run(command, cwd=directory, capture_output=True, text=True)
    except OSError as exc:
        raise DownloadError(
            f"could not run {command[0]} to download {package.filename} ({exc}); it needs {how}, "
            f"or put that file in {directory} by hand"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DownloadError(
            f"{' '.join(command[:3])} ... {package.name}=={package.version} failed: {last}; "
            f"put {package.filename} in {directory} by hand to build offline"
        )


def package_file(package: Package, directory: Path) -> bytes:
    """The package file's bytes, checked against its sha256: from ``directory`` if there,
    else downloaded into it through the registry's client."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / package.filename
    if not path.is_file():
        _download(package, directory)
    if not path.is_file():
        raise DownloadError(f"the download did not produce {path}")
    data = path.read_bytes()
    actual = _sha256(data)
    if actual != package.sha256:
        raise CorpusError(
            f"{path}: sha256 {actual} is not the pinned {package.sha256}; delete it and build again"
        )
    return data


def build_packaged(name: str, directory: Path | None = None) -> Path:
    """Build the named corpus from its package (downloading the package only if it is not
    there), check the text against its pinned sha256 and write it atomically; an existing,
    correct file is kept."""
    corpus = PACKAGED[name]
    directory = directory or corpora_dir()
    destination = packaged_path(corpus, directory)
    if destination.is_file() and _sha256(destination.read_bytes()) == corpus.sha256:
        return destination
    text = corpus.extract(package_file(corpus.package, directory / "packages")).encode("utf-8")
    actual = _sha256(text)
    if corpus.sha256 and actual != corpus.sha256:
        raise CorpusError(
            f"{name}: the text built from {corpus.package.filename} has sha256 {actual}, not the "
            f"pinned {corpus.sha256}; the extraction rules changed"
        )
    write_atomically(destination, text)
    return destination


def write_atomically(destination: Path, data: bytes) -> None:
    """A reader sees the old file or the whole new one, never a part."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_whole(destination, data, prefix=".tmp-")


def find_packaged(name: str, directory: Path | None = None) -> Path | None:
    """The built corpus if it is there (not checked: building checked it)."""
    path = packaged_path(PACKAGED[name], directory)
    return path if path.is_file() else None
