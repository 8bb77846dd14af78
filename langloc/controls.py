"""One way to draw random controls.

Every experiment's control is a set of random neurons with the same count per layer as the
set it controls for. Its seed is derived from the run seed and the *condition's name* (the
label the control has in the output files, e.g. ``random:fr`` in ``ablation.csv``) and the
draw number::

    seed = int.from_bytes(sha256(f"{run_seed}/{condition}/{draw}".encode()).digest()[:8], "big") >> 1

(the first 8 bytes of the SHA-256 digest, shifted to a non-negative 63-bit integer). Two
conditions, or two draws of one condition, therefore never share a seed (barring a hash
collision), so their neurons are independent draws; the same run seed, condition and draw
always give the same neurons, in any process and on any machine. Within a draw, one
``torch.Generator`` seeded this way draws each layer in order: ``randperm(I)[:count]``.

The condition names used by langloc's studies are listed in docs/statistics.md.
"""

from __future__ import annotations

import hashlib

import torch

from langloc.errors import LanglocError


def derive_seed(run_seed: int, name: str, draw: int = 0) -> int:
    """A non-negative 63-bit seed from ``run_seed``, a name and a draw number (see the module)."""
    digest = hashlib.sha256(f"{int(run_seed)}/{name}/{int(draw)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def control_seed(run_seed: int, condition: str, draw: int = 0) -> int:
    """The seed of draw ``draw`` of the random control named ``condition``."""
    return derive_seed(run_seed, condition, draw)


def random_layers(like, num_neurons: int, seed: int) -> list[torch.Tensor]:
    """Random neurons with the same count per layer as ``like``, from one generator seeded with
    ``seed`` (layer by layer: ``randperm(num_neurons)[:count]``). Two calls with the same seed
    share neurons (prefixes of the same permutations): experiments draw their controls through
    :func:`random_control`, which gives every condition its own seed."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(num_neurons, generator=g)[: len(idx)].sort().values for idx in like]


def random_control(like, intermediate_size: int, run_seed: int, condition: str, draw: int = 0) -> list[torch.Tensor]:
    """Random neurons with the same count per layer as ``like`` (per layer index lists), drawn
    from :func:`control_seed` ``(run_seed, condition, draw)``: sorted LongTensors."""
    return random_layers(like, intermediate_size, control_seed(run_seed, condition, draw))


def check_draws(draws: int) -> int:
    if int(draws) != draws or draws < 1:
        raise LanglocError(f"--control-draws must be a whole number of at least 1, got {draws}")
    return int(draws)
