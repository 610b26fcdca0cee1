"""`--precision` for eval, sample and serve: bf16 products where the CPU multiplies bf16
natively, the same text for the same seed within a precision (alone, batched, served), eval
within a few thousandths of a bit of fp32, and one-line refusals where bf16 cannot run. The
tests that run the model's own layers in bf16 need such a CPU and skip, saying so, without."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.device import cpu_bf16_flags
from charrnn.generation.stepper import FastStepper, round_to_bf16_
from charrnn.model.network import CharRNN
from charrnn.options import ModelConfig
from charrnn.precision import faster_precision

runner = CliRunner()
needs_bf16 = pytest.mark.skipif(not cpu_bf16_flags(), reason="this CPU has no native bf16 (avx512_bf16 or amx_bf16)")


def test_rounding_to_bf16_matches_torchs_cast():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(10_000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 10_000),
        # Exact ties between two bf16 values, both ways of rounding to even, and their neighbours.
        np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-8 + 2**-20, 0.0, -0.0], np.float32),
    ]).astype(np.float32)
    expected = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(round_to_bf16_(values.copy()), expected)


def _model(cell: str) -> CharRNN:
    torch.manual_seed(3)
    model = CharRNN(ModelConfig(vocab_size=40, cell=cell, layers=2, hidden=48, embed=12))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # far from zero: gates that saturate and states that grow, as trained ones do
    return model.eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bf16_steps_agree_alone_and_batched_and_stay_near_fp32(cell):
    """One row steps in numpy on bf16 values widened to fp32, several rows in torch's bf16
    product: the same numbers summed in fp32, so a stream's logits agree alone or batched."""
    model = _model(cell)
    fp32, bf16 = FastStepper(model), FastStepper(model, torch.bfloat16)
    ids = np.array([1, 7, 22, 39])
    together, alone = bf16.initial_state(4), [bf16.initial_state(1) for _ in ids]
    reference = fp32.initial_state(4)
    apart_worst = drift_worst = 0.0
    for step in range(120):
        batched = bf16.advance(ids, together).copy()
        rows = np.stack([bf16.advance(ids[i : i + 1], alone[i])[0].copy() for i in range(len(ids))])
        exact = fp32.advance(ids, reference)
        apart_worst = max(apart_worst, float(np.abs(batched - rows).max()))
        drift_worst = max(drift_worst, float(np.abs(batched - exact).max()))
        ids = (ids * 7 + step) % 40
    # The sums' order differs (a rounding in 1e-7) and, rarely, crosses a bf16 rounding edge.
    assert apart_worst < 2e-2, apart_worst
    # bf16 keeps 8 bits of mantissa: near fp32, but not equal to it.
    assert 1e-4 < drift_worst < 0.5, drift_worst


def test_auto_keeps_bf16_only_when_it_is_clearly_faster():
    def taking(seconds):
        def step():
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        return step

    chosen, seconds = faster_precision({torch.float32: taking(2e-3), torch.bfloat16: taking(5e-4)})
    assert chosen == torch.bfloat16 and seconds[torch.bfloat16] < seconds[torch.float32]
    # Barely faster is not enough: near a tie the choice would follow the machine's load.
    chosen, _ = faster_precision({torch.float32: taking(1e-3), torch.bfloat16: taking(9e-4)})
    assert chosen == torch.float32


def test_auto_times_nothing_where_bf16_never_gains(monkeypatch):
    """One row, a few rows, or the model's own layers: fp32 without a probe, so that the
    machine's load can never choose the text a seed gives."""
    from charrnn.generation.stepper import PROBE_MIN_ROWS, choose_precision

    monkeypatch.setattr("charrnn.device.cpu_bf16_flags", lambda: ("amx_bf16",))
    model, cpu = _model("lstm"), torch.device("cpu")
    for engine, rows in (("auto", 1), ("fast", 1), ("fast", 2), ("fast", PROBE_MIN_ROWS - 1), ("eager", 64), ("auto", 64)):
        assert choose_precision(model, engine, rows, "auto", cpu) == (torch.float32, None), (engine, rows)
    dtype, probe = choose_precision(model, "fast", PROBE_MIN_ROWS, "auto", cpu)
    assert set(probe) == {torch.float32, torch.bfloat16} and dtype in probe
    # With the kernel too: one row stays fp32, the text a seed has always given.
    monkeypatch.setattr("charrnn.generation.stepper.load_kernel", lambda: object())
    assert choose_precision(model, "auto", 1, "auto", cpu) == (torch.float32, None)


def _one_line_error(result, *words):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), result.stderr
    assert "Traceback" not in result.stderr


