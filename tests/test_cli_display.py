"""What the command line shows a person: every command's --help at 80 columns, the human view
of `charrnn info`, and the closing progress line of `charrnn train`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.cli.help import range_of

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]
COLUMNS = 80
# How a Python type leaks into help text: <bool>, <str>, <int range>, <list[str]>, Optional[...].
PYTHON_TYPES = re.compile(r"<(bool|str|int|float|Path|dict|tuple)\b|list\[|Optional\[|NoneType| range>")
# A range as typer shows it in an option's row: "│ --top-k   <integer> [x>=0]  Sample only..."
RANGE = re.compile(r"\[((?:-?[\d.]+<=)?x(?:(?:[<>]=|<)-?[\d.]+)?)\]")


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _commands() -> dict[str, object]:
    """Every command and group, by its words after `charrnn` ("" for charrnn itself)."""
    found = {}

    def walk(command, words):
        found[" ".join(words)] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*words, name])

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()


def render_help(words: str) -> str:
    result = invoke(*words.split(), "--help", env={"COLUMNS": str(COLUMNS), "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout


def _params(words: str):
    command = COMMANDS[words]
    ctx = command.make_context("charrnn", [], resilient_parsing=True)
    return ctx, [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]


def test_every_command_is_covered():
    # New commands join the checks below on their own; this guards the walk itself.
    assert {"", "train", "sample", "eval", "info", "plot", "vocab", "export", "bench", "corpus", "corpus list", "corpus fetch"} <= set(COMMANDS)


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_help_fits_80_columns_and_reads_as_a_command_line(words):
    text = render_help(words)
    assert max(len(line) for line in text.splitlines()) <= COLUMNS
    assert "…" not in text, f"something cut off:\n{text}"
    leaked = PYTHON_TYPES.search(text)
    assert leaked is None, f"{leaked.group(0)!r} in:\n{text}"
    ctx, params = _params(words)
    for param in params:
        # Every option name whole: not cut, not folded onto two lines.
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} not shown whole:\n{text}"
        # Every value a choice option accepts is named.
        choices = [item.value for item in param.shell_complete(ctx, "") if item.type == "plain"]
        for choice in choices:
            assert re.search(rf"\b{re.escape(choice)}\b", text), f"{param.opts} choice {choice} not shown:\n{text}"


@pytest.mark.parametrize(
    "words, option, shown, accepted, refused",
    [
        ("sample", "--unknown", "<error|skip>", "skip", "guess"),
        ("plot", "--x", "<step|time>", "time", "days"),
    ],
)
def test_text_options_with_a_fixed_set_of_values_show_it(trained_run, words, option, shown, accepted, refused):
    assert shown in option_rows(render_help(words))[option]
    base = ["sample", trained_run, "--length", 5, "--prime", "Zo"] if words == "sample" else ["plot", trained_run, "--terminal"]
    assert invoke(*base, option, accepted).exit_code == 0
    result = invoke(*base, option, refused)
    assert result.exit_code != 0 and option in result.stderr


def option_rows(text: str) -> dict[str, str]:
    """Each option's row of the help panels, its wrapped lines included."""
    rows = {}
    for block in re.split(r"\n(?=│ --)", text):
        name = re.match(r"│\s+(--[\w-]+)", block)
        if name:
            rows[name.group(1)] = block.split("╰")[0]
    return rows


def _shown_ranges() -> dict[str, dict[str, str]]:
    """{command: {option: shown range}} read from the rendered help."""
    shown = {}
    for words in COMMANDS:
        rows = {option: RANGE.search(row) for option, row in option_rows(render_help(words)).items()}
        shown[words] = {option: m.group(1) for option, m in rows.items() if m}
    return shown


def _bounds(shown: str) -> list[str]:
    """The values a shown range says are allowed at its edges: "0<=x<=0.99" -> ["0", "0.99"];
    an open end ("0<=x<1") allows no value at it."""
    low, _, high = shown.partition("x")
    return [value for value in (low.removesuffix("<="), high.removeprefix("<=").removeprefix(">=")) if value and not value.startswith("<")]


