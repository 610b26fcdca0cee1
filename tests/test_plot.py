"""Learning curves (PNG and text chart) and the samples written at each evaluation, from real
tiny training runs through the real CLI."""

import pytest
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from charrnn.training.plot import load_curves, text_chart

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "24", "--embed", "8", "--batch-size", "4", "--seq-len", "24", "--dropout", "0.2"]


def train(text_file, out, *extra):
    result = runner.invoke(
        app, ["train", str(text_file), "--out", str(out), "--max-steps", "30", "--eval-every", "10", "--eval-chars", "600", *TINY, *extra]
    )
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.conftest import small_text

    root = tmp_path_factory.mktemp("plots")
    text = root / "verse.txt"
    text.write_text(small_text(), encoding="utf-8")
    with_samples = train(text, root / "a", "--eval-sample-chars", "40")
    without = train(text, root / "b", "--eval-sample-chars", "0", "--lr", "0.004")
    return with_samples, without


def test_a_sample_is_written_at_each_evaluation(runs):
    with_samples, without = runs
    text = (with_samples / "samples.txt").read_text(encoding="utf-8")
    blocks = [b for b in text.split("=== step ")[1:]]
    assert [b.split(",")[0] for b in blocks] == ["10", "20", "30"]
    for block in blocks:
        header, body = block.split(" ===\n", 1)
        assert " bpc" in header and len(body.rstrip("\n")) <= 40 and body.strip()
    assert not (without / "samples.txt").exists() or not (without / "samples.txt").read_text().strip()


def test_writing_samples_does_not_disturb_training(runs, tmp_path):
    # Same options except the samples (and dropout draws from the global RNG): same weights.
    with_samples, _ = runs
    from tests.conftest import small_text

    text = tmp_path / "verse.txt"
    text.write_text(small_text(), encoding="utf-8")
    plain = train(text, tmp_path / "plain", "--eval-sample-chars", "0")
    a = checkpoint.load(with_samples)["model"]
    b = checkpoint.load(plain)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_plot_writes_a_png_for_one_run_and_for_several(runs, tmp_path):
    a, b = runs
    result = runner.invoke(app, ["plot", str(a)])
    assert result.exit_code == 0, result.stderr
    png = a / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert result.stdout == ""
    compare = tmp_path / "compare.png"
    result = runner.invoke(app, ["plot", str(a), str(b), "--out", str(compare)])
    assert result.exit_code == 0, result.stderr
    assert compare.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_terminal_chart_shows_both_runs_and_writes_no_file(runs, tmp_path):
    a, b = runs
    (tmp_path / "x").mkdir()
    result = runner.invoke(app, ["plot", str(a), str(b), "--terminal", "--x", "time", "--width", "50", "--height", "10"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "bits per character against minutes" in result.stdout
    grid = [line.split("|", 1)[1] for line in lines if "|" in line]
    assert len(grid) == 10 and all(len(row) == 50 for row in grid)
    cells = "".join(grid)
    assert "A" in cells and "B" in cells and "." in cells and ":" in cells
    assert f"{a.name}: last train" in result.stdout and "best val" in result.stdout
    assert not (tmp_path / "curves.png").exists()


def test_curves_match_the_metrics_and_survive_a_torn_line(runs, tmp_path):
    a, _ = runs
    curves = load_curves(a)
    assert curves.step == list(range(1, 31)) and curves.val_step == [10, 20, 30]
    torn = tmp_path / "metrics.jsonl"
    torn.write_text((a / "metrics.jsonl").read_text() + '{"event": "step", "st', encoding="utf-8")
    assert load_curves(torn).step == curves.step
    assert "bits per character" in text_chart([curves])


def test_plot_of_a_directory_without_metrics_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 1
    assert "no metrics.jsonl here" in result.stderr and "Traceback" not in result.stderr
    bad = runner.invoke(app, ["plot", str(tmp_path), "--x", "days"])
    assert bad.exit_code == 2 and "--x must be step or time" in bad.stderr
