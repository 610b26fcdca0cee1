"""Text that enters charrnn from outside: command-line arguments, file names, lines typed at
the interactive prompt, HTTP bodies. Any of them may hold what is not Unicode text: bytes that
are not UTF-8 (Python keeps an argument's or a file name's undecodable bytes as lone
surrogates, U+DC80-U+DCFF) or a lone surrogate that JSON's \\uD800 escapes let through. One
rule holds at every edge: such text is refused with one line that says where the bad
character is, and names and paths are shown with the bad bytes escaped, never crashing the
message that reports them."""

from __future__ import annotations

import os

from charrnn.errors import InvalidText

_SURROGATES = range(0xD800, 0xE000)
_ESCAPED_BYTES = range(0xDC80, 0xDD00)  # os.fsdecode's surrogateescape for bytes 0x80-0xFF


def first_invalid(text: str) -> int | None:
    """The index of the first character that cannot be encoded as UTF-8, or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def require_valid(text: str, where: str, from_bytes: bool = True) -> str:
    """``text`` unchanged if it is valid Unicode; otherwise InvalidText naming ``where`` (an
    option, a field) and the first bad character. ``from_bytes``: the text was decoded from
    bytes (an argument, a name), so an escaped byte is reported as that byte; JSON text says
    which surrogate it holds instead."""
    index = first_invalid(text)
    if index is None:
        return text
    raise InvalidText(f"{where} is not valid UTF-8 text: {describe(text, index, from_bytes)}")


def describe(text: str, index: int, from_bytes: bool = True) -> str:
    code = ord(text[index])
    if from_bytes and code in _ESCAPED_BYTES:
        return f"byte 0x{code - 0xDC00:02x} at character {index}"
    return f"a lone surrogate U+{code:04X} at character {index}"


def decode(data: bytes, where: str) -> str:
    """UTF-8 bytes as text, or InvalidText naming ``where`` and the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidText(f"{where} is not valid UTF-8 text: byte 0x{data[exc.start]:02x} at byte {exc.start}") from None


def shown(value: object) -> str:
    """A path or name as it can always be printed: bytes that are not UTF-8 appear as \\xNN
    escapes and a lone surrogate as \\udNNN, the rest unchanged."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if first_invalid(text) is None:
        return text
    return text.encode("utf-8", "surrogateescape" if _only_escaped_bytes(text) else "backslashreplace").decode(
        "utf-8", "backslashreplace"
    )


def _only_escaped_bytes(text: str) -> bool:
    return all(ord(c) in _ESCAPED_BYTES for c in text if ord(c) in _SURROGATES)
