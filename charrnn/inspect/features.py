"""Properties of a text that a unit might follow, computed from the characters alone: one value
per token, describing the text up to and including that token (what the state after reading
it could know)."""

from __future__ import annotations

import numpy as np

OPENING = "([{"
CLOSING = ")]}"
QUOTES = {'"': '"', "\u201c": "\u201d"}  # straight quotes toggle; curly ones open and close

FEATURES = {
    "inside quotes": "1 between an opening and a closing double quote, else 0",
    "inside brackets": "1 inside (), [] or {} (any depth), else 0",
    "position in line": "characters since the last newline",
    "indentation": "leading spaces and tabs of the current line",
    "start of a word": "1 on a letter or digit that follows a non-letter, else 0",
}


def text_features(pieces: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    values = {name: np.zeros(len(pieces), dtype=np.float64) for name in FEATURES}
    closing_quote = None
    depth = 0
    column = 0
    indent = 0
    leading = True
    previous = "\n"
    for t, piece in enumerate(pieces):
        for ch in piece:
            if closing_quote is not None and ch == closing_quote:
                closing_quote = None
            elif closing_quote is None and ch in QUOTES:
                closing_quote = QUOTES[ch]
            if ch in OPENING:
                depth += 1
            elif ch in CLOSING:
                depth = max(depth - 1, 0)
            if ch == "\n":
                column, indent, leading = 0, 0, True
            else:
                column += 1
                if leading and ch in " \t":
                    indent += 1
                else:
                    leading = False
            word_start = ch.isalnum() and not previous.isalnum()
            previous = ch
        values["inside quotes"][t] = closing_quote is not None
        values["inside brackets"][t] = depth > 0
        values["position in line"][t] = column
        values["indentation"][t] = indent
        values["start of a word"][t] = bool(piece) and word_start
    return values
