"""A new run's budget chooses what it holds: the small preset's dropout from the passes over
the text the budget makes, and on a CPU with native bf16, in a budget of minutes, whether
``--precision auto`` trains in bf16 (charrnn.training.budget_fit). Real runs through the CLI;
the expected dropout is worked out here from the text's length and the budget."""

from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.device import cpu_bf16_flags
from charrnn.options import DEFAULTS, PRESETS
from charrnn.precision import resolve_precision
from charrnn.saved import SavedRun
from tests.conftest import small_text

runner = CliRunner()
FIT = DEFAULTS["budget_fit"]
# Small and quick; the preset stays `small` (no --preset), so its dropout is the budget's.
SHAPE = ["--layers", "2", "--hidden", "32", "--embed", "8", "--batch-size", "4", "--seq-len", "25", "--eval-every", "1000", "--threads", "1"]
needs_bf16 = pytest.mark.skipif(not cpu_bf16_flags(), reason="this CPU has no native bf16 (avx512_bf16 or amx_bf16)")


def expected_dropout(passes: float) -> float:
    """The rule as docs/usage.md states it: none up to free_passes, per_pass more for each pass
    beyond, at most `most`."""
    return min(FIT["most"], max(0.0, (passes - FIT["free_passes"]) * FIT["per_pass"]))


def train(tmp_path, name: str, *options: str, text_chars: int = 2_000):
    corpus = tmp_path / "verse.txt"
    if not corpus.exists():
        corpus.write_text(small_text(400)[:text_chars], encoding="utf-8")
    result = runner.invoke(app, ["train", str(corpus), "--out", str(tmp_path / name), *SHAPE, *options])
    assert result.exit_code == 0, result.stderr
    return result, SavedRun.load(tmp_path / name)


def windows_of(text_chars: int) -> int:
    """Windows of 4x25 in a pass over the training part (90%) of the text: whole windows of
    each of the 4 rows, as the trainer reads them."""
    train_chars = int(text_chars * (1 - DEFAULTS["corpus"]["val_frac"]))
    return ((train_chars - 1) // 4) // 25


@pytest.mark.parametrize("steps", [60, 140, 400])
def test_a_step_budget_sets_the_dropout_by_its_passes(tmp_path, steps):
    result, saved = train(tmp_path, "run", "--max-steps", str(steps))
    passes = steps / windows_of(2_000)
    assert saved.model_config.dropout == pytest.approx(expected_dropout(passes), abs=1e-3)
    if passes > FIT["free_passes"] + 1:
        assert saved.model_config.dropout > 0
    line = next(line for line in result.stderr.splitlines() if line.startswith("dropout:"))
    assert f"{steps:,} steps are about {passes:,.1f} passes" in line, line


def test_a_dropout_given_or_a_preset_of_its_own_is_kept(tmp_path):
    result, saved = train(tmp_path, "given", "--max-steps", "300", "--dropout", "0.05")
    assert saved.model_config.dropout == 0.05
    assert "dropout:" not in result.stderr
    result, saved = train(tmp_path, "medium", "--max-steps", "300", "--preset", "medium")
    assert saved.model_config.dropout == PRESETS["medium"]["dropout"]
    assert "dropout:" not in result.stderr


def test_a_resumed_run_keeps_the_dropout_its_budget_chose(tmp_path):
    _, first = train(tmp_path, "run", "--max-steps", "300")
    assert first.model_config.dropout > 0
    resumed = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--extend-steps", "5", "--threads", "1"])
    assert resumed.exit_code == 0, resumed.stderr
    assert "dropout:" not in resumed.stderr
    assert SavedRun.load(tmp_path / "run").model_config.dropout == first.model_config.dropout


def test_a_time_budget_probes_the_step_and_plans_its_passes(tmp_path):
    result, saved = train(tmp_path, "run", "--minutes", "0.05")
    line = next(line for line in result.stderr.splitlines() if line.startswith("dropout:"))
    found = re.search(r"about ([\d,.]+) passes over the training text in 0.05 min at about ([\d,]+) chars/s", line)
    assert found, line
    passes = float(found[1].replace(",", ""))
    # The passes said are the probe's chars/s times the budget over the training text.
    chars_per_second = float(found[2].replace(",", ""))
    planned = chars_per_second * 0.05 * 60 / (windows_of(2_000) * 4 * 25)
    assert planned == pytest.approx(passes, rel=0.02)
    assert saved.model_config.dropout == pytest.approx(expected_dropout(passes), abs=0.006)
    # The probe plans the budget; it does not spend it.
    assert saved.trainer_state["progress"]["elapsed"] < 0.05 * 60 + 5


@needs_bf16
def test_auto_in_a_time_budget_chooses_by_a_probe_and_a_resume_keeps_the_choice(tmp_path):
    result, saved = train(tmp_path, "run", "--minutes", "0.05", "--dropout", "0")
    line = next(line for line in result.stderr.splitlines() if line.startswith("precision:"))
    found = re.search(r"auto: a training step took fp32 ([\d.]+) ms, bf16 ([\d.]+) ms", line)
    assert found, line
    chosen = saved.trainer_state["precision"]
    assert line.startswith(f"precision: {chosen}"), line
    fp32, bf16 = float(found[1]), float(found[2])
    # bf16 only at 1.25x fp32's speed or more (the times shown are rounded to 0.1 ms).
    if abs(bf16 * 1.25 - fp32) > 0.15:
        assert chosen == ("bf16" if bf16 * 1.25 < fp32 else "fp32"), line
    resumed = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--extend-minutes", "0.05", "--threads", "1"])
    assert resumed.exit_code == 0, resumed.stderr
    assert "not bit-for-bit" not in resumed.stderr, resumed.stderr
    assert SavedRun.load(tmp_path / "run").trainer_state["precision"] == chosen


@needs_bf16
def test_auto_in_a_step_budget_trains_in_fp32_and_says_why(tmp_path):
    result, saved = train(tmp_path, "run", "--max-steps", "5")
    assert saved.trainer_state["precision"] == "fp32"
    assert "a budget in steps trains in fp32" in result.stderr


def test_a_resumed_auto_run_goes_on_in_what_it_chose_where_the_cpu_runs_it():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, recorded="fp32") == torch.float32
    expected = torch.bfloat16 if cpu_bf16_flags() else torch.float32
    assert resolve_precision("auto", cpu, recorded="bf16") == expected
    # An explicit choice is never overridden by what the checkpoint recorded.
    assert resolve_precision("fp32", cpu, recorded="bf16") == torch.float32
