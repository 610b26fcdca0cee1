"""One unit's activation drawn over the text: a colour per character (blue negative, white
zero, red positive) for the terminal and for a self-contained HTML page, and a plain form
for terminals without colour (a digit under each character)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from charrnn.errors import CheckpointError

BUCKETS = 10  # the plain form's digits 0..9 cover [-1, 1]


def colour_of(value: float) -> str:
    """``value`` in [-1, 1] (clipped) as a background colour: white at 0, red +1, blue -1."""
    v = float(np.clip(value, -1.0, 1.0))
    fade = int(round(255 * (1 - abs(v))))
    red, green, blue = (255, fade, fade) if v >= 0 else (fade, fade, 255)
    return f"#{red:02x}{green:02x}{blue:02x}"


def bucket_of(value: float) -> int:
    return int(np.clip(np.floor((float(value) + 1) / 2 * BUCKETS), 0, BUCKETS - 1))


def _shown(piece: str) -> str:
    """A piece as it can stand in a column: tabs and other controls as one space."""
    return "".join(" " if (ch != "\n" and not ch.isprintable()) else ch for ch in piece)


def plain_lines(pieces, values) -> str:
    """Each line of text followed by a line of digits, the digit under each character its
    value's bucket (0 = -1.0 .. 9 = +1.0)."""
    out, text_line, digit_line = [], [], []
    for piece, value in zip(pieces, values):
        for ch in _shown(piece):
            if ch == "\n":
                out += ["".join(text_line), "".join(digit_line)]
                text_line, digit_line = [], []
            else:
                text_line.append(ch)
                digit_line.append(str(bucket_of(value)))
    if text_line:
        out += ["".join(text_line), "".join(digit_line)]
    return "\n".join(out) + "\n"


def html_page(pieces, values, title: str, legend: str) -> str:
    """A page with no outside resources: every piece of text in its own span, coloured, its
    value in a tooltip."""
    return "".join(_html_parts(pieces, values, title, legend))


# Spans joined at a time when a page is written: the page of a long text is about 70 bytes
# per character, and joined whole (with the list of its spans) it took 300.
WRITTEN_SPANS = 4096


def _html_parts(pieces, values, title: str, legend: str):
    yield (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font-family:sans-serif;margin:2em}"
        "pre{font-family:monospace;font-size:14px;line-height:1.5;white-space:pre-wrap}"
        "pre span{padding:1px 0}.key span{padding:0 .6em;font-family:monospace}</style>\n"
        "</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(legend)}</p>\n"
        '<p class="key">'
        + "".join(f'<span style="background:{colour_of(v)}">{v:+.1f}</span>' for v in (-1, -0.5, 0, 0.5, 1))
        + "</p>\n<pre>"
    )
    for start in range(0, len(pieces), WRITTEN_SPANS):
        yield "".join(
            f'<span style="background:{colour_of(v)}" title="{float(v):+.3f}">{html.escape(p)}</span>'
            for p, v in zip(pieces[start : start + WRITTEN_SPANS], values[start : start + WRITTEN_SPANS])
        )
    yield "</pre>\n</body>\n</html>\n"


def write_html(path: Path, pieces, values, title: str, legend: str) -> Path:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            for part in _html_parts(pieces, values, title, legend):
                handle.write(part)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}") from None
    return Path(path)
