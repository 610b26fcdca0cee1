"""The thread policy: who fixes the count, the governor that measures it, and the promise that
the count changes only the speed, never a result."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from charrnn.bench.speed import preset_model
from charrnn.bench.contention import _run_scenario, contention_ratios
from charrnn.model.network import CharRNN
from charrnn.threads import ThreadGovernor, resolve_policy, set_blas_threads, set_threads
from charrnn.training.trainer import TrainConfig, Trainer
from tests.conftest import REPO


def test_threads_option_wins_over_the_environment_which_wins_over_adaptive():
    assert resolve_policy(3, {"OMP_NUM_THREADS": "1"}).fixed == 3
    policy = resolve_policy(None, {"OMP_NUM_THREADS": "1"})
    assert (policy.fixed, policy.source) == (1, "OMP_NUM_THREADS")
    assert resolve_policy(None, {"MKL_NUM_THREADS": "2"}).source == "MKL_NUM_THREADS"
    assert resolve_policy(None, {"OMP_NUM_THREADS": "junk"}).adaptive
    assert resolve_policy(None, {}).adaptive
    assert "adaptive" in resolve_policy(None, {}).describe() or resolve_policy(None, {}).most == 1


def test_adaptive_choices_halve_from_the_cores_down_to_one():
    from charrnn.threads import ThreadPolicy

    assert ThreadPolicy(None, "adaptive", 16).choices() == (16, 8, 4, 2, 1)
    assert ThreadPolicy(None, "adaptive", 6).choices() == (6, 3, 1)
    assert ThreadPolicy(None, "adaptive", 1).choices() == (1,)


class SimulatedMachine:
    """Work whose speed depends on the thread count and on what else runs, on a clock of its
    own: 2 threads win alone, 1 wins while another process holds a core (the shapes measured
    on a 2-core machine: 19k / 12.6k alone, 3.2k / 12k beside another training)."""

    ALONE = {2: 19_000.0, 1: 12_600.0}
    BUSY = {2: 3_200.0, 1: 12_000.0}

    def __init__(self) -> None:
        self.threads = 2
        self.clock = 0.0

    def apply(self, count: int) -> None:
        self.threads = count

    def speeds(self) -> dict:
        return self.BUSY if 60 <= self.clock < 180 else self.ALONE


def test_governor_keeps_the_fastest_count_as_the_machine_changes():
    machine = SimulatedMachine()
    governor = ThreadGovernor((2, 1), apply=machine.apply)
    chars = {"alone": 0.0, "busy": 0.0, "alone again": 0.0}
    seconds = {"alone": 0.0, "busy": 0.0, "alone again": 0.0}
    step_chars = 1024.0
    while machine.clock < 300:
        phase = "alone" if machine.clock < 60 else "busy" if machine.clock < 180 else "alone again"
        step = step_chars / machine.speeds()[machine.threads]
        governor.observe(step, step_chars)
        machine.clock += step
        chars[phase] += step_chars
        seconds[phase] += step
    # Throughput of each phase against the best fixed count for it.
    assert chars["alone"] / seconds["alone"] > 0.95 * SimulatedMachine.ALONE[2]
    assert chars["busy"] / seconds["busy"] > 0.9 * SimulatedMachine.BUSY[1]
    assert chars["alone again"] / seconds["alone again"] > 0.85 * SimulatedMachine.ALONE[2]
    assert governor.current == 2


@pytest.mark.parametrize("one_thread_speed", [0.75, 1.0])
def test_governor_stays_with_the_better_count_through_noisy_steps(one_thread_speed):
    """Steps 10% noisy: at a 25% gap it stays at the faster count; with none, it rarely moves."""
    machine = SimulatedMachine()
    governor = ThreadGovernor((2, 1), apply=machine.apply)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        speed = 1.0 if machine.threads == 2 else one_thread_speed
        governor.observe(0.05 / speed * (1 + 0.1 * rng.standard_normal()), 1024)
    share_at_two = governor.seconds_at[2] / sum(governor.seconds_at.values())
    if one_thread_speed < 1:
        assert share_at_two > 0.95
    assert governor.switches <= 10


def test_training_result_does_not_depend_on_the_thread_count():
    """What lets the governor change the count mid-run without breaking exact resume."""

    def train(counts):
        torch.manual_seed(0)
        model = CharRNN(preset_model("small"))
        ids = np.random.default_rng(0).integers(0, model.config.vocab_size, 100_000, dtype=np.uint8)
        trainer = Trainer(model, TrainConfig(batch_size=8, seq_len=32, max_steps=100, warmup_steps=0), ids, None, torch.device("cpu"))
        for count in counts:
            set_threads(count)
            trainer.train_step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    cores = max(2, min(4, os.cpu_count() or 2))
    before = torch.get_num_threads()
    try:
        fixed = train([1] * 6)
        changing = train([cores, 1, cores, 1, 1, cores])
    finally:
        set_threads(before)
    assert torch.equal(fixed, changing)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds OpenBLAS through /proc/self/maps")
def test_blas_thread_count_is_set_at_run_time():
    import ctypes

    assert set_blas_threads(1)
    maps = open("/proc/self/maps").read().splitlines()
    path = next(line.split()[-1] for line in maps if "openblas" in line.lower())
    library = ctypes.CDLL(path)
    getter = next(getattr(library, n) for n in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads") if hasattr(library, n))
    assert getter() == 1
    set_blas_threads(2)
    assert getter() == min(2, os.cpu_count())
    set_blas_threads(1)


def _train(tmp_path, extra, env_extra=None):
    text = tmp_path / "t.txt"
    text.write_text("hello world, the quick brown fox. " * 300, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(NO_COLOR="1", PYTHONPATH=str(REPO), **(env_extra or {}))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "charrnn", "train", str(text), "--preset", "tiny", "--max-steps", "6",
               "--batch-size", "4", "--seq-len", "16", "--out", str(out), *extra]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return result.stderr, [s["threads"] for s in steps if s["event"] == "step"]


def test_threads_option_fixes_the_count_and_the_header_says_so(tmp_path):
    stderr, counts = _train(tmp_path, ["--threads", "1"])
    assert "threads: 1 (--threads)" in stderr
    assert counts == [1] * 6


def test_environment_variable_fixes_the_count(tmp_path):
    stderr, counts = _train(tmp_path, [], {"OMP_NUM_THREADS": "1"})
    assert "threads: 1 (OMP_NUM_THREADS)" in stderr
    assert counts == [1] * 6


def test_contention_ratios_divide_by_the_same_policy_alone():
    rows = [
        {"task": "train", "beside": "alone", "policy": "adaptive", "chars_per_s": 19.0},
        {"task": "train", "beside": "alone", "policy": "all cores", "chars_per_s": 20.0},
        {"task": "train", "beside": "two trainings", "policy": "adaptive", "chars_per_s": 11.0},
        {"task": "train", "beside": "two trainings", "policy": "adaptive", "chars_per_s": 13.0},
        {"task": "train", "beside": "two trainings", "policy": "all cores", "chars_per_s": 4.0},
    ]
    by_scenario = {(r["task"], r["beside"]): r for r in contention_ratios(rows)}
    alone, pair = by_scenario[("train", "alone")], by_scenario[("train", "two trainings")]
    assert alone["adaptive"] == pytest.approx(0.95) and alone["all cores"] == pytest.approx(1.0)
    assert alone["met"]
    assert pair["adaptive"] == pytest.approx(12.0 / 19.0) and pair["all cores"] == pytest.approx(0.2)
    assert pair["met"]
    assert by_scenario[("sample", "alone")]["adaptive"] is None


@pytest.mark.slow
def test_contention_workers_measure_side_by_side():
    rows = _run_scenario("train", "two trainings", "adaptive", 1.0)
    assert len(rows) == 2 and all(r["chars_per_s"] > 0 for r in rows)
    (sampled,) = _run_scenario("sample", "busy loop", "adaptive", 1.0)
    assert sum(sampled["threads"].values()) == pytest.approx(1.0, abs=0.01) and sampled["chars_per_s"] > 0


def test_batched_sampling_paced_by_a_governor_gives_the_same_text(tmp_path, monkeypatch):
    """The governor may change the count between generation steps; the text must not change."""
    from charrnn.bench.speed import _bench_vocab
    from charrnn.generation.sample import SampleConfig, generate_ids

    monkeypatch.setattr("charrnn.generation.sample.GOVERNED_SECONDS", 0.0)  # report every 16 steps

    torch.manual_seed(0)
    model = CharRNN(preset_model("tiny")).eval()
    config = SampleConfig(length=2000, temperature=0.8, seed=5, num_samples=4)
    # A governor that switches at every report (a block of steps): the harshest case.
    governor = ThreadGovernor((2, 1), apply=set_threads, first_look=0.0, skip=0, probe_steps=1, margin=0.0, margin_up=0.0)
    before = torch.get_num_threads()
    try:
        plain = torch.stack(list(generate_ids(model, _bench_vocab(), config)))
        paced = torch.stack(list(generate_ids(model, _bench_vocab(), config, governor=governor)))
    finally:
        set_threads(before)
    assert governor.switches > 10
    assert torch.equal(plain, paced)
