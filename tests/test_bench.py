"""The benchmark's plumbing (speeds themselves are measured by `charrnn bench`, not tested)."""

import json

import pytest
from typer.testing import CliRunner

from charrnn.bench.speed import encode_speed, flops_per_char, preset_model, write_corpus
from charrnn.cli.app import app
from charrnn.model.network import CharRNN, ModelConfig


def test_flop_formula():
    config = ModelConfig(vocab_size=65, cell="lstm", layers=2, hidden=256, embed=64)
    # layer 0: 2*4*256*(64+256); layer 1: 2*4*256*(256+256); decoder 2*256*65
    forward = 655_360 + 1_048_576 + 33_280
    assert flops_per_char(config) == {"forward": forward, "train": 3 * forward}
    gru = ModelConfig(vocab_size=10, cell="gru", layers=1, hidden=8, embed=4)
    assert flops_per_char(gru)["forward"] == 2 * 3 * 8 * 12 + 2 * 8 * 10


def test_flop_count_matches_the_models_matrix_multiplies():
    # The counted FLOPs are 2 per multiply-add of every weight matrix except the embedding.
    config = preset_model("small")
    model = CharRNN(config)
    weights = sum(p.numel() for n, p in model.named_parameters() if "weight" in n and "embedding" not in n)
    assert flops_per_char(config)["forward"] == 2 * weights


def test_shapes_are_accepted_as_presets():
    config = preset_model("3x1024")
    assert (config.layers, config.hidden) == (3, 1024)


def test_encoding_measurement_on_a_generated_corpus(text_file, tmp_path):
    path = tmp_path / "c.txt"
    size = write_corpus(path, 1, source=text_file)
    assert 999_990 < size <= 1_000_000
    path.read_bytes().decode("utf-8")  # cut on a character boundary
    figures = encode_speed(path)
    assert figures["chars"] == len(path.read_text(encoding="utf-8")) and figures["both_passes_mchars_per_s"] > 0


