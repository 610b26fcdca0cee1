"""The memorisation check: longest copied substring and copied share, exact and through the CLI."""

import random
import re

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.generation.copying import copy_report, matching_lengths, reference_texts
from charrnn.data.corpus import load_corpus, resolve_sources
from charrnn.saved import CorpusOptions

runner = CliRunner()


def brute_matching_lengths(text: str, reference: str) -> list[int]:
    lengths = []
    for i in range(len(text)):
        n = 0
        while i + n < len(text) and text[i : i + n + 1] in reference:
            n += 1
        lengths.append(n)
    return lengths


@pytest.mark.parametrize("seed", range(5))
def test_matching_lengths_agree_with_brute_force(seed):
    rng = random.Random(seed)
    reference = "".join(rng.choice("abc") for _ in range(300))
    text = "".join(rng.choice("abcd") for _ in range(120)) + reference[40:90]
    assert matching_lengths(text, reference) == brute_matching_lengths(text, reference)


def test_report_finds_the_longest_copy_and_counts_only_long_runs():
    reference = "It was the best of times, it was the worst of times."
    text = "ZZ the best of times, QQ worst QQ"
    report = copy_report(text, reference, min_run=10)
    assert report.longest_text == " the best of times, "
    assert report.longest == len(" the best of times, ")
    # Only that run is 10+ characters; " worst " (7) is common wording, not counted.
    assert report.copied_fraction == pytest.approx(report.longest / len(text))
    assert copy_report(reference[5:30], reference).copied_fraction == 1.0
    assert copy_report("QQQQ", reference).longest == 0


def test_reference_split_is_the_training_split(text_file):
    corpus = load_corpus(resolve_sources([str(text_file)]), val_frac=0.1)
    options = CorpusOptions(train_files=[str(text_file)], val_files=[], encoding="utf-8", val_frac=0.1)
    refs = reference_texts(options)
    assert refs.train == corpus.vocab.decode(corpus.train.tolist())
    assert refs.train + refs.unseen == text_file.read_text(encoding="utf-8")


def test_cli_reports_copying_and_the_figures_are_right(trained_run):
    result = runner.invoke(app, ["sample", str(trained_run), "--length", "150", "--seed", "3", "--check-copying"])
    assert result.exit_code == 0, result.stderr
    sample = result.stdout[:-1]  # the trailing newline is the CLI's
    line = next(line for line in result.stderr.splitlines() if line.strip().startswith("sample:"))
    longest = int(re.search(r"longest verbatim run (\d+) chars", line).group(1))
    share = float(re.search(r"; ([\d.]+)% in runs of 20\+ chars", line).group(1))
    training = reference_texts(CorpusOptions(train_files=[str(trained_run.parent / "verse.txt")], val_frac=0.1)).train
    expected = copy_report(sample, training)
    assert longest == expected.longest and longest == max(brute_matching_lengths(sample, training))
    assert share == pytest.approx(100 * expected.copied_fraction, abs=0.05)
    # The tiny model has memorised its repetitive verse: long stretches of what it writes are copied.
    assert expected.longest >= 40 and expected.copied_fraction > 0.25
    assert "unseen validation text, same length" in result.stderr
    assert "copying" not in result.stdout  # reports never mix into the generated text


def test_cli_training_text_override_and_missing_file(trained_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("nothing in common here", encoding="utf-8")
    result = runner.invoke(app, ["sample", str(trained_run), "--length", "60", "--seed", "1", "--training-text", str(other)])
    assert result.exit_code == 0, result.stderr
    assert "0.0% in runs of 20+ chars" in result.stderr
    assert "unseen validation text" not in result.stderr  # a plain file has no held-out part

    result = runner.invoke(app, ["sample", str(trained_run), "--training-text", str(tmp_path / "gone.txt")])
    assert result.exit_code == 1
    assert result.stdout == ""  # refused before any text is generated
    assert len(result.stderr.strip().splitlines()) == 1 and "gone.txt" in result.stderr
