"""How ``--help`` names the value each option takes.

Typer's rich help prints a Python type beside every parameter: ``<bool>`` after a flag that
takes no value, ``<list[str]>`` after a repeatable option, ``<int range>`` before a range that
already says it is a number. The command classes here show a flag with no value, and any other
parameter by the kind of value typed on the command line: ``<integer>``, ``<number>``,
``<text>``, ``<path>``, the choices (``<lstm|gru|rnn>``), with ``...`` when it repeats.
A ``metavar`` declared on an option still wins. Every command and group of the CLI is built
on these classes; tests/test_cli_display.py renders each one's help at 80 columns.
"""

from __future__ import annotations

import re

import typer

# Typer's type labels (the text between < and >) and how a command line reads them.
_WORDS = {"int": "integer", "float": "number", "str": "text", "Path": "path"}


def _value_name(label: str) -> str:
    """``<list[str]>`` -> ``<text>...``, ``<int range>`` -> ``<integer>``."""
    inner = label.strip("<>")
    repeats = inner.startswith("list[") and inner.endswith("]")
    if repeats:
        inner = inner[len("list[") : -1]
    inner = re.sub(r" range$", "", inner)
    inner = _WORDS.get(inner, inner)
    return f"<{inner}>" + ("..." if repeats else "")


def _readable(param, ctx) -> None:
    if isinstance(param, typer.core.TyperOption):
        if param.is_flag:
            name = None
        elif param.metavar is not None:
            return  # declared by the command: shown as it is
        else:
            name = _value_name(param.display_type(ctx))
    elif isinstance(param, typer.core.TyperArgument):
        name = _value_name(param.display_type(ctx))
        if param.metavar is None:
            name = name.removesuffix("...")  # typer already ends the argument's name with "..."
    else:
        return
    # Typer's help reads the type column from this method; for an argument it ignores the
    # metavar, so the method itself is what can be told.
    param.display_type_rich = lambda ctx=None: name


class ReadableHelp:
    """Mixin for a typer command or group class: see the module docstring."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.get_params(ctx):
            _readable(param, ctx)
        super().format_help(ctx, formatter)


class HelpCommand(ReadableHelp, typer.core.TyperCommand):
    pass


class HelpGroup(ReadableHelp, typer.core.TyperGroup):
    pass
