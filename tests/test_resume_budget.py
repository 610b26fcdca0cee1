"""Resuming and extending a run's budget: an extension goes on from the learning rate the run
had reached (no jump back up the cosine), an extended run stopped and resumed again still ends
bit-identical to one that was not, only training time counts against --minutes, and a resume
on other text says so and never compares best.pt across two validation sets."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from charrnn.training.runs import RunRequest, prepare_run, train_run
from tests.conftest import TINY_TRAIN, VERSE, small_text
from tests.test_training import StopAt, make_run

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def records(run_dir, event="step"):
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def assert_same_training(a, b, evaluations=True):
    """Weights, optimizer moments and the per-step losses and rates (and evaluations), bit for bit."""
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
    opt_a, opt_b = a.trainer.optimizer.state_dict()["state"], b.trainer.optimizer.state_dict()["state"]
    for key in opt_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[key][name], opt_b[key][name])
    keep = ("event", "step", "loss", "lr", "grad_norm", "val_loss", "improved")
    events = ("step", "eval") if evaluations else ("step",)
    trajectory = lambda d: [{k: r[k] for k in keep if k in r} for e in events for r in records(d, e)]  # noqa: E731
    assert trajectory(a.directory) == trajectory(b.directory)


def cosine_lr(step: int, max_steps: int) -> float:
    """The rate the unextended plan gives before ``step`` + 1 (warmup long over)."""
    m = 0.1
    return TINY_TRAIN["lr"] * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * step / max_steps)))


def test_extending_an_interrupted_run_continues_the_rate_and_resumes_bit_identically(text_file, tmp_path):
    """A 30-step run stopped at 12 is extended by 20 steps. The rate goes on from where it was
    and decays to the minimum over the 38 steps left; the extended run, stopped again at 35 and
    resumed, ends bit-identical to the one that ran the extension straight through."""
    for name in ("straight", "split"):
        first = make_run(text_file, tmp_path / name, max_steps=30, checkpoint_every=10)
        assert train_run(first, [StopAt(12)]).status == "interrupted"

    straight = prepare_run(RunRequest(resume=tmp_path / "straight", extend_steps=20, device="cpu"))
    assert straight.extended_by == {"steps": 20} and straight.trainer.config.max_steps == 50
    assert train_run(straight).step == 50

    split = prepare_run(RunRequest(resume=tmp_path / "split", extend_steps=20, device="cpu"))
    assert train_run(split, [StopAt(35)]).status == "interrupted"
    saved = checkpoint.load(tmp_path / "split")
    assert saved["train_config"]["max_steps"] == 50  # the extension is in the checkpoint
    assert saved["trainer"]["progress"]["cosine_step"] == 12
    split = prepare_run(RunRequest(resume=tmp_path / "split", device="cpu"))  # no extension again
    assert split.extended_by == {} and split.trainer.config.max_steps == 50
    assert train_run(split).step == 50
    assert_same_training(straight, split)

    rates = [r["lr"] for r in records(tmp_path / "straight")]
    assert rates[11] == pytest.approx(cosine_lr(11, 30), rel=1e-12)  # the last step before
    assert rates[12] == pytest.approx(cosine_lr(12, 30), rel=1e-12)  # no jump: the plan's next rate
    # From there a cosine down to the minimum over the 38 steps of the extended budget left.
    reached = cosine_lr(12, 30) / TINY_TRAIN["lr"]
    expected = [TINY_TRAIN["lr"] * (0.1 + (reached - 0.1) * 0.5 * (1 + math.cos(math.pi * i / 38))) for i in range(38)]
    assert rates[12:] == pytest.approx(expected, rel=1e-12)


def test_a_finished_run_extended_trains_at_the_minimum_rate_however_the_extension_is_split(text_file, tmp_path):
    """A finished cosine run has reached the minimum: an extension stays there, so extending by
    20 steps at once and by 10 twice train alike, bit for bit."""
    for name in ("once", "twice"):
        train_run(make_run(text_file, tmp_path / name, max_steps=20))
    once = prepare_run(RunRequest(resume=tmp_path / "once", extend_steps=20, device="cpu"))
    train_run(once)
    for _ in range(2):
        twice = prepare_run(RunRequest(resume=tmp_path / "twice", extend_steps=10, device="cpu"))
        train_run(twice)
    assert once.trainer.step == twice.trainer.step == 40
    assert_same_training(once, twice, evaluations=False)  # the two resumes also evaluate at 30
    rates = [r["lr"] for r in records(tmp_path / "once")]
    assert rates[19] > rates[20]
    assert rates[20:] == [TINY_TRAIN["lr"] * 0.1] * 20


def test_extending_a_time_budget_from_the_command_line(text_file, tmp_path):
    """The README's case: a run with a time budget, resumed with that budget again, is refused
    with what was spent; --extend-minutes trains on, at the rate reached, for that much more."""
    run = tmp_path / "run"
    result = invoke("train", text_file, "--out", run, "--minutes", 0.01, "--warmup-steps", 0, "--eval-every", 1000, "--eval-sample-chars", 0, *TINY)
    assert result.exit_code == 0, result.stderr
    first = records(run)
    answered = invoke("train", "--resume", run, "--minutes", 0.01)
    assert answered.exit_code == 2
    assert "spent its budget: " in answered.stderr and " of 0.01 minutes" in answered.stderr
    assert f"charrnn train --resume {run} --extend-minutes M" in answered.stderr

    result = invoke("train", "--resume", run, "--extend-minutes", 0.01)
    assert result.exit_code == 0, result.stderr
    assert "extending the budget by 0.01 min to 0.02 min total" in result.stderr
    assert "done (time budget reached)" in result.stderr
    extension = records(run)[len(first):]
    assert extension and extension[0]["step"] == first[-1]["step"] + 1
    minimum = checkpoint.load(run)["train_config"]["lr"] * 0.1
    assert [r["lr"] for r in extension] == pytest.approx([minimum] * len(extension), rel=1e-12)
    assert max(r["lr"] for r in extension) <= first[-1]["lr"]  # never back up
    assert checkpoint.load(run)["metrics"]["elapsed"] >= 0.02 * 60


def test_start_up_is_not_charged_to_the_time_budget(text_file, tmp_path, monkeypatch):
    """Reading and encoding the text made 3 s slower: a one-step run still records only the
    time of its step, evaluation and checkpoints."""
    import charrnn.data.corpus

    slow_start = 3.0
    load = charrnn.data.corpus.load_corpus

    def slow_load(*args, **kwargs):
        time.sleep(slow_start)
        return load(*args, **kwargs)

    monkeypatch.setattr(charrnn.data.corpus, "load_corpus", slow_load)
    started = time.perf_counter()
    result = invoke("train", text_file, "--out", tmp_path / "run", "--max-steps", 1, *TINY)
    wall = time.perf_counter() - started
    assert result.exit_code == 0, result.stderr
    elapsed = checkpoint.load(tmp_path / "run")["metrics"]["elapsed"]
    assert wall > slow_start and elapsed < slow_start, (elapsed, wall)
    assert records(tmp_path / "run")[-1]["elapsed"] <= elapsed


def test_resume_on_a_grown_text_says_so_and_chooses_best_on_the_new_validation_text(tmp_path):
    """The training file grows, so the validation tenth at its end is other text (here harder
    than anything the run was scored on): one warning line, and best.pt is chosen afresh on it
    rather than kept because the old, easier text once scored lower."""
    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    run = tmp_path / "run"
    result = invoke("train", corpus, "--out", run, "--max-steps", 40, "--eval-every", 20, "--lr", 0.01, *TINY)
    assert result.exit_code == 0, result.stderr
    old_best = checkpoint.load(run, "best")["metrics"]["best_val_loss"]
    with open(corpus, "a", encoding="utf-8") as handle:
        handle.write("".join(reversed(VERSE)) * 30)  # the same characters, in no order it learnt

    result = invoke("train", "--resume", run, "--extend-steps", 10, "--eval-every", 10)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("charrnn: warning:")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("charrnn: warning: the text differs from this run's (")
    assert "the best so far starts over, so best.pt will hold the best on the new validation text" in warnings[0]
    evals = records(run, "eval")
    assert evals[-1]["step"] == 50 and evals[-1]["val_loss"] > old_best  # harder text
    assert evals[-1]["improved"]  # yet the first score on it is the best on it so far
    best = checkpoint.load(run, "best")
    assert best["metrics"]["step"] == 50 and best["metrics"]["best_val_loss"] == evals[-1]["val_loss"]

    # The same text again: nothing to say.
    result = invoke("train", "--resume", run, "--extend-steps", 2)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr


def test_checkpoints_without_a_text_fingerprint_still_resume(text_file, tmp_path):
    """Checkpoints written before fingerprints (and before budgets could be extended) resume,
    with the cosine schedule where they left it."""
    run = make_run(text_file, tmp_path / "run", max_steps=20)
    assert train_run(run, [StopAt(8)]).status == "interrupted"
    payload = checkpoint.load(tmp_path / "run")
    del payload["corpus"]["fingerprint"]
    for key in ("cosine_step", "cosine_elapsed", "cosine_scale"):
        del payload["trainer"]["progress"][key]
    checkpoint.save(payload, tmp_path / "run" / "last.pt")

    resumed = prepare_run(RunRequest(resume=tmp_path / "run", device="cpu"))
    assert resumed.notices == []
    assert resumed.trainer.learning_rate() == pytest.approx(cosine_lr(8, 20), rel=1e-12)
    assert train_run(resumed).step == 20
    assert "fingerprint" in checkpoint.load(tmp_path / "run")["corpus"]
