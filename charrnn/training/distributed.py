"""Data-parallel training with torch.distributed, launched by torchrun.

``torchrun --nproc-per-node N -m charrnn train ...`` starts N copies of the command with
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in the environment; each joins the
process group (gloo on CPU, NCCL on GPU), wraps the model in DistributedDataParallel (which
averages the gradients in backward) and trains on its own B rows of the B x world rows the
text is cut into (``charrnn.data.batches``). Every rank runs the same number of steps, carries its
own hidden state, and takes the same decisions: the clock used for the time budget and the
learning-rate schedule is rank 0's and a stop request on any rank stops all of them, so no
rank is ever left waiting in a collective. Only rank 0 writes files and prints progress.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from charrnn.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int


def launch_env() -> LaunchEnv | None:
    """The torchrun (or other launcher's) environment, or None for a single process."""
    world = os.environ.get("WORLD_SIZE")
    if world is None:
        return None
    try:
        env = LaunchEnv(int(os.environ["RANK"]), int(world), int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise ConfigError(
            "WORLD_SIZE is set but RANK is missing or not a number; launch with torchrun"
        ) from None
    return env if env.world_size > 1 else None


def start(env: LaunchEnv, device_choice: str) -> str:
    """Join the process group; returns the device choice this rank trains on."""
    if device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available()):
        if torch.cuda.device_count() <= env.local_rank:
            raise ConfigError(
                f"LOCAL_RANK {env.local_rank} has no GPU (this node has {torch.cuda.device_count()}); "
                "use --nproc-per-node at most the number of GPUs, or --device cpu"
            )
        torch.cuda.set_device(env.local_rank)  # so that "cuda" means this rank's GPU
        backend, device = "nccl", "cuda"
    else:
        backend, device = "gloo", "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return device


def stop() -> None:
    if dist.is_initialized():
        # Tearing gloo down while a peer is still in its last collective can abort that peer
        # ("terminate called without an active exception"): meet first, then leave together.
        if dist.get_world_size() > 1:
            try:
                dist.barrier()
            except RuntimeError:
                pass  # a peer already gone: nothing left to wait for
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around ``model``; its construction also copies rank 0's weights to every rank."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def rank0_value(value: float) -> float:
    """Rank 0's ``value`` on every rank (the shared clock)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.broadcast(t, src=0)
    return float(t.item())


def mean(value: float) -> float:
    """The mean of ``value`` over the ranks, on every rank."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any."""
    if not active():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj):
    """Every rank's ``obj`` (tensors and plain values), in rank order, on every rank."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the parameters' bytes: equal on every rank exactly when the weights are."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_world_size(saved: int, now: int) -> None:
    if saved != now:
        raise CheckpointError(
            f"this checkpoint was trained on {saved} process(es) and cannot continue on {now}: "
            f"each process carries its own rows of text and hidden state. Resume "
            + ("without torchrun" if saved == 1 else f"torchrun and {saved} processes in all, as before")
        )
