"""`--lr auto`: the range test that chooses a new run's learning rate.

The test is checked against hand computations (smoothing, the geometric rates, the choice),
and on real runs: it is reproducible, it leaves the run exactly as `--lr CHOSEN` would make it
(so it draws nothing from the run's random generators and trains a copy), it is recorded in
every checkpoint, and a resumed run keeps the rate without testing again and continues
bit-for-bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from charrnn.training.lr_range import choose_rate, geometric_rates, smooth
from tests.conftest import small_text

MODEL = {"layers": 2, "hidden": 32, "embed": 16, "dropout": 0.1}  # dropout: the torch RNG matters
TRAIN = {"batch_size": 8, "seq_len": 32, "weight_decay": 0.01, "warmup_steps": 5, "eval_every": 20, "seed": 3}


def test_smoothing_matches_a_hand_computation():
    # beta 0.5: averages 0.5, 1.25, 2.125, divided by 1 - 0.5**i = 0.5, 0.75, 0.875.
    assert smooth([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])


def test_rates_rise_by_one_factor_from_low_to_high():
    rates = geometric_rates(1e-4, 1.0, 5)
    assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1.0)
    assert [b / a for a, b in zip(rates, rates[1:])] == pytest.approx([10.0] * 4)


def test_the_choice_is_the_rate_of_the_lowest_loss_divided_by_the_fraction():
    chosen, lowest_at = choose_rate([1e-3, 1e-2, 1e-1, 1.0], [3.0, 2.0, 1.5, 4.0], fraction=10)
    assert lowest_at == 1e-1 and chosen == pytest.approx(1e-2)


def _run(root, train: dict):
    from charrnn.training.runs import RunRequest, prepare_run, train_run

    corpus = root / "verse.txt"
    if not corpus.exists():
        corpus.write_text(small_text(), encoding="utf-8")
    out = root / f"run{len(list(root.glob('run*')))}"
    run = prepare_run(RunRequest(sources=[str(corpus)], out=out, model=dict(MODEL), train={**TRAIN, **train}, device="cpu"))
    train_run(run, sample_chars=0)
    return out


def _weights(run_dir) -> dict:
    from charrnn.saved import SavedRun

    return SavedRun.load(run_dir / "last.pt").weights


@pytest.mark.slow
def test_auto_is_reproducible_and_trains_exactly_as_the_chosen_rate(tmp_path, one_thread):
    from charrnn.saved import SavedRun

    first = _run(tmp_path, {"lr": "auto", "max_steps": 30})
    # The test flushes subnormal floats while it runs, and only then.
    assert torch.tensor([1e-39]).mul(1.0).item() != 0.0
    again = _run(tmp_path, {"lr": "auto", "max_steps": 30})
    saved = SavedRun.load(first / "last.pt")
    test = saved.trainer_state["lr_range"]
    chosen = saved.train_config.lr
    # The test's record: the rate it chose is the one trained at, from a real curve.
    assert test["lr"] == chosen and test["low"] < chosen < test["high"]
    assert len(test["rates"]) == len(test["losses"]) > 10
    assert min(test["losses"]) < test["losses"][0]  # the loss fell at some rate
    given = _run(tmp_path, {"lr": chosen, "max_steps": 30})
    a, b, c = _weights(first), _weights(again), _weights(given)
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert torch.equal(a[name], c[name]), name
    assert SavedRun.load(given / "last.pt").trainer_state.get("lr_range") is None
    config = json.loads((first / "config.json").read_text())
    assert config["lr_range"]["lr"] == chosen and config["train"]["lr"] == chosen
    assert 'lr = "auto"' in (first / "config.toml").read_text()


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(NO_COLOR="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", *map(str, args)], capture_output=True, text=True, env=env, timeout=240
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


CLI_ARGS = [
    "--layers", "2", "--hidden", "32", "--embed", "16", "--dropout", "0.1", "--batch-size", "8",
    "--seq-len", "32", "--warmup-steps", "5", "--eval-every", "10", "--schedule", "constant", "--seed", "3",
    "--threads", "1",
]


@pytest.mark.slow
def test_an_auto_run_resumes_exactly_without_testing_again(tmp_path):
    from charrnn.saved import SavedRun

    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    straight = _cli(corpus, *CLI_ARGS, "--lr", "auto", "--max-steps", "30", "--out", tmp_path / "straight")
    assert "chosen by a range test (--lr auto)" in straight.stderr
    _cli(corpus, *CLI_ARGS, "--lr", "auto", "--max-steps", "15", "--out", tmp_path / "split")
    before = SavedRun.load(tmp_path / "split" / "last.pt").trainer_state["lr_range"]
    resumed = _cli("--resume", tmp_path / "split", "--lr", "auto", "--extend-steps", "15")
    assert "chosen by the range test at the start of this run" in resumed.stderr
    a, b = SavedRun.load(tmp_path / "straight" / "last.pt"), SavedRun.load(tmp_path / "split" / "last.pt")
    assert a.metrics.step == b.metrics.step == 30
    assert a.train_config.lr == b.train_config.lr
    assert b.trainer_state["lr_range"] == before  # recorded once, kept
    same = {k: v for k, v in a.trainer_state["lr_range"].items() if k != "seconds"}
    assert same == {k: v for k, v in before.items() if k != "seconds"}
    for name in a.weights:
        assert torch.equal(a.weights[name], b.weights[name]), name


def test_auto_cannot_replace_the_rate_of_a_run_that_was_given_one(trained_run):
    proc = _cli("--resume", trained_run, "--lr", "auto", "--extend-steps", "1", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--lr auto chooses a new run's rate" in lines[0] and "Traceback" not in proc.stderr


def test_a_rate_that_is_neither_a_number_nor_auto_is_refused(text_file):
    proc = _cli(text_file, "--lr", "fast", "--max-steps", "1", check=False)
    assert proc.returncode == 2
    assert "must be a number or auto, not 'fast'" in proc.stderr and "Traceback" not in proc.stderr
