"""The benchmark: every speed against a reference measured in the same run.

A 2-core machine shared with other work is noisy (+-15% and worse), so absolute numbers from
different runs do not compare; ratios taken within one run do. One ``run_bench`` measures:

- the machine's limit: the best fp32 (and on a GPU fp16) matrix-multiply rate;
- training chars/s per preset through the real ``Trainer.train_step`` (embedding, recurrent
  layers, decoder, loss, backward, gradient clip, optimizer, the loss read-back), converted
  to GFLOP/s with ``flops_per_char`` and divided by that limit;
- sampling chars/s at batch 1 on the reference (eager) and fast paths, and batched;
- encoding M chars/s (decode + vocabulary + ids), and the peak RSS of a training process
  on a large generated corpus (a subprocess, so that the figure is that process's alone).

FLOP counting (matrix multiplies only; elementwise gate math, softmax, loss and optimizer
are O(H) or O(parameters) per character and not counted): per character and layer, a
recurrent layer's forward is 2 * G * H * (I + H) with G = 4 (LSTM), 3 (GRU), 1 (RNN), I its
input width (the embedding for layer 0, H above); the decoder is 2 * H * V; the embedding is
a lookup (0). Backward costs twice the forward (gradients of inputs and of weights), so a
training step is 3x the forward.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from charrnn.cells import CELLS
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.options import PRESETS
from charrnn.options import DEFAULTS
from charrnn.threads import resolve_policy, set_threads
from charrnn.bench.corpus_memory import BATCHED_SAMPLES, check_corpus, cli_sampling_ratio, encode_speed, training_peak_rss, write_corpus

BENCH_VOCAB = 65  # tiny shakespeare's vocabulary size


@dataclass
class BenchConfig:
    long: bool = False  # more steps and characters per measurement: steadier figures, ~4x longer
    presets: tuple[str, ...] = ()  # preset names or "LxH" shapes; () = small, large (GPU: 2x512, 3x1024)
    cell: str = "lstm"
    device: str = "auto"
    batch_size: int | None = None  # None: the trainer's default for the device
    seq_len: int | None = None
    corpus_mb: int = 100  # size of the generated corpus for encoding speed and peak RSS
    memory: bool = True  # measure encoding and peak RSS (writes the corpus to a temp dir)
    sampling: bool = True
    source_text: Path | None = None  # text repeated to make the corpus (default: generated)
    threads: int | None = None  # --threads: fixed for every figure; None: as the commands choose
    # Also time each training step with the per-group gradient statistics on and off,
    # alternating, in the same process: their cost as a ratio.
    grad_stats_cost: bool = False

    def check(self) -> None:
        """Refuse, before the first measurement, what would fail or never end minutes into
        the run: a thread count past the machine's (``resolve_policy``), and with ``memory``
        a --text that is not a readable text file or a corpus the temporary directory's disk
        or the memory cannot hold."""
        resolve_policy(self.threads)
        if self.memory:
            check_corpus(self.corpus_mb, self.source_text, Path(tempfile.gettempdir()))


@dataclass
class BenchResult:
    machine: dict = field(default_factory=dict)
    peak: dict = field(default_factory=dict)
    training: list[dict] = field(default_factory=list)
    sampling: list[dict] = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# -- FLOPs and the machine's limit -------------------------------------------------


def flops_per_char(config: ModelConfig) -> dict:
    """Matrix-multiply FLOPs per character: forward, and a training step (3x forward)."""
    g, h = CELLS[config.cell].weight_blocks, config.hidden
    recurrent = sum(2 * g * h * ((config.embed if layer == 0 else h) + h) for layer in range(config.layers))
    forward = recurrent + 2 * h * config.vocab_size
    return {"forward": forward, "train": 3 * forward}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 1.5) -> dict:
    """Best rate of a square matrix multiply over a few sizes, in GFLOP/s."""
    sizes = (1024, 2048) if device.type == "cpu" else (4096, 8192)
    best = {"gflops": 0.0, "size": 0}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=out)
        _sync(device)
        deadline = time.perf_counter() + seconds / len(sizes)
        while True:
            started = time.perf_counter()
            torch.mm(a, b, out=out)
            _sync(device)
            elapsed = time.perf_counter() - started
            rate = 2 * n**3 / elapsed / 1e9
            if rate > best["gflops"]:
                best = {"gflops": rate, "size": n}
            if time.perf_counter() > deadline:
                break
    return best


# -- training ------------------------------------------------------------------------


def preset_model(preset: str, cell: str = "lstm", vocab_size: int = BENCH_VOCAB) -> ModelConfig:
    """A preset by name, or a shape "LxH" (embedding 128, as the larger presets)."""
    if preset in PRESETS:
        return ModelConfig(vocab_size=vocab_size, cell=cell, **PRESETS[preset])
    layers, hidden = (int(part) for part in preset.lower().split("x"))
    return ModelConfig(vocab_size=vocab_size, cell=cell, layers=layers, hidden=hidden, embed=128, dropout=0.25)


def default_presets(device: torch.device) -> tuple[str, ...]:
    return ("small", "large") if device.type == "cpu" else ("2x512", "3x1024")


def train_speed(
    model_config: ModelConfig,
    device: torch.device,
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int = 2,
    amp_dtype: torch.dtype = torch.float32,
    grad_stats_pairs: int = 0,
) -> dict:
    """chars/s of the real training step on random ids (speed does not depend on the text).
    With ``grad_stats_pairs``, as many steps again with the gradient statistics off and as
    many on, alternating, so that both meet the same load: their best and median times."""
    from charrnn.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = CharRNN(model_config).to(device)
    if device.type == "cuda":
        model.rnn.flatten_parameters()
    rng = np.random.default_rng(0)
    windows = steps + warmup + 2 * grad_stats_pairs + 1
    ids = rng.integers(0, model_config.vocab_size, batch_size * seq_len * windows + 1, dtype=np.uint8)
    config = TrainConfig(batch_size=batch_size, seq_len=seq_len, max_steps=10**9, warmup_steps=0)
    trainer = Trainer(model, config, ids, None, device, amp_dtype)
    for _ in range(warmup):
        trainer.train_step()

    def timed_step() -> float:
        _sync(device)
        started = time.perf_counter()
        trainer.train_step()
        _sync(device)
        return time.perf_counter() - started

    times = [timed_step() for _ in range(steps)]
    # The fastest step is what the code can do; slower ones met other work on the machine.
    best = min(times)
    chars = batch_size * seq_len
    flops = flops_per_char(model_config)["train"]
    cost = {}
    if grad_stats_pairs:
        cost = grad_stats_cost(trainer, timed_step, grad_stats_pairs)
    return {
        **cost,
        "chars_per_s": chars / best,
        "gflops": flops * chars / best / 1e9,
        "step_s": best,
        "median_step_s": statistics.median(times),
        "steps": steps,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "flops_per_char": flops,
        "parameters": model.num_parameters(),
    }


def grad_stats_cost(trainer, timed_step: Callable[[], float], pairs: int) -> dict:
    """Steps with the gradient statistics off and on, alternating (which goes first alternates
    too), so that load on the machine falls on both alike. The ratio of the best steps is the
    cost when nothing else runs; the median of each pair's ratio is the cost under the load."""
    on, off, ratios = [], [], []
    for pair in range(pairs):
        timings = {}
        for stats in (False, True) if pair % 2 == 0 else (True, False):
            trainer.grad_stats = stats
            timings[stats] = timed_step()
        on.append(timings[True])
        off.append(timings[False])
        ratios.append(timings[True] / timings[False])
    trainer.grad_stats = True
    return {
        "grad_stats_pairs": pairs,
        "grad_stats_on_step_s": min(on),
        "grad_stats_off_step_s": min(off),
        "grad_stats_best_ratio": min(on) / min(off),
        "grad_stats_median_ratio": statistics.median(ratios),
        "grad_stats_on_median_step_s": statistics.median(on),
        "grad_stats_off_median_step_s": statistics.median(off),
    }


