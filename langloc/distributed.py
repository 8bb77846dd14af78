"""Data parallelism over processes with torch.distributed (launched by torchrun).

Work is split by batch: with W processes, rank r runs batches r, r + W, r + 2W, ... of each
language. Every batch is the same tensor it would be in a single process, and the counters
are integers (see :mod:`langloc.stats.counters`), so the all-reduced totals equal a
single-process run bit for bit.

Studies made of independent cells (a method on a target, a condition, a batch of items)
share the cells out the same way (:func:`map_cells`): cell j runs on rank j % W, and every
rank gets every cell's result back, in order, so what follows (tables, files written by rank
0) is what one process computes, as long as a cell's result does not depend on which cells
ran before it in the same process.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from langloc.errors import LanglocError


# How long a process waits at a collective for the others: a process whose cells are done
# waits there for the slowest cell of the others (a steering search, an adapter's training),
# which can take far longer than torch's default of 30 minutes. A process that dies ends the
# others through torchrun, not through this timeout.
TIMEOUT_MINUTES = 12 * 60


def init_from_env() -> None:
    """Join the process group that torchrun describes in the environment (no-op otherwise);
    collectives wait up to ``LANGLOC_DIST_TIMEOUT_MINUTES`` (default :data:`TIMEOUT_MINUTES`)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import datetime

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        minutes = float(os.environ.get("LANGLOC_DIST_TIMEOUT_MINUTES", TIMEOUT_MINUTES))
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=minutes))


def shutdown() -> None:
    """Leave the process group (no-op outside one). A gloo group left to the interpreter's exit
    can abort the process ("terminate called without an active exception") after its work is
    done, failing a run that succeeded."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def all_reduce_sum(tensors: dict[str, torch.Tensor], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Every tensor summed over the processes (on ``device``; default this process's GPU under
    nccl, else the CPU), returned on the CPU; the tensors themselves in one process."""
    if rank_and_world()[1] == 1:
        return tensors
    device = device or local_device() or "cpu"
    out = {}
    for name, t in tensors.items():
        t = t.to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[name] = t.cpu()
    return out


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (``obj`` itself in one process)."""
    if rank_and_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class CellFailed(LanglocError):
    """Raised on every other rank when a cell failed on one (that rank raises the error itself)."""


def map_cells(fn: Callable[[T], Any], cells: Sequence[T], done: Callable[[int, Any], None] | None = None) -> list:
    """``[fn(c) for c in cells]``, with cell j computed on rank j % world and the results
    gathered (pickled) in order on every rank. ``done(j, result)`` is called on the rank that
    computed cell j, after it (e.g. to advance a progress bar).

    A cell that raises stops every rank at the gather: its rank raises the error, the others
    :class:`CellFailed` naming it, rather than waiting for a result that never comes.
    """
    cells = list(cells)
    rank, world = rank_and_world()
    mine: dict[int, Any] = {}
    failed = None
    for j, cell in enumerate(cells):
        if j % world != rank:
            continue
        try:
            mine[j] = fn(cell)
        except Exception as exc:  # noqa: BLE001 -- re-raised below, after the other ranks learn of it
            if world == 1:
                raise
            failed = exc
            break
        if done is not None:
            done(j, mine[j])
    if world == 1:
        return [mine[j] for j in range(len(cells))]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, ("failed", f"{type(failed).__name__}: {failed}") if failed is not None
                           else ("ok", mine))
    if failed is not None:
        raise failed
    for r, (status, payload) in enumerate(gathered):
        if status == "failed":
            raise CellFailed(f"process {r} failed: {payload}")
    merged: dict[int, Any] = {}
    for _, payload in gathered:
        merged.update(payload)
    return [merged[j] for j in range(len(cells))]
