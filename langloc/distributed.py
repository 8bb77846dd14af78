"""Data parallelism over processes with torch.distributed (launched by torchrun).

Work is split by batch: with W processes, rank r runs batches r, r + W, r + 2W, ... of each
language. Every batch is the same tensor it would be in a single process, and the counters
are integers (see :mod:`langloc.stats.counters`), so the all-reduced totals equal a
single-process run bit for bit.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

import torch
import torch.distributed as dist


def init_from_env() -> None:
    """Join the process group that torchrun describes in the environment (no-op otherwise)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def local_device() -> str | None:
    """cuda:LOCAL_RANK under torchrun on GPUs; None (the default device) otherwise."""
    if dist.is_available() and dist.is_initialized() and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None


T = TypeVar("T")


def rank_share(n_batches: int, rank: int, world: int) -> int:
    """How many of ``n_batches`` batches rank ``rank`` runs (batches r, r + W, r + 2W, ...)."""
    return max(0, -(-(n_batches - rank) // world))


def my_batches(batches: Iterable[T], rank: int, world: int, done: int = 0) -> Iterator[tuple[int, T]]:
    """This rank's batches as ``(k, batch)``, k = 1, 2, ... counting its own batches, after
    skipping the first ``done`` of them (those a resumed checkpoint already holds).

    Every rank walks the whole sequence (tokenising is cheap next to the forward pass), so
    batch ``b`` is the same tensor whatever the world size, and a resumed run sees exactly
    the batches an uninterrupted one would.
    """
    mine = 0
    for b, batch in enumerate(batches):
        if b % world != rank:
            continue
        mine += 1
        if mine > done:
            yield mine, batch


def all_reduce_sum(tensors: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    if rank_and_world()[1] == 1:
        return tensors
    out = {}
    for name, t in tensors.items():
        t = t.to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[name] = t.cpu()
    return out


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()