def test_bf16_is_refused_in_one_line_where_the_cpu_lacks_it(trained_run, text_file, monkeypatch):
    monkeypatch.setattr("charrnn.device.cpu_bf16_flags", lambda: ())
    for command in (["sample", str(trained_run), "--length", "5"], ["eval", str(trained_run), str(text_file)]):
        _one_line_error(runner.invoke(app, [*command, "--precision", "bf16"]), "--precision bf16", "avx512_bf16")
    _one_line_error(runner.invoke(app, ["sample", str(trained_run), "--precision", "fp16"]), "--precision fp16", "CUDA")


def test_without_bf16_auto_is_fp32_and_says_nothing(trained_run, monkeypatch):
    monkeypatch.setattr("charrnn.device.cpu_bf16_flags", lambda: ())
    auto = runner.invoke(app, ["sample", str(trained_run), "--length", "60", "--seed", "4", "--num-samples", "3"])
    fp32 = runner.invoke(app, ["sample", str(trained_run), "--length", "60", "--seed", "4", "--num-samples", "3", "--precision", "fp32"])
    assert auto.exit_code == fp32.exit_code == 0, auto.stderr
    assert auto.stdout == fp32.stdout
    assert "precision" not in auto.stderr


@needs_bf16
@pytest.mark.parametrize("engine", ["fast", "eager"])
def test_bf16_sampling_repeats_itself_and_says_so(trained_run, engine):
    runs = [
        runner.invoke(app, ["sample", str(trained_run), "--length", "200", "--seed", "9", "--num-samples", "3", "--engine", engine, "--precision", "bf16"])
        for _ in range(2)
    ]
    assert runs[0].exit_code == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    assert "precision: bf16" in runs[0].stderr


@needs_bf16
def test_a_served_bf16_stream_is_the_text_sample_makes_alone_and_beside_others(trained_run, model_and_vocab):
    """Alone, a stream steps one row in numpy; beside others, its row is in torch's batched
    bf16 product: the same bf16 numbers either way, so the same text as `charrnn sample`."""
    pytest.importorskip("starlette")
    from tests.conftest import sample_text
    from tests.serving import ServerProcess, call, health, open_stream, wait_until

    server = ServerProcess(trained_run, "--max-streams", "4", "--max-tokens-limit", "100000", "--precision", "bf16")
    try:
        assert any("precision: bf16" in line for line in server.stderr_lines)
        body = {"prompt": "[JULIET] ", "max_tokens": 300, "seed": 11, "temperature": 0.9}
        status, alone, _ = call(server.url + "/v1/completions", body)
        assert status == 200, alone
        others = [open_stream(server.port, "/v1/completions", {"max_tokens": 90000, "seed": s, "stream": True}) for s in (1, 2)]
        try:
            assert wait_until(lambda: health(server.url)["streams"]["active"] == 2)
            status, beside, _ = call(server.url + "/v1/completions", body)
            assert status == 200 and health(server.url)["streams"]["busiest_step"] >= 3
        finally:
            for sock in others:
                sock.close()
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)
    expected = sample_text(model_and_vocab, prime="[JULIET] ", seed=11, length=300, temperature=0.9, precision="bf16")
    # (The server said bf16 above; this confident little model writes the same text in fp32.)
    assert alone["choices"][0]["text"] == beside["choices"][0]["text"] == expected


@needs_bf16
def test_bf16_eval_is_within_five_thousandths_of_a_bit_of_fp32(trained_run, text_file):
    figures = {}
    for precision in ("fp32", "bf16"):
        result = runner.invoke(app, ["eval", str(trained_run), str(text_file), "--precision", precision, "--threads", "1"])
        assert result.exit_code == 0, result.stderr
        figures[precision] = float(result.stdout.split()[0])
    assert abs(figures["bf16"] - figures["fp32"]) < 0.005, figures
    assert figures["bf16"] != figures["fp32"]  # it did run in bf16


@needs_bf16
def test_auto_eval_is_the_exact_fp32_figure(trained_run, text_file):
    auto = runner.invoke(app, ["eval", str(trained_run), str(text_file), "--threads", "1"])
    fp32 = runner.invoke(app, ["eval", str(trained_run), str(text_file), "--threads", "1", "--precision", "fp32"])
    assert auto.stdout == fp32.stdout
    assert "precision" not in auto.stderr  # fp32, as always: nothing to say


@pytest.mark.parametrize("value", ["xx", "\udcff"], ids=["unknown", "invalid-unicode"])
def test_a_bad_precision_is_one_line_for_every_command(trained_run, text_file, value):
    for command in (["sample", str(trained_run)], ["eval", str(trained_run), str(text_file)], ["serve", str(trained_run)]):
        result = runner.invoke(app, [*command, "--precision", value])
        assert result.exit_code == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--precision" in lines[0] and "Traceback" not in result.stderr, result.stderr
