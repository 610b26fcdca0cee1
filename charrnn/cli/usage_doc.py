"""The options reference of docs/usage.md, rendered from the commands themselves.

Every command of ``charrnn.cli.app.app`` becomes a section with its usage line and Markdown
tables of its arguments and options (name, value, default, meaning), grouped and ordered as
its ``--help`` shows them. The tables sit in docs/usage.md between the two marker lines below;
``python -m charrnn.cli.usage_doc`` rewrites what lies between them, and ``--check`` only says
whether it is current. tests/test_docs.py makes the same comparison, so the page cannot
drift from the options the commands really take.

A default the help text states itself (``\\[default: ...]``, written where the parameter is
None until the run resolves it from the preset, the device, a resumed run or another option)
goes to the default column; otherwise the column shows the parameter's own default value.
"""

from __future__ import annotations

import argparse
import re
import sys
from enum import Enum
from pathlib import Path

import typer

from charrnn.cli.help import _value_name, range_of

BEGIN = "<!-- BEGIN GENERATED OPTIONS: python -m charrnn.cli.usage_doc -->"
END = "<!-- END GENERATED OPTIONS -->"
USAGE_MD = Path(__file__).resolve().parents[2] / "docs" / "usage.md"
PROG = "charrnn"

# The help text's own statement of a default, as --help prints it (rich markup escapes "[").
_STATED_DEFAULT = re.compile(r"\s*\\?\[default: (?P<value>[^\]]*)\]")


def commands() -> list[tuple[tuple[str, ...], object, object]]:
    """(words, command, context) for the root and every command below it, in --help order."""
    from charrnn.cli.app import app

    root = typer.main.get_command(app)
    context = root.context_class
    found = []

    def walk(command, ctx, words):
        found.append((words, command, ctx))
        for name in getattr(command, "list_commands", lambda ctx: [])(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                walk(sub, context(sub, info_name=name, parent=ctx), (*words, name))

    walk(root, context(root, info_name=PROG), ())
    return found


def is_argument(param) -> bool:
    return isinstance(param, typer.core.TyperArgument)


def documented_params(command, ctx) -> list:
    """The parameters a reader can give, --help left out (every command has it)."""
    return [p for p in command.get_params(ctx) if p.name != "help" and not getattr(p, "hidden", False)]


def _argument_name(param) -> str:
    return (param.metavar or param.name).upper().strip("<>") + ("..." if param.nargs == -1 else "")


def usage_line(words, command, ctx) -> str:
    pieces = [PROG, *words, "[OPTIONS]"]
    for param in command.get_params(ctx):
        if is_argument(param):
            name = _argument_name(param)
            pieces.append(name if param.required else f"[{name}]")
    if getattr(command, "list_commands", None):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def option_names(param) -> list[str]:
    """Every spelling of an option on the command line (``--x``, ``-x``, ``--no-x``)."""
    return [*param.opts, *param.secondary_opts]


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def value_text(param, ctx) -> str:
    """What the parameter takes, as --help names it, with the range the checks allow."""
    if not is_argument(param) and param.is_flag:
        return ""
    name = param.metavar if param.metavar and not is_argument(param) else _value_name(param.display_type(ctx))
    text = f"`{name}`"
    allowed = range_of(param)
    if allowed is None or allowed.shown() is None:  # an open lower end is said in the help text
        return text
    if allowed.high is None:
        return f"{text} ≥ {_number(allowed.low)}"
    if allowed.high_open:
        return f"{text} ≥ {_number(allowed.low)}, < {_number(allowed.high)}"
    return f"{text} {_number(allowed.low)} to {_number(allowed.high)}"


def _shown(value) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(v) for v in value)
    return str(value)


