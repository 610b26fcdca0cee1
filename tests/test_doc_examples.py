"""The examples of README.md and docs/*.md run as the pages write them and print what the pages
show (the markers and the comparison: tests/doc_examples.py)."""

from __future__ import annotations

import re
import shutil

import pytest

from tests import doc_examples
from tests.doc_examples import Block, Command, Session, console_commands, match_lines

SESSIONS = doc_examples.sessions()
NAMED_CORPUS = re.compile(r"\b(tinyshakespeare|ptb-char|enwik8|text8)\b")


@pytest.mark.parametrize(
    "session",
    [pytest.param(s, marks=[pytest.mark.slow] if s.slow else [], id=s.id) for s in SESSIONS],
)
def test_the_example_runs_as_written_and_prints_what_the_page_shows(session, tmp_path):
    text = "".join(block.text for block in session.blocks)
    if NAMED_CORPUS.search(text) and not doc_examples.SHARED_CORPORA.is_dir():
        pytest.skip(f"needs the local corpora in {doc_examples.SHARED_CORPORA} (no download in tests)")
    if re.search(r"^cc ", text, re.M) and shutil.which("cc") is None:
        pytest.skip("needs a C compiler (cc)")
    doc_examples.run_session(session, tmp_path)


def test_the_docs_have_examples_and_say_how_each_is_shortened():
    assert len(SESSIONS) >= 7 and sum(len(s.blocks) for s in SESSIONS) >= 22, "the pages mark fewer examples than they did"
    for session in SESSIONS:
        lines = session.page.read_text(encoding="utf-8").splitlines()
        for before, after in session.shorten:
            assert any(before in block.text for block in session.blocks), f"{session.id}: shortens {before!r}, which no block has"
            # A paragraph right after one of the session's blocks tells the reader.
            following = ["\n".join(lines[block.end : block.end + 8]) for block in session.blocks]
            assert any(after in text for text in following), f"{session.id}: the page must say, after one of its blocks, that the tests run it with {after!r}"
        if session.figures:
            assert doc_examples.stamp_line(session, lines) is not None, f"{session.id}: no 'Output of charrnn ...' line after its output"


# ------------------------------------------------- the comparison itself, against known cases


def _session(**options) -> Session:
    return Session(doc_examples.REPO / "README.md", "t", **options)


def test_shown_output_must_match_and_only_timings_and_ellipses_vary():
    shown = ["step 300: val 2.7658 bpc (1.9171 nats/char) (best)", "...", "done at step 300 in 2 s; ... in tiny300"]
    printed = ["step 300: val 2.7658 bpc (1.9171 nats/char) (best)", "step 300 | 9 k", "x", "done at step 300 in 41 s; checkpoints in tiny300"]
    assert match_lines(shown, printed, None) is not None
    assert match_lines(shown, printed[:1] + printed[3:], None) is not None  # ... may stand for no line
    changed = ["step 300: val 2.7651 bpc (1.9171 nats/char) (best)", *printed[1:]]
    assert match_lines(shown, changed, None) is None
    assert match_lines(shown, changed, 0.001) is not None
    assert match_lines(shown, ["step 300: val 3.0040 bpc (1.9171 nats/char) (best)", *printed[1:]], 0.01) is None
    assert match_lines(shown, [*printed, "an extra line"], None) is None
    assert match_lines(["0:00:02 elapsed | 158.5k chars/s"], ["0:01:13 elapsed | 3.1k chars/s"], None) is not None


def test_a_command_that_exits_otherwise_than_the_page_says_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- example: t -->\n```console\n$ false\n$ exit 2   # exit 2\n```\n", encoding="utf-8")
    block = Block(page, 2, "console", "$ false\n$ exit 2   # exit 2\n", 5)
    assert [(c.command, c.exit) for c in console_commands(block)] == [("false", 0), ("exit 2", 2)]
    with pytest.raises(AssertionError, match="exited 1, the page says 0"):
        doc_examples.run_block(block, _session(), tmp_path)
    ok = Block(page, 2, "console", "$ echo 1.25 bpc\n1.25 bpc\n", 4)
    [(command, output)] = doc_examples.run_block(ok, _session(), tmp_path)
    doc_examples.check_output(command, output, _session(), "x")
    with pytest.raises(AssertionError, match="where the page shows"):
        doc_examples.check_output(Command(3, "echo", 0, ["1.26 bpc"]), output, _session(), "x")


def test_markers_are_parsed_with_their_options(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text\n<!-- example: a slow tol=0.01 shorten='--minutes 10=>--max-steps 5' -->\n```bash\necho hi\n```\n"
        "<!-- example: a -->\n```python\nprint(1)\n```\n",
        encoding="utf-8",
    )
    [session] = doc_examples.sessions([page])
    assert session.slow and session.tol == 0.01 and session.shorten == [("--minutes 10", "--max-steps 5")]
    assert [(b.kind, b.line, b.end, b.text) for b in session.blocks] == [("bash", 3, 5, "echo hi\n"), ("python", 7, 9, "print(1)\n")]
    # A marker shown inside a fenced block (as development.md shows one) is text, not a marker.
    page.write_text("````markdown\n<!-- example: b -->\n```bash\necho\n```\n````\n", encoding="utf-8")
    assert doc_examples.sessions([page]) == []
    page.write_text("<!-- example: a -->\n\n```bash\necho\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="right before"):
        doc_examples.sessions([page])


def test_update_rewrites_figures_and_keeps_the_pages_elisions():
    shown = "done at step 300 in 2 s; best val 2.7658 bpc; ... in tiny300"
    [(_, found)] = match_lines([shown], ["done at step 300 in 5 s; best val 2.7651 bpc; checkpoints in tiny300"], float("inf"))
    assert doc_examples.updated_line(shown, found) == "done at step 300 in 5 s; best val 2.7651 bpc; ... in tiny300"


def test_figures_made_on_another_machine_are_run_but_not_compared(tmp_path):
    # A model's last bits move with the CPU's kernels and torch's version, and a chart or a
    # sample with them; the page's stamp says where its figures come from.
    page = tmp_path / "page.md"
    block = "<!-- example: t figures -->\n```console\n$ echo 1\n2\n```\n\n"
    for named, compared in ((doc_examples.stamp(), True), ("Output of charrnn 0.1.0 with torch 2.0.0 on Some Other CPU, 2026-01-01", False)):
        page.write_text(block + named + "\n", encoding="utf-8")
        (session,) = doc_examples.sessions([page])
        assert (doc_examples.measured_elsewhere(session) is None) == compared
        if compared:
            with pytest.raises(AssertionError, match="printed"):
                doc_examples.run_session(session, tmp_path)
        else:
            with pytest.warns(UserWarning, match="Some Other CPU"):
                doc_examples.run_session(session, tmp_path)
