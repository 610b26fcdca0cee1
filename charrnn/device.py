"""Device choice, the CPU's bf16 instructions, seeding, and the capture/restore of every random generator."""

from __future__ import annotations

import functools
import os
import platform
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from charrnn.errors import ConfigError, DeviceError
from charrnn.options import DeviceChoice


def resolve_device(choice: str = "auto") -> torch.device:
    choice = DeviceChoice(choice).value
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but this machine has no usable CUDA GPU")
    return torch.device(choice)


def bf16_rnn_supported() -> bool:
    """cuDNN runs bf16 recurrent layers only in recent versions; probe rather than trust."""
    if not torch.cuda.is_available():
        return False
    try:
        rnn = torch.nn.LSTM(8, 8).cuda().to(torch.bfloat16)
        with warnings.catch_warnings():
            # torch does not flatten bf16 weights for cuDNN and warns about it on every call.
            warnings.simplefilter("ignore", UserWarning)
            rnn(torch.zeros(2, 1, 8, device="cuda", dtype=torch.bfloat16))
        return True
    except RuntimeError:
        return False


# The CPU instructions that multiply bf16 natively (Intel Cooper Lake and Sapphire Rapids on,
# AMD Zen 4 on). Without them oneDNN emulates bf16, slower than fp32, and its bf16 LSTM
# primitive was seen to crash on an AVX2-only CPU (torch 2.13): bf16 is offered only here.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in the kernel's /proc/cpuinfo, or None off Linux. Read
    once a process: a command asks for the CPU's flags at each precision it resolves."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> str | None:
    """The CPU's feature flags as the kernel lists them (x86 "flags", Arm "Features"), or None."""
    return _cpuinfo("flags") or _cpuinfo("Features")


def cpu_model() -> str:
    """The CPU's model name as the kernel gives it (lscpu's "Model name"), or the platform's."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_bf16_flags() -> tuple[str, ...]:
    """The native bf16 instructions this CPU has (empty where it has none, or where it cannot
    be told): the kernel's flags, or torch's own probe off Linux."""
    flags = _cpuinfo("flags")
    if flags is not None:
        have = set(flags.split())
        return tuple(flag for flag in CPU_BF16_FLAGS if flag in have)
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return tuple(flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)())


def available_memory(device: torch.device) -> int | None:
    """Bytes that ``device`` can still hand out, or None where that cannot be told. On the
    CPU: the least of the kernel's MemAvailable, physical memory, and a cgroup's limit less
    its usage (a container's share of a bigger machine)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    known = []
    try:
        known.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    known.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="ascii").strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text(encoding="ascii"))
            known.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(known) if known else None


def check_deterministic_resume(device: torch.device, layers: int, dropout: float) -> None:
    """Refuse --deterministic where a resumed run could not replay the unstopped one.

    cuDNN draws the dropout between the layers of its fused call from a state of its own,
    which torch's RNG state (what a checkpoint holds) does not include. Measured on an H100
    (12 steps straight against 6 + 6 resumed): 2 layers with dropout 0.2 ended 1.4e-2 apart;
    dropout 0, or one layer (whose dropout torch draws), ended bit-identical."""
    if device.type == "cuda" and layers > 1 and dropout > 0:
        raise ConfigError(
            "--deterministic on a GPU needs --dropout 0 (or one layer): cuDNN keeps the dropout "
            "state between its layers outside what a checkpoint can restore"
        )


def use_deterministic_algorithms(on: bool) -> None:
    """Make every kernel deterministic (or raise where none exists), so that a run and its
    resumed twin agree bit-for-bit on CUDA too. The CPU kernels charrnn uses already are."""
    if on:
        # cuBLAS is deterministic only with a fixed workspace; read when its handle is created.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state() -> dict:
    """Every generator that training may draw from, in a form ``weights_only`` loading accepts."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def _as_tuples(value):
    """random.setstate wants tuples where a round trip may have produced lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value