def default_text(param) -> str:
    """The default as plain text: the one the help text states, else the parameter's own."""
    stated = _STATED_DEFAULT.search(param.help or "")
    if stated:
        return stated.group("value")
    if param.required:
        return "required"
    if getattr(param, "show_default", True) is False or param.default is None:
        return ""
    if not is_argument(param) and param.is_flag:
        if param.is_eager:
            return ""  # --version: an action, not a setting
        if param.secondary_opts:
            return param.opts[0] if param.default else param.secondary_opts[0]
        return "on" if param.default else "off"
    shown = _shown(param.default)
    return shown if shown else "empty"


def help_text(param) -> str:
    text = _STATED_DEFAULT.sub("", param.help or "")
    if getattr(param, "show_envvar", False) and param.envvar:
        # --help names the variable (click adds it); the table must too.
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        text += f" Also read from {' or '.join(f'${n}' for n in names)}."
    return " ".join(text.split())


def _cell(text: str) -> str:
    """Text for a table cell: a pipe would end the cell, < would open an HTML tag, * and _
    pairs would turn into emphasis."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")
    return re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", text)


def _name_cell(param) -> str:
    if is_argument(param):
        return f"`{_argument_name(param)}`"
    names = [f"`{n}`" for n in param.opts]
    text = ", ".join(names)
    if param.secondary_opts:
        text += " / " + ", ".join(f"`{n}`" for n in param.secondary_opts)
    return text


def _row(param, ctx) -> str:
    cells = [_name_cell(param), value_text(param, ctx).replace("|", "\\|"), _cell(default_text(param)), _cell(help_text(param))]
    return "| " + " | ".join(cells) + " |"


def panels(command, ctx) -> list[tuple[str, list]]:
    """The parameters by --help panel: arguments, then options without a panel, then each
    named panel in the order its first option appears."""
    groups: dict[str, list] = {}
    params = documented_params(command, ctx)
    arguments = [p for p in params if is_argument(p)]
    if arguments:
        groups["Arguments"] = arguments
    groups["Options"] = []
    for param in params:
        if not is_argument(param):
            groups.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(param)
    return [(name, group) for name, group in groups.items() if group]


def section(words, command, ctx) -> str:
    title = " ".join((PROG, *words))
    lines = [f"### `{title}`", ""]
    summary = (command.help or "").strip()
    if summary:
        lines += [" ".join(summary.split()), ""]
    lines += ["```", usage_line(words, command, ctx), "```", ""]
    groups = panels(command, ctx)
    for name, params in groups:
        if len(groups) > 1:
            lines += [f"**{name}**", ""]
        kind = "argument" if name == "Arguments" else "option"
        lines += [f"| {kind} | value | default | meaning |", "|---|---|---|---|"]
        lines += [_row(p, ctx) for p in params]
        lines.append("")
    if getattr(command, "list_commands", None):
        lines += ["| command | what it does |", "|---|---|"]
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                first = " ".join((sub.help or "").strip().split())
                lines.append(f"| [`{title} {name}`](#{_slug(f'{title} {name}')}) | {_cell(first)} |")
        lines.append("")
    return "\n".join(lines)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def render() -> str:
    """The generated block, markers included."""
    body = "\n".join(section(*entry) for entry in commands()).rstrip("\n")
    return f"{BEGIN}\n\n{body}\n\n{END}"


def replace_block(document: str, block: str) -> str:
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing or out of order")
    return document[:start] + block + document[end + len(END) :]


def current_block(document: str) -> str:
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing or out of order")
    return document[start : end + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m charrnn.cli.usage_doc",
        description="Rewrite the generated options tables of docs/usage.md from the commands' real options.",
    )
    parser.add_argument("path", nargs="?", type=Path, default=USAGE_MD, help="the page to update (default: docs/usage.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    document = args.path.read_text(encoding="utf-8")
    updated = replace_block(document, render())
    if args.check:
        if updated != document:
            print(f"{args.path} is out of date: run python -m charrnn.cli.usage_doc", file=sys.stderr)
            return 1
        return 0
    if updated != document:
        args.path.write_text(updated, encoding="utf-8")
        print(f"updated {args.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
