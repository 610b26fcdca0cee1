"""How ``--help`` names the value each option takes.

Typer's rich help prints a Python type beside every parameter: ``<bool>`` after a flag that
takes no value, ``<list[str]>`` after a repeatable option, ``<int range>`` before a range that
already says it is a number. The command classes here show a flag with no value, and any other
parameter by the kind of value typed on the command line: ``<integer>``, ``<number>``,
``<text>``, ``<path>``, the choices (``<lstm|gru|rnn>``), with ``...`` when it repeats.
A ``metavar`` declared on an option still wins. Every command and group of the CLI is built
on these classes; tests/test_cli_display.py renders each one's help at 80 columns.

They also keep ``--help`` and tab completion quick: typer checks the value of every parameter
it processes, given or not, with a pydantic validator it builds on first use, and building the
first imports pydantic. Here a parameter's check is built only when it has a value to check
(tests/test_startup.py).
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


def range_of(param):
    """The range an option was declared with (``charrnn.cli.shared.ranged``), or None."""
    info = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
    return getattr(info, "charrnn_range", None)


def _readable(param, ctx) -> None:
    allowed = range_of(param)
    if allowed is not None:
        # Shown from the table whether typer checks it or a config does.
        param._get_number_range_help_str = allowed.shown
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


class _CoercionWhenGiven:
    """Typer's value check for one parameter, built only once the parameter has a value.
    Typer builds a pydantic validator for every parameter it processes, given or not, and the
    first one imports pydantic (about 60 ms): on every ``--help`` and every tab completion,
    which process parameters that have no value. An absent value needs no check, and neither
    does a parameter's own default when it already has the declared type: the code set it."""

    def __init__(self, build) -> None:
        self._build = build

    def coerce(self, value, param, ctx):
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        declared = param.type_descriptor.annotation
        if value is param.default and isinstance(declared, type) and isinstance(value, declared):
            return value
        param._runtime_param = self._build(param.type_descriptor)
        return param._runtime_param.coerce(value, param=param, ctx=ctx)


def _check_values_when_given(params) -> None:
    try:
        from typer._coercion import build_runtime_param
    except ImportError:  # another typer: its own way, only slower
        return
    for param in params:
        if getattr(param, "_runtime_param", ...) is None and hasattr(param, "type_descriptor"):
            param._runtime_param = _CoercionWhenGiven(build_runtime_param)


class ReadableHelp:
    """Mixin for a typer command or group class: see the module docstring."""

    def parse_args(self, ctx, args):
        _check_values_when_given(self.get_params(ctx))
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter) -> None:
        for param in self.get_params(ctx):
            _readable(param, ctx)
        super().format_help(ctx, formatter)


class HelpCommand(ReadableHelp, typer.core.TyperCommand):
    pass


class HelpGroup(ReadableHelp, typer.core.TyperGroup):
    pass
