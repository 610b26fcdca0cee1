"""Memory a command is about to take, checked before it takes it. A command that would hold
more than the machine can give (states replayed over a long text, a window followed far back,
a huge batch of samples) is refused with the figure it would need and the option that makes it
smaller, instead of swapping the machine to a halt or dying at a failed allocation."""

from __future__ import annotations

import resource

import torch

from charrnn.device import available_memory
from charrnn.errors import InsufficientMemory

# The share of the memory available now that one command may plan to take: the rest is left
# to the interpreter, torch's own buffers and the other work on the machine.
USABLE_SHARE = 0.8
GIB = 2**30


def usable_memory(device: torch.device | None = None) -> int | None:
    """Bytes one command may still plan to take on ``device`` (the CPU by default), or None
    where that cannot be told. On the CPU a process limited by ``ulimit -v`` (RLIMIT_AS)
    cannot grow past its limit whatever the machine has free, so what is left of it counts."""
    device = torch.device("cpu") if device is None else torch.device(device)
    free = available_memory(device)
    if device.type == "cpu":
        left = _address_space_left()
        if left is not None:
            free = left if free is None else min(free, left)
    return None if free is None else int(free * USABLE_SHARE)


def require_memory(need: int, what: str, advice: str, device: torch.device | None = None) -> None:
    """Refuse ``need`` bytes for ``what`` when they exceed the usable share of the memory
    ``device`` (the CPU by default) has available; ``advice`` says which option to lower."""
    device = torch.device("cpu") if device is None else torch.device(device)
    usable = usable_memory(device)
    if usable is None or need <= usable:
        return
    where = "GPU memory" if device.type == "cuda" else "memory"
    raise InsufficientMemory(
        f"{what} would need about {size_text(need)}, more than the {size_text(usable)} of "
        f"{where} this command may take now; {advice}"
    )


def largest_fitting(per_item: float, fixed: float = 0, device: torch.device | None = None, held: float = 0) -> int | None:
    """The most items of ``per_item`` bytes each (beside ``fixed`` bytes) that fit in the usable
    memory, counting ``held`` bytes the items already take (they would shrink with the count);
    None where the memory cannot be told."""
    usable = usable_memory(device)
    if usable is None:
        return None
    return max(0, int((usable + held - fixed) // max(per_item, 1)))


def size_text(size: float) -> str:
    return f"{size / GIB:,.1f} GiB" if size >= GIB / 10 else f"{size / 2**20:,.0f} MiB"


def _address_space_left() -> int | None:
    """RLIMIT_AS's soft limit less the address space this process already maps; None when
    unlimited or unknown."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None
