"""Exact resume, proven the way a user meets it: `charrnn train` in a subprocess, stopped by
SIGINT (Ctrl-C) or killed with SIGKILL (kill -9) at several steps, continued with
`charrnn train --resume DIR`, and compared bit-for-bit with a run that was never stopped:
weights, optimizer moments, every RNG, the carried hidden state, the data cursor, and the
loss of every step in metrics.jsonl.

The subprocesses run with one intra-op thread: reproducibility is promised for the same
machine and thread count (a parallel reduction may sum in another order with other counts),
and one thread keeps these tests cheap on a shared 2-core machine.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint
from tests.conftest import small_text

STEPS = 60
CHECKPOINT_EVERY = 5
# 2x64 LSTM with dropout (so the torch RNG matters), 16 streams of 64 characters: about 20
# windows per epoch, so 60 steps cross two epoch boundaries (where the carried state resets).
TRAIN_ARGS = [
    "--layers", "2", "--hidden", "64", "--embed", "16", "--dropout", "0.1",
    "--batch-size", "16", "--seq-len", "64", "--lr", "0.005", "--warmup-steps", "5",
    "--eval-every", "10", "--max-steps", str(STEPS), "--seed", "7",
]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    # Bit-identical resume is a CPU promise; on a GPU it needs --deterministic (test_gpu.py).
    env.update(NO_COLOR="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def start_training(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def run_training(*args) -> subprocess.CompletedProcess:
    proc = start_training(*args)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def step_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line still being written
    return records


def last_logged_step(run_dir: Path) -> int:
    return max((r["step"] for r in step_lines(run_dir) if r["event"] == "step"), default=0)


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while last_logged_step(run_dir) < step:
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before step {step}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"step {step} not reached in {timeout} s")
        time.sleep(0.002)


def assert_every_checkpoint_loads(run_dir: Path) -> dict[str, int]:
    steps = {}
    for path in sorted(run_dir.glob("*.pt")):
        steps[path.name] = checkpoint.load(path)["metrics"]["step"]  # raises if torn or tampered
    return steps


def assert_same(a, b, where="payload"):
    """Recursive bit-for-bit equality of checkpoint content."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_bit_identical(run_dir: Path, reference: Path) -> None:
    for name in ("last.pt", "best.pt"):
        got, want = checkpoint.load(run_dir / name), checkpoint.load(reference / name)
        assert_same(got["model"], want["model"], f"{name}.model")
        trainer_got, trainer_want = dict(got["trainer"]), dict(want["trainer"])
        progress_got, progress_want = trainer_got.pop("progress"), trainer_want.pop("progress")
        # optimizer (moments, step counts), grad scaler, data cursor, hidden state, every RNG
        assert_same(trainer_got, trainer_want, f"{name}.trainer")
        for key in ("step", "best_val_loss", "evals_without_improvement", "lr_scale"):
            assert progress_got[key] == progress_want[key], (name, key)  # elapsed is wall time
    assert checkpoint.load(run_dir)["metrics"]["step"] == STEPS

    def trajectory(d):
        keep = ("event", "step", "epoch", "loss", "lr", "grad_norm", "grad_norms", "clipped", "clip_share", "val_loss", "improved")
        return [{k: r[k] for k in keep if k in r} for r in step_lines(d)]

    got, want = trajectory(run_dir), trajectory(reference)
    assert [r["step"] for r in got if r["event"] == "step"] == list(range(1, STEPS + 1))
    # every step's loss, lr and gradient norms (per group, clipped or not), every evaluation, in order
    assert got == want


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "verse.txt"
    path.write_text(small_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """The run that was never stopped."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = run_training(corpus, "--out", run_dir, "--checkpoint-every", CHECKPOINT_EVERY, *TRAIN_ARGS)
    assert proc.returncode == 0, proc.stderr
    assert checkpoint.load(run_dir)["metrics"]["step"] == STEPS
    return run_dir


@pytest.mark.slow
def test_sigint_sigterm_and_kill9_at_several_steps_resume_bit_identically(corpus, reference, tmp_path):
    run_dir = tmp_path / "run"
    # Signals are sent once metrics.jsonl shows the step: where they land (mid-step, during an
    # evaluation, mid-checkpoint) is up to the scheduler, and the result must not depend on it.
    plan = [(signal.SIGINT, 7), (signal.SIGKILL, 18), (signal.SIGTERM, 26), (signal.SIGKILL, 37), (signal.SIGINT, 48)]
    stopped_at = []
    for i, (sig, at) in enumerate(plan):
        if i == 0:
            proc = start_training(corpus, "--out", run_dir, "--checkpoint-every", CHECKPOINT_EVERY, *TRAIN_ARGS)
        else:
            proc = start_training("--resume", run_dir)
        wait_for_step(proc, run_dir, at)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err
        saved = assert_every_checkpoint_loads(run_dir)
        if sig in (signal.SIGINT, signal.SIGTERM):
            # Finish the step, write a checkpoint, say where it is and how to resume, exit non-zero.
            assert proc.returncode == 130, err
            assert f"checkpoint saved to {run_dir / 'last.pt'}" in err, err
            assert f"resume with: charrnn train --resume {run_dir}" in err, err
            step = int(err.split("stopped at step ")[1].split(";")[0])
            assert step >= at and saved["last.pt"] == step
        else:
            assert proc.returncode == -signal.SIGKILL
            # kill -9 loses at most the steps since the last periodic checkpoint.
            step = saved["last.pt"]
            assert 0 <= last_logged_step(run_dir) - step <= CHECKPOINT_EVERY
        stopped_at.append((sig.name, at, step))

    final = run_training("--resume", run_dir)
    assert final.returncode == 0, final.stderr
    assert not list(run_dir.glob(checkpoint.TMP_PREFIX + "*"))
    assert len({step for _, _, step in stopped_at}) == len(plan), stopped_at
    assert_bit_identical(run_dir, reference)


@pytest.mark.slow
def test_kill9_loop_while_checkpoints_are_written(corpus, reference, tmp_path):
    """kill -9 at random moments of a run that checkpoints every step: after every kill each
    checkpoint on disk loads, resuming cleans any half-written temporary file, and the run
    that was killed over and over still ends bit-identical to the one never stopped."""
    run_dir = tmp_path / "run"
    rng = random.Random(1234)  # reproducible kill times
    kills, step = 6, 0
    for i in range(kills):
        if i == 0:
            proc = start_training(corpus, "--out", run_dir, "--checkpoint-every", 1, *TRAIN_ARGS)
        else:
            proc = start_training("--resume", run_dir)
        # Step k+1 logged means step k's checkpoint is on disk: every kill has one to keep.
        wait_for_step(proc, run_dir, step + 2)
        time.sleep(rng.uniform(0, 0.05))  # lands anywhere: a step, an evaluation, a write
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        saved = assert_every_checkpoint_loads(run_dir)
        assert saved["last.pt"] >= step  # never goes backwards: no checkpoint is ever lost
        assert last_logged_step(run_dir) - saved["last.pt"] <= 1  # checkpoint every step
        step = saved["last.pt"]
        assert step < STEPS, "the run finished before it could be killed"
    final = run_training("--resume", run_dir)
    assert final.returncode == 0, final.stderr
    assert not list(run_dir.glob(checkpoint.TMP_PREFIX + "*"))
    assert_bit_identical(run_dir, reference)
