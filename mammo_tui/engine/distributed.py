"""Multi-GPU (or multi-process CPU) training under torchrun with DistributedDataParallel.

Every rank runs the same engine in lockstep: identical split and model init; after each training
epoch rank 0's BatchNorm buffers are broadcast and rank 0 alone validates, and its metrics go to
every rank, so every decision — best checkpoint, collapse, early stop, recovery — is taken on the
same numbers everywhere. Only rank 0 writes the run directory and emits events, so `watch` and the
run log work unchanged.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo | None:
    """Join the process group torchrun describes in the environment; None when not distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank)


def main_process() -> bool:
    """True outside torchrun and on rank 0 (for printing from the CLI)."""
    return int(os.environ.get("RANK", "0")) == 0


def broadcast(value: Any) -> Any:
    """Rank 0's value on every rank (e.g. the run directory, whose name has a timestamp)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(*flags: bool, device: torch.device) -> list[bool]:
    """Element-wise OR of flags over ranks: one tiny all-reduce keeps stops in lockstep."""
    tensor = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. Each rank's last training
    forward updated its own statistics, so without this the ranks' models differ slightly."""
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def sum_over_ranks(*values: float, device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class DistributedWeightedSampler(Sampler[int]):
    """WeightedRandomSampler split across ranks: one global weighted draw (same seed on every
    rank), each rank takes every world-th index, so the union is an inverse-frequency sample."""

    def __init__(self, weights, num_samples: int, info: DistInfo, seed: int) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.info = info
        self.per_rank = -(-num_samples // info.world)  # ceil: every rank gets the same count
        self.seed = seed

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        total = self.per_rank * self.info.world
        draw = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(draw[self.info.rank::self.info.world].tolist())

    def __len__(self) -> int:
        return self.per_rank


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def joined() -> bool:
    """Whether this process is in a process group already (then its owner leaves it, not us)."""
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group() -> Iterator[DistInfo | None]:
    """from_env() for a block; leaves the group after it only if the block joined it. A CV joins
    once for all its folds: leaving and re-joining torchrun's rendezvous between runs is not
    reliable (gloo connections reset)."""
    owner = not joined()
    info = from_env()
    try:
        yield info
    finally:
        if info and owner:
            cleanup()
