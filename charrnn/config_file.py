"""Options from a TOML file (``charrnn train --config FILE.toml``) and the resolved options of
a run written back in the same form (``RUN/config.toml``), so that a run can be repeated with
``charrnn train --config RUN/config.toml --out NEW``.

Keys are the command's option names without the dashes (``batch-size`` or ``batch_size``),
plus ``paths`` for the text to train on. The file's values become the options' defaults, so
the command line's own type and range checks apply to them and an option given on the command
line wins over the file.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from pathlib import Path
from typing import Iterable

from charrnn.errors import ConfigError
from charrnn.options import LR_AUTO, is_lr_auto, parse_lr

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None


def _is_rate(value) -> bool:
    """A TOML number, or the string that asks for the range test (a number in quotes is a slip)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    try:
        return isinstance(value, str) and is_lr_auto(parse_lr(value))
    except ConfigError:
        return False


# What a TOML value must be for an option of each kind. bool is a subclass of int in Python,
# so `layers = true` would pass an isinstance check for int (and become 1 layer) without the
# explicit exclusion; a flag takes only true or false.
_KINDS = {
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string (in quotes)"),
    # --lr: whatever the option's own parser takes (a number, or auto)
    "rate": (_is_rate, f'a number or "{LR_AUTO}"'),
}


def _toml_repr(value) -> str:
    try:
        return _toml_value(value)
    except ConfigError:
        return repr(value)


def defaults_from_file(path: Path, params: Iterable[tuple]) -> dict:
    """The file's values keyed by parameter name, for a command's ``default_map``.

    ``params`` is (parameter name, its option strings, whether it takes a list[, kind]) per
    parameter, kind being "bool", "int", "float", "str" (a path or a choice is a string) or
    "rate" (--lr: a number or "auto").
    Unknown keys, nested tables and values of the wrong shape or type are a ``ConfigError``.
    """
    data = read_toml(path)
    by_key: dict[str, tuple[str, bool, str | None]] = {}
    for name, opts, many, *kind in params:
        for key in [name, *(o.lstrip("-") for o in opts if o.startswith("--"))]:
            by_key[key] = (name, many, kind[0] if kind else None)
            by_key[key.replace("-", "_")] = (name, many, kind[0] if kind else None)
    defaults = {}
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(
                f"--config {path}: [{key}] is a table; write the options at the top level, "
                "without sections"
            )
        if key not in by_key:
            close = difflib.get_close_matches(key, sorted(by_key), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"--config {path}: unknown key '{key}'{hint}")
        name, many, kind = by_key[key]
        if many:
            value = [value] if not isinstance(value, list) else value
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"--config {path}: '{key}' must be a list of strings (in quotes)")
        elif isinstance(value, list):
            raise ConfigError(f"--config {path}: '{key}' takes one value, not a list")
        elif kind in _KINDS and not _KINDS[kind][0](value):
            raise ConfigError(f"--config {path}: '{key}' must be {_KINDS[kind][1]}, not {_toml_repr(value)}")
        if name in defaults:
            raise ConfigError(f"--config {path}: '{key}' is given twice")
        defaults[name] = value
    return defaults


def resolved_options(model: dict, train: dict, corpus: dict) -> dict:
    """A run's resolved options under the command line's names, ``None`` values left out."""
    options: dict = {"paths": list(corpus.get("train_files", []))}
    if corpus.get("val_files"):
        options["val-file"] = list(corpus["val_files"])
    for key in ("encoding", "val_frac", "tokenizer", "vocab_size"):
        if corpus.get(key) is not None:
            options[key.replace("_", "-")] = corpus[key]
    for source in (model, train):
        for key, value in source.items():
            if key == "vocab_size" or value is None:
                continue
            options[key.replace("_", "-")] = value
    return options


# Options that hold paths: a name that is not UTF-8 is a legitimate path, but TOML text is
# Unicode and has no escape for a lone byte, so such a name cannot be written there.
_PATH_KEYS = ("paths", "val-file")


def without_unwritable_paths(options: dict) -> tuple[dict, list[str]]:
    """``options`` less the path lists that name a file whose name is not UTF-8, and one line
    per list left out, saying which name and how to repeat the run anyway. The whole list is
    left out, not the one name: repeating the run on part of its text would be a different
    run that looks the same."""
    from charrnn.text import first_invalid, shown

    kept, notes = dict(options), []
    for key in _PATH_KEYS:
        bad = [p for p in kept.get(key, ()) if first_invalid(p) is not None]
        if bad:
            del kept[key]
            where = "the paths" if key == "paths" else f"--{key}"
            notes.append(
                f"'{key}' is left out: {shown(bad[0])} is not a UTF-8 name, which TOML cannot hold; "
                f"give {where} on the command line"
            )
    return kept, notes


def to_toml(options: dict, header: str = "") -> str:
    """Flat TOML for strings, numbers, booleans and lists of strings (all ``options`` holds)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in options.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes, \\uXXXX included).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write a {type(value).__name__} to TOML")