def test_bench_command_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app, ["bench", "--preset", "tiny", "--no-memory", "--no-sampling", "--device", "cpu", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "of peak" in result.stdout and "FLOPs counted" in result.stdout
    figures = json.loads(out.read_text())
    row = figures["training"][0]
    assert figures["peak"]["fp32_gflops"] > 0 and row["shape"] == "1x128"
    assert row["ratio"] == pytest.approx(row["gflops"] / figures["peak"]["fp32_gflops"])


def test_bench_refuses_a_bad_option():
    result = CliRunner().invoke(app, ["bench", "--corpus-mb", "0"])
    assert result.exit_code == 2


def test_gpu_defaults_measure_two_batches_and_name_shapes_once():
    import io

    import torch
    from rich.console import Console

    from charrnn.bench.speed import GPU_THROUGHPUT_BATCH, BenchResult, default_batches, default_presets
    from charrnn.cli.bench_tables import render_bench
    from charrnn.training.trainer import CPU_BATCH_SIZE, GPU_BATCH_SIZE

    assert default_batches(torch.device("cpu")) == (CPU_BATCH_SIZE,)
    assert default_batches(torch.device("cuda")) == (GPU_BATCH_SIZE, GPU_THROUGHPUT_BATCH)
    assert default_presets(torch.device("cuda")) == ("2x512", "3x1024")
    row = {"preset": "2x512", "shape": "2x512", "cell": "lstm", "batch_size": 128, "seq_len": 64,
           "chars_per_s": 685_022.0, "gflops": 14_140.0, "ratio": 0.02, "flops_per_char": 20_650_000,
           "parameters": 3_457_729}  # fmt: skip
    result = BenchResult(machine={"device": "GPU", "cpus": 16, "torch_threads": 16, "torch": "x", "cudnn": 91900},
                         peak={"reference": "fp16", "fp16_gflops": 719_780.0, "fp32_gflops": 52_160.0},
                         training=[row, {**row, "preset": "small", "shape": "2x256"}])  # fmt: skip
    buffer = io.StringIO()
    render_bench(result, Console(file=buffer, width=150, no_color=True))
    text = buffer.getvalue()
    assert " 2x512 lstm " in text and "2x512 2x512" not in text and " small 2x256 lstm " in text
    assert "TFLOP/s" in text and "14.14" in text


def test_startup_bench_times_help_and_completion_against_the_bare_interpreter():
    import subprocess
    import sys

    from charrnn.bench.startup import REFERENCE, _completion_env, run_startup

    # The environment the bench times completion with really completes.
    completed = subprocess.run(
        [sys.executable, "-m", "charrnn"], env=_completion_env("charrnn tr"), capture_output=True, text=True, check=True
    )
    assert completed.stdout.split() == ["train"]
    result = run_startup([["info"]], ["charrnn train --ce"], rounds=2)
    names = [row["what"] for row in result.rows]
    assert names == [REFERENCE, "charrnn info --help", "complete 'charrnn train --ce'"]
    reference, *commands = result.rows
    assert reference["times_reference"] == 1.0
    # A fresh process that imports typer and rich cannot start faster than a bare interpreter.
    assert all(row["median_s"] > reference["median_s"] * 1.5 and row["best_s"] <= row["median_s"] for row in commands)


@pytest.mark.slow
def test_serve_bench_accounts_for_every_request_and_measures_the_step_ceiling(trained_run, one_thread):
    """A real `charrnn serve` process and real streaming clients, at short levels: every request
    is completed (none lost, hung or refused), characters arrive, and the bare batched step is
    timed in the same run as the reference the ratio is read against."""
    from charrnn.bench.serve_load import run_serve_load

    result = run_serve_load(trained_run, clients=(1, 4), seconds=1.5, max_tokens=40)
    assert [level.clients for level in result.levels] == [1, 4]
    for level in result.levels:
        assert level.accounted and level.sent == level.completed > 0 and not level.errors and level.failed == 0
        assert level.chars == level.completed * 40  # no stop string: every request runs to max_tokens
        assert level.ttfc_p50_ms is not None and level.ttfc_p50_ms > 0
    assert result.levels[1].busiest_step >= 2  # the four clients' streams shared steps
    assert set(result.step_ms) == {1, 4} and all(ms > 0 for ms in result.step_ms.values())
    assert result.ceiling(4) == pytest.approx(4 * result.step_ms[1] / result.step_ms[4])
    assert json.loads(json.dumps(result.to_dict()))["ceiling"]["4"] == pytest.approx(result.ceiling(4))


def test_explore_bench_times_the_analysis_beside_eval_of_the_same_text(trained_run, tmp_path):
    out = tmp_path / "explore.json"
    result = CliRunner().invoke(app, ["bench", "--explore", str(trained_run), "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    # The analysis scores the text as eval does (one stream from a zero state).
    assert figures["bpc_explain"] == pytest.approx(figures["bpc_eval"], abs=1e-3)
    assert figures["ratio"] == pytest.approx(figures["explain_best_s"] / figures["eval_best_s"])
    assert 0 < figures["eval_best_s"] <= figures["eval_median_s"] and figures["chars"] > 100
    assert "charrnn eval" in result.stdout and "explorer" in result.stdout
    refused = CliRunner().invoke(app, ["bench", "--explore", str(trained_run), "--long"])
    assert refused.exit_code == 2 and "--explore does not use --long" in refused.stderr


def test_explore_bench_refuses_a_missing_run_and_a_json_path_onto_the_checkpoint(trained_run, tmp_path):
    missing = CliRunner().invoke(app, ["bench", "--explore", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and len(missing.stderr.strip().splitlines()) == 1 and "nothing" in missing.stderr
    onto = CliRunner().invoke(app, ["bench", "--explore", str(trained_run), "--json", str(trained_run / "last.pt")])
    assert onto.exit_code == 2 and "checkpoint" in onto.stderr and len(onto.stderr.strip().splitlines()) == 1
