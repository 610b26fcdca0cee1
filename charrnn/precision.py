"""The arithmetic a command runs in: which precision (``--precision``), why, and the context
that applies it.

Training autocasts its steps (weights and optimizer state stay fp32). Inference (``eval``,
``sample``, ``serve``) autocasts the model's own forward and runs the fast stepper's matrix
products on bf16 copies of the weights (``charrnn.generation.stepper``). On a CPU, bf16 is
offered only where the CPU multiplies it natively (``charrnn.device.CPU_BF16_FLAGS``). There
``auto`` times this model's step in both precisions and keeps bf16 only where it is clearly
the faster: for inference here (``faster_precision``), for a new run with a budget in minutes
in ``charrnn.training.budget_fit``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Callable

import torch

from charrnn import device as devices
from charrnn.errors import DeviceError
from charrnn.options import Precision

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}

# ``auto`` keeps bf16 for inference only when its probe ran at least this much faster than
# fp32: near a tie the choice would flip with the machine's load, and with it the text that a
# seed gives.
PROBE_MARGIN = 1.25
PROBE_SECONDS = 0.02  # per precision and repeat: dozens of steps of a small model
PROBE_REPEATS = 5


def _on_cpu(choice: str, purpose: str) -> torch.dtype:
    """The CPU's dtype for ``choice`` (``auto``: fp32); fp16, and bf16 without native bf16
    instructions, are refused in one line saying how the CPU ``purpose``s ("trains")."""
    if choice == "fp16":
        raise DeviceError(f"--precision fp16 needs a CUDA GPU; a CPU {purpose} in fp32 or, where it has bf16 instructions, bf16")
    if choice != "bf16":
        return torch.float32
    if not devices.cpu_bf16_flags():
        raise DeviceError(
            f"--precision bf16 on a CPU needs native bf16 instructions ({' or '.join(devices.CPU_BF16_FLAGS)}), "
            f"which this one lacks; it {purpose} in fp32 (--precision fp32)"
        )
    return torch.bfloat16


def resolve_precision(choice: str, device: torch.device, recorded: str | None = None) -> torch.dtype:
    """The autocast dtype for training (float32 means no autocast). On a CPU, ``auto`` is fp32
    unless a new run's budget chose bf16 (``charrnn.training.budget_fit``); ``recorded`` is
    what a resumed run trained in (its checkpoint's), which its ``auto`` keeps where this CPU
    runs it, so that the resume is exact."""
    choice = Precision(choice).value
    if device.type != "cuda":
        if choice == "auto" and recorded == "bf16" and devices.cpu_bf16_flags():
            return torch.bfloat16
        return _on_cpu(choice, "trains")
    if choice == "auto" or choice == "fp16":
        return torch.float16
    if choice == "bf16":
        if not devices.bf16_rnn_supported():
            raise DeviceError("this GPU's cuDNN cannot run bf16 recurrent layers; use fp16")
        return torch.bfloat16
    return torch.float32


def resolve_inference_precision(choice: str, device: torch.device, probed: bool = True) -> torch.dtype | None:
    """The dtype that ``eval``, ``sample`` or ``serve`` computes in, or None where ``auto``
    must time this model's step to choose (a CPU with native bf16: see ``faster_precision``;
    ``probed`` False: ``auto`` is fp32, as for ``eval``, whose figure is the model's exact
    one). A GPU infers in fp32 unless fp16 or bf16 is asked for, as it always has."""
    choice = Precision(choice).value
    if device.type == "cuda":
        if choice == "bf16" and not devices.bf16_rnn_supported():
            raise DeviceError("this GPU's cuDNN cannot run bf16 recurrent layers; use --precision fp16 or fp32")
        return DTYPES.get(choice, torch.float32)
    if choice == "auto" and probed and devices.cpu_bf16_flags():
        return None
    return _on_cpu(choice, "computes")


def faster_precision(steps: dict[torch.dtype, Callable[[], object]]) -> tuple[torch.dtype, dict[torch.dtype, float]]:
    """Time each precision's step (its fastest of a few short bursts, which a busy machine
    disturbs least, the precisions' bursts taking turns so that a spell of load falls on
    both) and keep bf16 only if it ran ``PROBE_MARGIN`` times fp32's speed. Returns the
    choice and each precision's seconds per step."""
    for step in steps.values():
        step()  # the first call lays out weights and warms caches
    seconds = {dtype: float("inf") for dtype in steps}
    for _ in range(PROBE_REPEATS):
        for dtype, step in steps.items():
            count, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < PROBE_SECONDS:
                step()
                count += 1
            seconds[dtype] = min(seconds[dtype], elapsed / count)
    bf16 = seconds.get(torch.bfloat16)
    if bf16 is not None and bf16 * PROBE_MARGIN <= seconds[torch.float32]:
        return torch.bfloat16, seconds
    return torch.float32, seconds


def autocast(device: torch.device, dtype: torch.dtype):
    """The context that runs a model's forward in ``dtype`` (none for fp32)."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def describe_precision(choice: str, dtype: torch.dtype, device: torch.device, probe: str | None = None) -> str:
    """The precision a run trains in and why, for its header; ``probe``: the timings of the
    step by which ``auto`` chose, in words."""
    flags = devices.cpu_bf16_flags() if device.type == "cpu" else ()
    chosen = f"auto: a training step took {probe}" if probe else ""
    if dtype == torch.float32:
        if device.type == "cuda":
            return "fp32 (--precision fp32)"
        if choice == "fp32" or not flags:
            return "fp32" + ("" if flags else " (this CPU has no native bf16)")
        if chosen:
            return f"fp32 ({chosen}; bf16 is kept only at {PROBE_MARGIN:g}x fp32's speed)"
        # bf16 learns no more per step (docs/performance.md, "bf16 on a CPU").
        return (
            f"fp32 (auto: the CPU has {', '.join(flags)}, but a budget in steps trains in fp32, the same "
            "figures on every CPU; a budget in minutes times both: --precision bf16 trains in bf16 autocast)"
        )
    why = "; ".join(part for part in (chosen, f"the CPU has {', '.join(flags)}" if flags else "") if part)
    return f"{DTYPE_NAMES[dtype]} autocast, weights and optimizer state in fp32" + (f" ({why})" if why else "")


def describe_inference_precision(choice: str, dtype: torch.dtype, device: torch.device, probe: dict[torch.dtype, float] | None = None) -> str:
    """A precision other than fp32 that ``eval``, ``sample`` or ``serve`` computes in, and
    why, for its header."""
    name = DTYPE_NAMES[dtype]
    if probe:
        speeds = ", ".join(f"{DTYPE_NAMES[d]} {1e6 * s:,.0f} us" for d, s in probe.items())
        return f"{name} (auto: a step of this model took {speeds})"
    why = f"; the CPU has {', '.join(devices.cpu_bf16_flags())}" if device.type == "cpu" else ""
    return f"{name} (--precision {choice}{why})"
