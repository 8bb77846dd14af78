"""DiffMean: residual-stream steering by the difference of two languages' mean states.

``v[l] = mean over target-language tokens of h_l - mean over source-language tokens of h_l``,
with ``h_l`` the output of decoder layer ``l`` (the residual stream after it). The means come
from ``collect``'s exact running sums (``resid_sum`` in the statistics files), over the same
text and tokens as the neuron counters. Steering adds ``alpha * v[l]`` to the output of each
chosen layer (:class:`langloc.intervene.intervention.ResidualEdit`).

The random control is a random direction of the same norm at each steered layer (a Gaussian
vector drawn from the control's own seed, rescaled to ``|v[l]|``): it moves the residual
stream as far as the real vector, in a direction that carries no language.
"""

from __future__ import annotations

import torch

from langloc.errors import LanglocError


def diffmean_vectors(stats, target: str, source: str) -> torch.Tensor:
    """[L, H] float64: mean residual state on ``target`` minus that on ``source``, per layer."""
    if target == source:
        raise LanglocError(f"DiffMean needs two different languages, got {target!r} twice")
    return stats.mean_residual(target) - stats.mean_residual(source)


def random_directions(vectors: torch.Tensor, layers, seed: int) -> torch.Tensor:
    """[L, H]: at each of ``layers``, a random Gaussian direction with the norm of ``vectors[l]``
    (zero elsewhere); deterministic for ``seed``."""
    g = torch.Generator().manual_seed(int(seed) % (2**63))
    out = torch.zeros_like(vectors, dtype=torch.float64)
    for layer in layers:
        d = torch.randn(vectors.shape[-1], generator=g, dtype=torch.float64)
        out[layer] = d / d.norm() * vectors[layer].double().norm()
    return out