def _beyond(shown: str) -> list[str]:
    """The values just past each end of a shown range, and one far below its low end:
    "0<=x<1" -> ["-1", "-1000", "1"], "x>=2" -> ["1", "-998"]; an end at a whole number takes the
    whole number past it, which every range refuses. The far value catches a default computed
    from the option before its range is checked (a square root of a negative count)."""
    low, _, high = shown.partition("x")
    values = []
    if low:
        values.append(f"{float(low.removesuffix('<=')) - 1:g}")
        values.append(f"{float(low.removesuffix('<=')) - 1000:g}")
    if high.startswith("<="):
        values.append(f"{float(high[2:]) + 1:g}")
    elif high.startswith("<"):
        values.append(high[1:])
    elif high.startswith(">="):
        values.append(f"{float(high[2:]) - 1:g}")
        values.append(f"{float(high[2:]) - 1000:g}")
    return values


def test_the_shown_ranges_are_read_in_full():
    # The range check below reads the help; an option with a declared range that the reader
    # missed would escape it.
    shown = _shown_ranges()
    for words in COMMANDS:
        _, params = _params(words)
        declared = {p.opts[0] for p in params if range_of(p) is not None and range_of(p).shown() is not None}
        assert not {p.opts[0] for p in params if p.opts[0] not in declared and getattr(p, "min", None) is not None}, "a range not from charrnn.ranges"
        declared = {name for name in declared if name.startswith("--")}
        assert declared == set(shown[words]), words


# Options that only make sense with another one; the boundary runs add it.
NEEDS = {"--vocab-size": ["--tokenizer", "bpe"], "--copy-min-run": ["--check-copying"]}
# The dynamic update's options act with eval --dynamic or sample --adapt (on a short text).
DYNAMIC_MODE = {"eval": lambda text: ["--dynamic"], "sample": lambda text: ["--adapt", text]}


def _needs(words: str, option: str, text_file) -> list:
    if option.startswith("--dynamic-"):
        short = text_file.with_name("short.txt")
        short.write_text(text_file.read_text(encoding="utf-8")[:400], encoding="utf-8")
        return DYNAMIC_MODE[words](short)
    return NEEDS.get(option, [])
# A step of the tiny model with an evaluation: cheap enough to run once per shown boundary.
RUNS = {
    "train": lambda tmp, text_file, run: ["train", text_file, "--out", tmp, "--max-steps", 1, "--eval-every", 1, *TINY],
    "sample": lambda tmp, text_file, run: ["sample", run, "--length", 5, "--seed", 1],
    "plot": lambda tmp, text_file, run: ["plot", run, "--terminal"],
    "eval": lambda tmp, text_file, run: ["eval", run, text_file],
    "gradients": lambda tmp, text_file, run: ["gradients", run, "--text", text_file, "--steps", 5],
    "inspect": lambda tmp, text_file, run: ["inspect", run, "--text", text_file, "--chars", 200, "--find"],
}
# bench measures for minutes, and serve and explore run until they are stopped, so their ranges
# are not run here.
NOT_RUN = {"bench", "serve", "explore"}


def test_every_value_a_shown_range_allows_at_its_edges_is_accepted(tmp_path, text_file, trained_run):
    shown = _shown_ranges()
    assert set(shown["train"]) >= {"--dropout", "--val-frac", "--layers"}  # the reader works
    refused = []
    tried = 0
    for words, ranges in shown.items():
        if not ranges or words in NOT_RUN:
            continue
        for option, allowed in ranges.items():
            for value in _bounds(allowed):
                out = tmp_path / f"run{tried}"
                tried += 1
                args = [*RUNS[words](out, text_file, trained_run), *_needs(words, option, text_file), option, value]
                result = invoke(*args)
                if result.exit_code != 0:
                    refused.append(f"{words} {option} {value} (shown [{allowed}]): {result.stderr.strip()}")
    assert tried >= 25
    assert not refused, "\n".join(refused)


def test_every_value_just_past_a_shown_range_is_refused_in_one_line_naming_the_option(tmp_path, text_file, trained_run):
    # The range --help shows and the one a check enforces are one table's (charrnn.ranges):
    # the value past each end is refused, whichever layer checks it.
    accepted = []
    tried = 0
    for words, ranges in _shown_ranges().items():
        if not ranges or words in NOT_RUN:
            continue
        for option, allowed in ranges.items():
            for value in _beyond(allowed):
                tried += 1
                args = [*RUNS[words](tmp_path / f"run{tried}", text_file, trained_run), *_needs(words, option, text_file), option, value]
                result = invoke(*args)
                if result.exit_code == 0 or option not in result.stderr or len(result.stderr.strip().splitlines()) != 1:
                    accepted.append(f"{words} {option} {value} (shown [{allowed}]): exit {result.exit_code}, {result.stderr.strip()!r}")
    assert tried >= 25
    assert not accepted, "\n".join(accepted)


