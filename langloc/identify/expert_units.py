"""Expert units (Kojima et al., NAACL 2024), docs/methods.md §3.

Each text segment is labelled "in language k" or not; a unit's response to a segment is its
mean activation over the segment (see :mod:`langloc.stats.responses`). For language k every
unit is scored by the average precision (AP) of its response as a detector of k against the
segments of all other languages; the top ``n/2`` units by AP (strong responders) and the
bottom ``n/2`` (units that respond *least* to k) form k's set. The intervention forces each
unit to its median response on k's segments (``median_response``), at every position.

AP treats tied responses as one threshold, as sklearn's ``average_precision_score`` (the
reference code's) does, so a unit's AP, and hence every set, does not depend on the order of
the segments or languages. The median is ``np.percentile(x, 50)``'s: the mean of the two
middle values for an even count (``torch.median`` would take the lower one).

Differences from the paper's code (docs/methods.md §3): units are the MLP neurons of langloc's
neuron site, not the outputs of every linear layer (q, k, v, o, gate, up, down), and segments
are fixed-length token spans, not sentences.
"""

from __future__ import annotations

import torch

from langloc.errors import LanglocError
from langloc.identify.neuron_set import NeuronSet


def average_precision(scores: torch.Tensor, positive: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """AP of each column of ``scores [S, U]`` for detecting the rows with ``positive [S]``.

    As sklearn's ``average_precision_score``: AP = sum over distinct thresholds t (the score
    values, descending) of ``(R(t) - R(t_prev)) * P(t)``, with precision ``P`` and recall ``R``
    of "score >= t". Rows with equal scores form one threshold, so the result does not depend
    on the order of the rows (a constant column has AP = share of positives).
    """
    positive = positive.bool()
    P = int(positive.sum())
    if P == 0 or P == len(positive):
        raise LanglocError("average precision needs both positive and negative segments")
    S = scores.shape[0]
    out = []
    ranks = torch.arange(1, S + 1, dtype=torch.float64).unsqueeze(1)
    for u in range(0, scores.shape[1], chunk):
        values, order = torch.sort(scores[:, u:u + chunk], dim=0, descending=True)
        tp = positive[order].double().cumsum(0)  # [S, chunk] positives ranked at or above each row
        # The last row of each group of equal scores closes a threshold.
        last = torch.ones_like(values, dtype=torch.bool)
        last[:-1] = values[:-1] != values[1:]
        closed = torch.where(last, tp, torch.zeros_like(tp)).cummax(0).values
        before = torch.cat([torch.zeros_like(tp[:1]), closed[:-1]])  # tp at the previous threshold
        # One term per threshold, at a rank fixed by the scores alone: the sum is order-free.
        terms = torch.where(last, (tp - before) * tp / ranks, torch.zeros_like(tp))
        out.append(terms.sum(0) / P)
    return torch.cat(out)


def percentile_median(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``np.percentile(x, 50, axis=dim)``: the middle value, or the mean of the two middle
    values for an even count (float32 result, computed in float64)."""
    n = x.shape[dim]
    if n == 0:
        raise LanglocError("the median of no values is undefined")
    hi = x.kthvalue(n // 2 + 1, dim=dim).values.double()
    if n % 2:
        return hi.float()
    lo = x.kthvalue(n // 2, dim=dim).values.double()
    return (lo + (hi - lo) * 0.5).float()


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
        medians[lang] = percentile_median(responses[lang])
        ap_stats[lang] = {"top_min_ap": float(ap[order[n // 2 - 1]]), "bottom_max_ap": float(ap[order[-(n // 2)]])}
    params = {"n": n, "segments": {lang: len(responses[lang]) for lang in langs}, "ap": ap_stats}
    return NeuronSet(neurons, L, I, method="expert_units", params=params, meta=dict(meta or {})), medians