# -- sampling ------------------------------------------------------------------------


def _bench_vocab():
    from charrnn.data.vocab import Vocab

    return Vocab(tuple(chr(32 + i) for i in range(BENCH_VOCAB - 1)) + ("\n",))


def sample_speed(
    model: CharRNN, engine: str, num_samples: int, length: int, device: torch.device, repeats: int = 3, precision: str = "fp32"
) -> float:
    """Generated chars/s over all samples through the loop ``charrnn sample`` uses; the best
    of ``repeats`` runs of ``length`` steps, in ``precision`` (fp32: as every release ran)."""
    from charrnn.generation.sample import SampleConfig, generate_ids

    vocab = _bench_vocab()
    # Without an engine the config is also valid for the core release, which the README's
    # before/after figures were measured against.
    options = {} if engine == "eager" and "engine" not in SampleConfig.__dataclass_fields__ else {"engine": engine}
    if "precision" in SampleConfig.__dataclass_fields__:
        options["precision"] = precision
    # Named rather than left to SampleConfig: releases whose default was another measure alike.
    temperature = DEFAULTS["sample"]["temperature"]
    config = SampleConfig(length=length, temperature=temperature, seed=1, num_samples=num_samples, **options)
    warm = SampleConfig(length=20, temperature=temperature, seed=1, num_samples=num_samples, **options)
    for _ in generate_ids(model, vocab, warm, device):
        pass
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        produced = 0
        for next_ids in generate_ids(model, vocab, config, device):
            produced += len(next_ids)
            if num_samples == 1:
                int(next_ids[0])  # what streaming does with each id
        _sync(device)
        best = max(best, produced / (time.perf_counter() - started))
    return best


