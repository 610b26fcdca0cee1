"""The contention benchmark (``charrnn bench --contention``): how fast charrnn trains and
samples when the machine is doing something else too.

Every figure comes from worker processes started by this module (``python -m
charrnn.bench.contention worker ...``), measured in the same run, with two thread policies:

- ``adaptive``: what charrnn does by default (``charrnn.threads``): training paced by the
  thread governor, one thread for a single sample;
- ``all cores``: the count fixed at every core for torch and BLAS, which is what torch and
  numpy do when nobody chooses (and what charrnn did before the governor).

Each scenario runs the workers side by side (alone, two trainings at once, or one beside a
pure-Python busy loop); the workers build their model, work for WARMUP_SECONDS, wait for each
other at a barrier and then count the characters they make in the same wall-clock window.
Ratios divide a contended figure by the same policy's figure alone, and the adaptive figure
alone by the all-cores one alone; each figure alone is the best of three runs, alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

POLICIES = ("adaptive", "all cores")
ALONE_REPEATS = 3
# Work before the measured window, with the others already running: a run lasts minutes, and
# what it sees is the governor's steady state, not its first second.
WARMUP_SECONDS = 3.0
TRAIN_SHAPE = {"preset": "small", "batch_size": 16, "seq_len": 64}
BUSY_LOOP = "while True: pass"

# (task, what runs beside it) in the order measured: the name of each scenario.
SCENARIOS = (
    ("train", "alone"),
    ("train", "two trainings"),
    ("train", "busy loop"),
    ("sample", "alone"),
    ("sample", "busy loop"),
)


@dataclass
class ContentionResult:
    cores: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)  # task, beside, policy, chars_per_s (each worker)
    ratios: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# -- the worker --------------------------------------------------------------------------------


def _policy(name: str):
    from charrnn.threads import available_cores, resolve_policy

    return resolve_policy(available_cores() if name == "all cores" else None, environ={})


def _train_worker(policy_name: str, seconds: float, wait: Callable[[], None]) -> dict:
    import numpy as np
    import torch

    from charrnn.bench.speed import preset_model
    from charrnn.model.network import CharRNN
    from charrnn.threads import ThreadGovernor
    from charrnn.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = CharRNN(preset_model(TRAIN_SHAPE["preset"]))
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, 4_000_000, dtype=np.uint8)
    config = TrainConfig(
        batch_size=TRAIN_SHAPE["batch_size"], seq_len=TRAIN_SHAPE["seq_len"], max_steps=10**9, warmup_steps=0
    )
    trainer = Trainer(model, config, ids, None, torch.device("cpu"))
    governor = ThreadGovernor.for_policy(_policy(policy_name))
    warm_until = time.perf_counter() + WARMUP_SECONDS
    while time.perf_counter() < warm_until:
        stats = trainer.train_step()
        if governor is not None:
            governor.observe(stats.seconds, stats.chars)
    wait()
    chars, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        stats = trainer.train_step()
        if governor is not None:
            governor.observe(stats.seconds, stats.chars)
        chars += stats.chars
    elapsed = time.perf_counter() - started
    return {"chars_per_s": chars / elapsed, "threads": _time_shares(governor, torch.get_num_threads())}


def _sample_worker(policy_name: str, seconds: float, wait: Callable[[], None]) -> dict:
    import torch

    from charrnn.bench.speed import _bench_vocab, preset_model
    from charrnn.generation.sample import SampleConfig, generate_ids
    from charrnn.model.network import CharRNN
    from charrnn.threads import ThreadGovernor

    governor = ThreadGovernor.for_policy(_policy(policy_name))
    torch.manual_seed(0)
    model = CharRNN(preset_model(TRAIN_SHAPE["preset"])).eval()
    config = SampleConfig(length=10**9, temperature=0.8, seed=1)
    steps = generate_ids(model, _bench_vocab(), config, governor=governor)
    warm_until = time.perf_counter() + WARMUP_SECONDS
    while time.perf_counter() < warm_until:
        int(next(steps)[0])
    wait()
    chars, started = 0, time.perf_counter()
    while True:
        for _ in range(100):
            int(next(steps)[0])  # what streaming does with each id
        chars += 100
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    return {"chars_per_s": chars / elapsed, "threads": _time_shares(governor, torch.get_num_threads())}


def _time_shares(governor, threads_now: int) -> dict:
    """The share of the measured time spent at each thread count."""
    if governor is None:
        return {str(threads_now): 1.0}
    total = sum(governor.seconds_at.values()) or 1.0
    return {str(n): round(s / total, 3) for n, s in sorted(governor.seconds_at.items())}


def _barrier(directory: Path, parties: int, timeout: float = 120.0) -> Callable[[], None]:
    def wait() -> None:
        (directory / f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + timeout
        while len(list(directory.glob("ready-*"))) < parties and time.monotonic() < deadline:
            time.sleep(0.01)

    return wait


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m charrnn.bench.contention worker")
    parser.add_argument("task", choices=("train", "sample"))
    parser.add_argument("--policy", choices=POLICIES, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--barrier", type=Path, required=True)
    parser.add_argument("--parties", type=int, required=True)
    args = parser.parse_args(argv)
    work = _train_worker if args.task == "train" else _sample_worker
    result = work(args.policy, args.seconds, _barrier(args.barrier, args.parties))
    print(json.dumps(result), flush=True)


# -- the scenarios -----------------------------------------------------------------------------


def _run_scenario(task: str, beside: str, policy: str, seconds: float) -> list[dict]:
    workers = 2 if beside == "two trainings" else 1
    with tempfile.TemporaryDirectory(prefix="charrnn-contention-") as scratch:
        busy = None
        if beside == "busy loop":
            busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        # The environment must not fix the count, or every policy would measure the same.
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        command = [sys.executable, "-m", "charrnn.bench.contention", "worker", task, "--policy", policy,
                   "--seconds", str(seconds), "--barrier", scratch, "--parties", str(workers)]  # fmt: skip
        try:
            processes = [
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for _ in range(workers)
            ]
            outputs = [p.communicate() for p in processes]
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    rows = []
    for process, (stdout, stderr) in zip(processes, outputs):
        if process.returncode != 0:
            raise RuntimeError(f"a contention worker failed: {stderr.strip().splitlines()[-1] if stderr.strip() else process.returncode}")
        rows.append({"task": task, "beside": beside, "policy": policy, **json.loads(stdout.strip().splitlines()[-1])})
    return rows


def run_contention(seconds: float = 15.0, progress: Callable[[str], None] = lambda message: None) -> ContentionResult:
    from charrnn.threads import available_cores

    result = ContentionResult(cores=available_cores(), seconds=seconds)
    for task, beside in SCENARIOS:
        # Alone, each policy is measured three times, alternating, and the fastest kept: other work on
        # a shared machine only ever lowers a figure, and every ratio divides by these.
        for _ in range(ALONE_REPEATS if beside == "alone" else 1):
            for policy in POLICIES:
                progress(f"{task}, {beside}, {policy} threads ({seconds:g} s)")
                result.rows.extend(_run_scenario(task, beside, policy, seconds))
    result.ratios = contention_ratios(result.rows)
    return result


def _rate(rows: list[dict], task: str, beside: str, policy: str) -> float | None:
    """Each process's chars/s: alone the best of the repeats, side by side the mean of the
    processes running together."""
    rates = [r["chars_per_s"] for r in rows if (r["task"], r["beside"], r["policy"]) == (task, beside, policy)]
    if not rates:
        return None
    return max(rates) if beside == "alone" else sum(rates) / len(rates)


# What the adaptive policy must reach (each process's speed against its speed alone; alone,
# against the all-cores count alone).
TARGETS = {
    ("train", "alone"): 0.95,
    ("train", "two trainings"): 0.45,
    ("train", "busy loop"): 0.45,
    ("sample", "alone"): 0.95,
    ("sample", "busy loop"): 0.5,
}


def contention_ratios(rows: list[dict]) -> list[dict]:
    ratios = []
    for task, beside in SCENARIOS:
        entry = {"task": task, "beside": beside, "target": TARGETS[(task, beside)]}
        for policy in POLICIES:
            rate = _rate(rows, task, beside, policy)
            if beside == "alone":
                reference = _rate(rows, task, "alone", "all cores")
            else:
                reference = _rate(rows, task, "alone", policy)
            entry[policy] = None if rate is None or not reference else rate / reference
        entry["met"] = entry["adaptive"] is not None and entry["adaptive"] >= entry["target"]
        ratios.append(entry)
    return ratios


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m charrnn.bench.contention worker ... (started by charrnn bench --contention)")
