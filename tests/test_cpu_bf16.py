"""`--precision` on a CPU: bf16 autocast trains where the CPU multiplies bf16 natively
(avx512_bf16, amx_bf16), is refused in one line where it does not, and `auto` stays fp32.
The tests that train in bf16 need such a CPU and skip, saying so, without one."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from charrnn.device import cpu_bf16_flags

runner = CliRunner()
# A 1x32 LSTM, 8 streams of 32 characters, evaluated every 10 steps.
TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32", "--eval-every", "10", "--seed", "5", "--threads", "1", "--lr", "0.01"]
needs_bf16 = pytest.mark.skipif(not cpu_bf16_flags(), reason="this CPU has no native bf16 (avx512_bf16 or amx_bf16)")


def train(*args):
    return runner.invoke(app, ["train", *map(str, args), *TINY])


def weights(run) -> dict[str, torch.Tensor]:
    return checkpoint.load(run)["model"]


def test_bf16_is_refused_in_one_line_on_a_cpu_without_it(text_file, tmp_path, monkeypatch):
    monkeypatch.setattr("charrnn.device.cpu_bf16_flags", lambda: ())
    result = train(text_file, "--out", tmp_path / "r", "--max-steps", 2, "--precision", "bf16")
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--precision bf16" in lines[0] and "avx512_bf16" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_auto_trains_in_fp32_on_a_cpu_and_the_header_says_so(text_file, tmp_path):
    result = train(text_file, "--out", tmp_path / "r", "--max-steps", 2)
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("precision: "))
    assert line.startswith("precision: fp32")
    assert checkpoint.load(tmp_path / "r")["train_config"]["precision"] == "auto"


@needs_bf16
def test_bf16_training_learns_and_repeats_itself_exactly(text_file, tmp_path):
    runs = []
    for name in ("a", "b"):
        result = train(text_file, "--out", tmp_path / name, "--max-steps", 30, "--precision", "bf16")
        assert result.exit_code == 0, result.stderr
        assert "precision: bf16 autocast" in result.stderr
        runs.append(tmp_path / name)
    metrics = checkpoint.load(runs[0])["metrics"]
    unigram = float(next(line for line in result.stderr.splitlines() if line.startswith("unigram baseline")).split()[2])
    assert metrics["best_val_loss"] is not None
    # Below the unigram baseline: the model learned the text's order, not only its letters.
    assert metrics["best_val_loss"] / 0.6931471805599453 < unigram
    first, second = weights(runs[0]), weights(runs[1])
    assert all(first[name].dtype == torch.float32 for name in first)  # autocast: fp32 weights
    assert all(torch.equal(first[name], second[name]) for name in first)


@needs_bf16
def test_a_bf16_run_resumes_exactly_in_bf16(text_file, tmp_path):
    # A constant rate after warmup: the schedule then does not depend on the budget, so 10
    # steps and 10 more retrace 20 steps.
    constant = ["--schedule", "constant", "--warmup-steps", "5"]
    straight = tmp_path / "straight"
    assert train(text_file, "--out", straight, "--max-steps", 20, "--precision", "bf16", *constant).exit_code == 0
    stopped = tmp_path / "stopped"
    assert train(text_file, "--out", stopped, "--max-steps", 10, "--precision", "bf16", *constant).exit_code == 0
    resumed = runner.invoke(app, ["train", "--resume", str(stopped), "--max-steps", "20", "--threads", "1"])
    assert resumed.exit_code == 0, resumed.stderr
    assert "not bit-for-bit" not in resumed.stderr
    a, b = weights(straight), weights(stopped)
    assert all(torch.equal(a[name], b[name]) for name in a)


@needs_bf16
def test_a_resume_in_another_precision_says_so_in_one_line(text_file, tmp_path):
    run = tmp_path / "r"
    assert train(text_file, "--out", run, "--max-steps", 10, "--precision", "bf16").exit_code == 0
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--extend-steps", "5", "--precision", "fp32", "--threads", "1"])
    assert resumed.exit_code == 0, resumed.stderr
    notices = [line for line in resumed.stderr.splitlines() if "not bit-for-bit" in line]
    assert len(notices) == 1 and "--precision bf16" in notices[0] and "fp32" in notices[0]
    assert checkpoint.load(run)["metrics"]["step"] == 15


@needs_bf16
def test_bench_measures_fp32_and_bf16_side_by_side_each_against_its_own_peak(tmp_path):
    import json

    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--preset", "tiny", "--no-memory", "--no-sampling", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    rows = {row["precision"]: row for row in figures["training"]}
    assert set(rows) == {"fp32", "bf16"}
    for name, row in rows.items():
        assert row["ratio"] == pytest.approx(row["gflops"] / figures["peak"][f"{name}_gflops"])
    assert figures["machine"]["bf16_flags"] and figures["machine"]["cpu_model"]
    assert f"CPU: {figures['machine']['cpu_model']}; native bf16 instructions: " in result.stdout
    assert "matmul peak: fp32 " in result.stdout and ", bf16 " in result.stdout