GPU_THROUGHPUT_BATCH = 1024


def default_batches(device: torch.device) -> tuple[int, ...]:
    from charrnn.training.trainer import default_batch_size

    if device.type == "cuda":
        return (default_batch_size(device), GPU_THROUGHPUT_BATCH)
    return (default_batch_size(device),)


def default_seq_len(device: torch.device) -> int:
    from charrnn.training.trainer import TrainConfig

    return TrainConfig().seq_len


def run_bench(config: BenchConfig, progress: Callable[[str], None] = lambda message: None) -> BenchResult:
    from charrnn.device import cpu_bf16_flags, cpu_model, resolve_device

    config.check()
    device = resolve_device(config.device)
    threads = resolve_policy(config.threads)
    # What the code can do on the machine: every core it gives (`bench --contention` measures
    # the thread governor the commands use beside other work).
    set_threads(threads.fixed or threads.most)
    result = BenchResult()
    result.machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "bf16_flags": cpu_bf16_flags(),
    }
    if cpu_bf16_flags():
        from charrnn.generation.native import describe_batched, describe_kernel

        result.machine["bf16_one_row"] = describe_kernel()
        result.machine["bf16_rows"] = describe_batched()
    presets = config.presets or default_presets(device)
    _bench_training(config, device, presets, result, progress)
    if config.sampling:
        _bench_sampling(config, device, presets, result, progress)
    if config.memory:
        _bench_memory(config, device, result, progress)
    return result


def _bench_training(config: BenchConfig, device: torch.device, presets, result: BenchResult, progress) -> None:
    """Training speed of each preset and batch, as a share of the matmul peak measured in the
    same run."""
    scale = 4 if config.long else 1
    precisions = training_precisions(device)
    result.peak["reference"] = precisions[0][0]

    def measure_peak() -> None:
        # Measured again before each training figure and the best kept: the limit is what
        # the machine can do, and other work on it only ever lowers a measurement. Each
        # precision's figures are against its own peak (bf16 multiplies at twice fp32's rate
        # or more where the CPU has the instructions).
        for name, dtype in [("fp32", torch.float32), *precisions]:
            key = f"{name}_gflops"
            result.peak[key] = max(result.peak.get(key, 0.0), matmul_peak(device, dtype, 1.0 * scale)["gflops"])

    batches = (config.batch_size,) if config.batch_size else default_batches(device)
    seq = config.seq_len or default_seq_len(device)
    for preset in presets:
        model_config = preset_model(preset, config.cell)
        heavy = model_config.hidden * model_config.layers >= 1024 and device.type == "cpu"
        steps = (3 if heavy else 6 if device.type == "cpu" else 20) * scale
        for batch in batches:
            progress(f"matrix-multiply peak, then training {preset} ({model_config.layers}x{model_config.hidden}) batch {batch}x{seq}")
            measure_peak()
            # Pairs of steps with the gradient statistics off and on: enough for a figure to
            # within 1-2% even where the steps themselves are few.
            pairs = 5 * steps if config.grad_stats_cost else 0
            for name, dtype in precisions:
                row = train_speed(model_config, device, batch, seq, steps, amp_dtype=dtype, grad_stats_pairs=pairs)
                row.update(preset=preset, shape=f"{model_config.layers}x{model_config.hidden}", cell=model_config.cell, precision=name)
                result.training.append(row)
    progress("matrix-multiply peak")
    measure_peak()
    for row in result.training:
        row["ratio"] = row["gflops"] / result.peak[f"{row['precision']}_gflops"]