@pytest.mark.parametrize(
    "words, option, zero",
    [
        ("train", "--lr", "0"),
        ("train", "--minutes", "0"),
        ("train", "--epochs", "0"),
        ("sample", "--top-p", "0"),
        ("sample", "--repetition-penalty", "0"),
    ],
)
def test_options_that_refuse_zero_say_so_and_show_no_range_with_it(text_file, trained_run, tmp_path, words, option, zero):
    row = option_rows(render_help(words))[option]
    assert "x>=0" not in row and "0<=x" not in row
    assert "above 0" in " ".join(re.sub(r"[│\s]+", " ", row).split()), row
    base = ["train", text_file, "--out", tmp_path / "r", "--max-steps", 1, *TINY] if words == "train" else ["sample", trained_run]
    result = invoke(*base, option, zero)
    assert result.exit_code != 0 and option in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_in_a_real_80_column_process():
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("TERMINAL_WIDTH", None)
    for words in ("train", "sample"):
        proc = subprocess.run(
            [sys.executable, "-m", "charrnn", *words.split(), "--help"], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert max(len(line) for line in proc.stdout.splitlines()) <= 80
        assert "…" not in proc.stdout and "<bool>" not in proc.stdout
        assert "--eval-sample-chars" in proc.stdout or words != "train"


# ----------------------------------------------------------------------------- info


def test_info_rounds_for_people_and_json_keeps_full_precision(trained_run):
    facts = json.loads(invoke("info", trained_run, "--json").stdout)
    evals = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["event"] == "eval"]
    best = min(e["val_bpc"] for e in evals)
    assert facts["best_val_bpc"] == pytest.approx(best, rel=1e-12)
    assert facts["best_val_bpc"] != round(facts["best_val_bpc"], 4)  # not rounded
    assert facts["train_minutes"] * 60 == pytest.approx(evals[-1]["elapsed"], abs=1.0)

    result = invoke("info", trained_run)
    assert result.exit_code == 0, result.stderr
    # A row is " key  value"; a wrapped value continues on lines that start with more spaces.
    rows = dict(line.split(maxsplit=1) for line in result.stdout.splitlines() if re.match(r" \S", line))
    rows = {key: value.strip() for key, value in rows.items()}
    assert rows["best_val_bpc"] == f"{best:.4f} bpc ({best * 0.6931471805599453:.4f} nats/char)"
    assert re.fullmatch(r"\d+ s|\d+ min \d\d s|\d+ h \d\d min", rows["train_time"]), rows["train_time"]
    assert rows["parameters"] == f"{facts['parameters']:,}" and "," in rows["parameters"]
    assert str(facts["best_val_bpc"]) not in result.stdout


# ----------------------------------------------------------------------------- train progress


def _last_eval(run) -> dict:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e for e in lines if e["event"] == "eval"][-1]


def test_the_closing_progress_line_shows_the_last_logged_validation(text_file, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", text_file, "--out", run, "--max-steps", 30, "--eval-every", 10, *TINY)
    assert result.exit_code == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if re.match(r"step \d+ \|", line)]
    last = progress[-1]
    assert last.startswith("step 30 |"), result.stderr
    shown = float(re.search(r"\| val ([\d.]+) bpc \|", last).group(1))
    logged = _last_eval(run)
    assert logged["step"] == 30
    assert shown == pytest.approx(logged["val_bpc"], abs=5e-4), result.stderr
    # The eval lines print four decimals; the earlier evaluations differ from the last one, so
    # a line showing one of those would fail above.
    assert f"step 30: val {logged['val_bpc']:.4f} bpc" in result.stderr


def test_the_live_progress_bar_ends_on_the_last_logged_validation(text_file, tmp_path):
    # FORCE_COLOR makes rich draw the live bar though stderr is a pipe; its last drawing stays.
    run = tmp_path / "run"
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", str(text_file), "--out", str(run), "--max-steps", "30", "--eval-every", "10", *TINY],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stderr)
    # Each redraw of the bar starts after a carriage return; "step 30: val ..." lines are not bars.
    bars = [re.match(r"step (\d+) .* val ([\d.]+) bpc", part) for part in re.split(r"[\r\n]", plain)]
    step, val = [m for m in bars if m][-1].groups()
    logged = _last_eval(run)
    assert int(step) == 30 and float(val) == pytest.approx(logged["val_bpc"], abs=5e-4), plain[-600:]
