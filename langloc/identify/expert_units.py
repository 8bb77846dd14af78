"""Expert units (Kojima et al., NAACL 2024), methods.md §2.

Each text segment is labelled "in language k" or not; a unit's response to a segment is its
mean activation over the segment (see :mod:`langloc.stats.responses`). For language k every
unit is scored by the average precision (AP) of its response as a detector of k against the
segments of all other languages; the top ``n/2`` units by AP (strong responders) and the
bottom ``n/2`` (units that respond *least* to k) form k's set. The intervention forces each
unit to its median response on k's segments (``median_response``), at every position.

Differences from the paper: units are the MLP neurons of langloc's neuron site (the paper
also counts attention outputs), and segments are fixed-length token spans, not sentences.
AP ties are broken by segment order (a stable sort).
"""

from __future__ import annotations

import torch

from langloc.errors import LanglocError
from langloc.identify.neuron_set import NeuronSet


def average_precision(scores: torch.Tensor, positive: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """AP of each column of ``scores [S, U]`` for ranking the rows with ``positive [S]`` first.

    AP = mean over positive rows of (positives ranked at or above it / its rank), ranking by
    descending score.
    """
    positive = positive.bool()
    P = int(positive.sum())
    if P == 0 or P == len(positive):
        raise LanglocError("average precision needs both positive and negative segments")
    out = []
    ranks = torch.arange(1, scores.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
    for u in range(0, scores.shape[1], chunk):
        s = scores[:, u:u + chunk]
        order = torch.sort(s, dim=0, descending=True, stable=True).indices
        hits = positive[order].double()  # [S, chunk]: 1 where the row at that rank is positive
        precision = hits.cumsum(0) / ranks
        out.append((precision * hits).sum(0) / P)
    return torch.cat(out)


def expert_units(responses: dict[str, torch.Tensor], *, n: int = 2000, meta: dict | None = None
                 ) -> tuple[NeuronSet, dict[str, torch.Tensor]]:
    """Expert units per language from ``responses[lang] = [S, L, I]``.

    Returns the NeuronSet and, per language, the median response ``[L, I]`` of every unit
    on that language's segments (the values the intervention forces).
    """
    langs = list(responses)
    if len(langs) < 2:
        raise LanglocError("expert units compare languages: give at least two")
    shapes = {tuple(r.shape[1:]) for r in responses.values()}
    if len(shapes) != 1:
        raise LanglocError(f"responses have different shapes {sorted(shapes)}")
    L, I = shapes.pop()
    if not 2 <= n <= L * I or n % 2:
        raise LanglocError(f"n must be an even number in [2, {L * I}], got {n}")
    flat = torch.cat([responses[lang].reshape(len(responses[lang]), -1) for lang in langs])
    labels = torch.cat([torch.full((len(responses[lang]),), k) for k, lang in enumerate(langs)])
    neurons, medians, ap_stats = {}, {}, {}
    for k, lang in enumerate(langs):
        ap = average_precision(flat, labels == k)
        order = torch.sort(ap, descending=True, stable=True).indices
        chosen = torch.cat([order[: n // 2], order[-(n // 2):]])
        li, ji = chosen // I, chosen % I
        neurons[lang] = [ji[li == layer].sort().values for layer in range(L)]
        medians[lang] = responses[lang].median(0).values
        ap_stats[lang] = {"top_min_ap": float(ap[order[n // 2 - 1]]), "bottom_max_ap": float(ap[order[-(n // 2)]])}
    params = {"n": n, "segments": {lang: len(responses[lang]) for lang in langs}, "ap": ap_stats}
    return NeuronSet(neurons, L, I, method="expert_units", params=params, meta=dict(meta or {})), medians
