"""Real data-parallel training: two processes under torchrun (gloo, CPU), stopped and resumed,
against one process with the same global batch."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from charrnn.training.distributed import weights_digest
from charrnn.model.network import CharRNN, ModelConfig

pytestmark = pytest.mark.slow
runner = CliRunner()
SHAPE = ["--layers", "1", "--hidden", "32", "--embed", "8", "--dropout", "0", "--seq-len", "24"]
PLAN = ["--schedule", "constant", "--warmup-steps", "5", "--lr", "0.01", "--eval-every", "10",
        "--eval-chars", "500", "--eval-sample-chars", "0", "--device", "cpu"]


def torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DEBUG", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "charrnn", "train", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done, time.perf_counter() - started


def step_losses(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["event"] == "step"]


def test_two_processes_match_one_with_the_same_global_batch_and_resume(text_file, tmp_path):
    ddp = tmp_path / "ddp"
    first, seconds_first = torchrun(text_file, "--out", ddp, "--max-steps", 20, "--batch-size", 4, *SHAPE, *PLAN)
    assert "on each of 2 processes" in first.stderr
    # Only rank 0 talks and writes.
    assert first.stderr.count("done (step budget reached) at step 20") == 1
    assert sorted(p.name for p in ddp.iterdir()) == ["best.pt", "config.json", "config.toml", "last.pt", "metrics.jsonl"]

    resumed, seconds_resumed = torchrun("--resume", ddp, "--max-steps", 30, "--device", "cpu")
    assert "resuming" in resumed.stderr and "at step 30" in resumed.stderr

    single = tmp_path / "single"
    result = runner.invoke(app, ["train", str(text_file), "--out", str(single), "--max-steps", "30", "--batch-size", "8", *SHAPE, *PLAN])
    assert result.exit_code == 0, result.stderr

    d, s = checkpoint.load(ddp), checkpoint.load(single)
    ranks = d["trainer"]["ranks"]
    assert d["trainer"]["world_size"] == 2 and len(ranks) == 2
    # The ranks' weights are bit-identical, and they are the weights saved.
    model = CharRNN(ModelConfig.from_dict(d["model_config"]))
    model.load_state_dict(d["model"])
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"] == weights_digest(model)
    # Each rank carried its own rows: different hidden states, both saved.
    assert not torch.equal(ranks[0]["hidden"][0], ranks[1]["hidden"][0])

    weight_diff = max((d["model"][k] - s["model"][k]).abs().max().item() for k in s["model"])
    loss_ddp, loss_single = step_losses(ddp), step_losses(single)
    assert len(loss_ddp) == len(loss_single) == 30
    loss_diff = max(abs(a - b) for a, b in zip(loss_ddp, loss_single))
    print(
        f"\n2-process DDP (20 steps + resume to 30) vs 1 process, global batch 8: "
        f"final loss {loss_ddp[-1]:.6f} vs {loss_single[-1]:.6f}, max step-loss diff {loss_diff:.2e}, "
        f"max weight diff {weight_diff:.2e}; torchrun wall {seconds_first:.1f} s + {seconds_resumed:.1f} s"
    )
    assert weight_diff < 1e-4 and loss_diff < 1e-4

    # A different number of processes cannot continue the streams: one clear line.
    wrong = runner.invoke(app, ["train", "--resume", str(ddp), "--max-steps", "40"])
    assert wrong.exit_code == 1 and "trained on 2 process(es) and cannot continue on 1" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_one_epoch_on_two_processes_is_one_pass_over_the_text(text_file, tmp_path):
    """--epochs counts passes over the whole text, whatever the number of processes: two ranks
    each reading their own rows cover the text in half the steps one process needs."""
    from charrnn.data.batches import plan_layout

    run = tmp_path / "epoch"
    done, _ = torchrun(text_file, "--out", run, "--epochs", 1, "--batch-size", 4, *SHAPE, *PLAN)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["event"] == "step"]
    chars = sum(1 for _ in steps) * 4 * 2 * 24  # steps x rows x ranks x window
    ids = len(text_file.read_text(encoding="utf-8"))
    train_ids = ids - int(ids * 0.1)  # the default --val-frac takes the last tenth
    layout = plan_layout(train_ids, 4, 24, world_size=2)
    assert len(steps) == layout.windows
    assert all(s["epoch"] == 0 for s in steps[:-1])  # the cursor wraps only after the last
    print(f"\n--epochs 1 on 2 processes: {len(steps)} steps, {chars:,} characters read of {train_ids:,}")
    assert 0.9 * train_ids <= chars <= train_ids