def training_precisions(device: torch.device) -> list[tuple[str, torch.dtype]]:
    """The precisions training is measured in: a GPU's default autocast; on a CPU fp32, and
    beside it bf16 autocast where the CPU has native bf16 instructions."""
    from charrnn.device import cpu_bf16_flags
    from charrnn.precision import DTYPE_NAMES, resolve_precision

    if device.type == "cuda":
        dtype = resolve_precision("auto", device)
        return [(DTYPE_NAMES[dtype], dtype)]
    return [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if cpu_bf16_flags() else [])


def _bench_sampling(config: BenchConfig, device: torch.device, presets, result: BenchResult, progress) -> None:
    """Sampling speed: the fast stepper against the model's own layers, one sample against a
    batch, each preset; in fp32, and in bf16 beside it where the CPU has native bf16."""
    from charrnn.device import cpu_bf16_flags

    scale = 4 if config.long else 1
    for preset in presets:
        model_config = preset_model(preset, config.cell)
        torch.manual_seed(0)
        model = CharRNN(model_config).to(device).eval()
        if device.type == "cuda":
            model.rnn.flatten_parameters()
        heavy = model_config.hidden * model_config.layers >= 1024 and device.type == "cpu"
        length = (500 if heavy else 2000) * scale
        row = {"preset": preset, "shape": f"{model_config.layers}x{model_config.hidden}"}
        progress(f"sampling {preset}: batch 1, eager (reference)")
        row["eager_b1"] = sample_speed(model, "eager", 1, max(length // 4, 100), device)
        progress(f"sampling {preset}: batch 1, fast")
        row["fast_b1"] = sample_speed(model, "auto", 1, length, device)
        progress(f"sampling {preset}: batch {BATCHED_SAMPLES}")
        row["batched"] = sample_speed(model, "auto", BATCHED_SAMPLES, max(length // 8, 50), device)
        row["fast_vs_eager"] = row["fast_b1"] / row["eager_b1"]
        # N separate batch-1 runs make N x the characters in N x the time: the same rate.
        row["batched_vs_separate"] = row["batched"] / row["fast_b1"]
        if device.type == "cpu" and cpu_bf16_flags():
            # bf16 beside fp32, each against fp32's figure: the fast stepper at one sample,
            # and a batch on the fast stepper's bf16 products and on the model's own layers.
            progress(f"sampling {preset}: bf16, batch 1 and batch {BATCHED_SAMPLES}")
            row["fast_b1_bf16"] = sample_speed(model, "fast", 1, length, device, precision="bf16")
            row["batched_fast_bf16"] = sample_speed(model, "fast", BATCHED_SAMPLES, max(length // 8, 50), device, precision="bf16")
            row["batched_eager_bf16"] = sample_speed(model, "eager", BATCHED_SAMPLES, max(length // 8, 50), device, precision="bf16")
        result.sampling.append(row)


def _bench_memory(config: BenchConfig, device: torch.device, result: BenchResult, progress) -> None:
    """Encoding speed and training's peak memory on a generated corpus, cold and warm cache."""
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as scratch:
        path = Path(scratch) / "corpus.txt"
        progress(f"writing a {config.corpus_mb} MB corpus")
        size = write_corpus(path, config.corpus_mb, config.source_text)
        progress("encoding speed")
        result.memory.update(encode_speed(path))
        result.memory["corpus_bytes"] = size
        cache, run = Path(scratch) / "cache", Path(scratch) / "run"
        progress("peak RSS of training on it (cold cache: decodes and encodes first)")
        cold = training_peak_rss(path, cache, Path(scratch) / "cold")
        progress("peak RSS of training on it (warm cache: memory-mapped ids)")
        warm = training_peak_rss(path, cache, run)
        if config.sampling and device.type == "cpu":
            progress(f"charrnn sample: one run of {BATCHED_SAMPLES} samples against one of 1")
            cli = cli_sampling_ratio(run)
            rows = [row for row in result.sampling if row["preset"] == "small"]
            if rows:
                rows[0]["cli_batched_vs_separate"] = cli["ratio"]
            result.memory["cli_sampling"] = cli
        for name, figures in (("cold", cold), ("warm", warm)):
            for key in ("peak_rss", "peak_anon", "peak_file"):
                value = figures[f"{key}_bytes"]
                result.memory[f"train_{key}_{name}_mb"] = None if value is None else value / 2**20
        result.memory["train_cold_s"] = cold["seconds"]
        result.memory["train_warm_s"] = warm["seconds"]
