"""The documentation says what the software does: docs/usage.md's options tables are the
commands' real options, every option a page names exists, every relative link leads to a file
and heading that exist, and the README stays a short page that names every command and the
two make targets it promises."""

from __future__ import annotations

import difflib
import re

import pytest

from charrnn.cli import usage_doc
from tests.conftest import REPO

DOCS = REPO / "docs"
USAGE = DOCS / "usage.md"
README = REPO / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

# Options of other programs that the pages show in commands beside charrnn's.
FOREIGN_OPTIONS = {
    "--standalone", "--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id",  # torchrun
    "--logdir",  # tensorboard
    "--check",  # python -m charrnn.cli.usage_doc
    "--list", "--update",  # python -m tests.doc_examples
    "--dist",  # pytest-xdist (make test)
    "--info", "--logits", "--score", "--bench",  # the compiled C model (docs/export-c.md)
}
FENCED = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")
LINK = re.compile(r"\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)\)")
STATED_DEFAULT = re.compile(r"\[default: ([^\]]*)\]")


def _prose(path) -> str:
    """A page without its fenced code blocks (where '#' starts a comment, not a heading)."""
    return FENCED.sub("", path.read_text(encoding="utf-8"))


def _real_options() -> dict[str, set[str]]:
    options = {}
    for words, command, ctx in usage_doc.commands():
        options[" ".join(words)] = {
            name for p in command.get_params(ctx) if not usage_doc.is_argument(p) for name in usage_doc.option_names(p)
        }
    return options


def _command_sections(block: str) -> dict[str, str]:
    """The generated block's text per command ("" for the root, "corpus fetch", ...)."""
    parts = re.split(r"^### `charrnn ?([^`]*)`$", block, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _cells(row: str) -> list[str]:
    return [cell.strip().replace("\\|", "|").replace("\\*", "*").replace("\\_", "_") for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


# ------------------------------------------------------------------------- docs/usage.md


def test_usage_tables_are_the_commands_real_options():
    written = usage_doc.current_block(USAGE.read_text(encoding="utf-8"))
    rendered = usage_doc.render()
    diff = "\n".join(difflib.unified_diff(written.splitlines(), rendered.splitlines(), "docs/usage.md", "the commands", lineterm="", n=1))
    assert written == rendered, (
        "docs/usage.md's options tables differ from the commands' options; regenerate them with "
        f"`python -m charrnn.cli.usage_doc`:\n{diff[:4000]}"
    )


def test_every_option_is_documented_under_its_command_with_its_default():
    """Read from the command objects directly, not through the renderer: a renderer that
    dropped an option or a default would otherwise pass the comparison above."""
    sections = _command_sections(usage_doc.current_block(USAGE.read_text(encoding="utf-8")))
    for words, command, ctx in usage_doc.commands():
        name = " ".join(words)
        assert name in sections, f"docs/usage.md has no section for `charrnn {name}`"
        rows = [line for line in sections[name].splitlines() if line.startswith("| `")]
        for param in command.get_params(ctx):
            if param.name == "help":
                continue
            if usage_doc.is_argument(param):
                spelled = (param.metavar or param.name).upper()
                assert any(_cells(r)[0].strip("`").rstrip(".") == spelled for r in rows), f"charrnn {name}: argument {spelled} is not documented"
                continue
            row = next((r for r in rows if _cells(r)[0].split("`")[1] == param.opts[0]), None)
            assert row is not None, f"charrnn {name}: {param.opts[0]} is not documented"
            for spelling in usage_doc.option_names(param):
                assert f"`{spelling}`" in _cells(row)[0], f"charrnn {name}: {spelling} is missing from its row"
            if getattr(param, "show_envvar", False) and param.envvar:
                # --help names the variable the option is also read from; so must the table.
                assert f"${param.envvar}" in _cells(row)[3], f"charrnn {name} {param.opts[0]}: its environment variable ${param.envvar} is not in docs/usage.md"
            default = _cells(row)[2]
            stated = STATED_DEFAULT.search((param.help or "").replace("\\[", "["))
            if stated:
                assert default == stated.group(1), f"charrnn {name} {param.opts[0]}: default {default!r}, --help says {stated.group(1)!r}"
            elif param.default is not None and not param.is_flag and param.show_default is not False:
                value = getattr(param.default, "value", param.default)
                assert default == (str(value) or "empty"), f"charrnn {name} {param.opts[0]}: default {default!r}, the command's is {value!r}"


def test_documented_options_exist():
    """Every option named in a table row belongs to that command, and every option a page
    mentions anywhere belongs to some command (or to a program charrnn runs beside)."""
    real = _real_options()
    sections = _command_sections(usage_doc.current_block(USAGE.read_text(encoding="utf-8")))
    for name, text in sections.items():
        for row in text.splitlines():
            if row.startswith("| `-"):
                for spelling in re.findall(r"`(-[^`]+)`", _cells(row)[0]):
                    assert spelling in real[name], f"docs/usage.md documents {spelling} under `charrnn {name}`, which has no such option"
    everywhere = set().union(*real.values()) | FOREIGN_OPTIONS
    for page in PAGES:
        unknown = sorted(set(OPTION.findall(page.read_text(encoding="utf-8"))) - everywhere)
        assert not unknown, f"{page.relative_to(REPO)} names options no command has: {', '.join(unknown)}"


def test_the_generator_rewrites_only_its_block(tmp_path):
    page = tmp_path / "usage.md"
    page.write_text(f"# Title\n\nbefore\n\n{usage_doc.BEGIN}\nstale\n{usage_doc.END}\n\nafter\n", encoding="utf-8")
    assert usage_doc.main([str(page), "--check"]) == 1
    assert usage_doc.main([str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "stale" not in text
    assert usage_doc.current_block(text) == usage_doc.render()
    assert usage_doc.main([str(page), "--check"]) == 0


# -------------------------------------------------------------------------------- links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(page), re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_files_and_headings_that_exist(page):
    broken = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {path})")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {'; '.join(broken)}"


# ------------------------------------------------------------------------------- README


def test_readme_is_a_short_page_naming_every_command():
    text = README.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= 150, f"README.md has {lines} lines; it is read in ten minutes: move detail to docs/"
    listed = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    for words, _, _ in usage_doc.commands():
        if len(words) == 1:
            assert re.search(rf"^\| \[?`charrnn {words[0]}\b", listed, re.M), f"the README's command list has no line for `charrnn {words[0]}`"


def test_readme_promises_the_make_targets_the_makefile_has():
    readme = README.read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M), f"the Makefile has no `{target}` target"
