"""Memory a command is about to take, checked before it takes it. A command that would hold
more than the machine can give (states replayed over a long text, a window followed far back,
a huge batch of samples) is refused with the figure it would need and the option that makes it
smaller, instead of swapping the machine to a halt or dying at a failed allocation."""

from __future__ import annotations

import torch

from charrnn.device import available_memory
from charrnn.errors import InsufficientMemory

# The share of the memory available now that one command may plan to take: the rest is left
# to the interpreter, torch's own buffers and the other work on the machine.
USABLE_SHARE = 0.8
GIB = 2**30


def require_memory(need: int, what: str, advice: str, device: torch.device | None = None) -> None:
    """Refuse ``need`` bytes for ``what`` when they exceed the usable share of the memory
    ``device`` (the CPU by default) has available; ``advice`` says which option to lower."""
    device = torch.device("cpu") if device is None else device
    free = available_memory(device)
    if free is None or need <= free * USABLE_SHARE:
        return
    where = "GPU memory" if device.type == "cuda" else "memory"
    raise InsufficientMemory(
        f"{what} would need about {_size(need)}, more than the {_size(int(free * USABLE_SHARE))} of "
        f"{where} this command may take now ({_size(free)} available); {advice}"
    )


def _size(size: int) -> str:
    return f"{size / GIB:,.1f} GiB" if size >= GIB / 10 else f"{size / 2**20:,.0f} MiB"
