"""Activation-probability thresholding (Mondal et al. 2025), docs/methods.md §2.

Per language k, the ``round(rate · L · I)`` neurons with the highest activation probability
``p[k, l, j]`` (ties: lower layer, then lower index). With ``other_max`` set, only neurons
whose probability in every *other* language is at most ``other_max`` are candidates: a
langloc addition, not in the reference code (soumenkm/LangSpecificNeurons takes the plain
per-language top-k). Without it, in models whose gates are open most of the time (Gemma: the
95th percentile of p is 0.90), the top neurons are the ones active in every language, so the
filter is what makes the sets language-specific.

The reference code also ranks by the probability of exceeding the language's own per-neuron
75th / 90th / 95th percentile; langloc does not offer those scores (why: docs/methods.md §2).
"""

from __future__ import annotations

import torch

from langloc.errors import LanglocError, check_range
from langloc.identify.neuron_set import NeuronSet


def threshold_neurons(over_zero: torch.Tensor, n: torch.Tensor, languages: list[str], *, rate: float = 0.00125,
                      other_max: float | None = None, meta: dict | None = None) -> NeuronSet:
    check_range("rate", rate, 0.0, 1.0, low_open=True)
    if other_max is not None:
        check_range("other_max", other_max, 0.0, 1.0)
    K, L, I = over_zero.shape
    if len(languages) != K:
        raise LanglocError(f"{len(languages)} language names for {K} languages of counts")
    if (n <= 0).any():
        raise LanglocError("every language needs a positive token count n")
    p = (over_zero.double() / n.double().view(-1, 1, 1)).flatten(1)  # [K, L*I]
    k_top = max(1, round(rate * L * I))
    neurons = {}
    for ki, lang in enumerate(languages):
        score = p[ki].clone()
        if other_max is not None and K > 1:
            others = torch.cat([p[:ki], p[ki + 1:]]).amax(0)
            score[others > other_max] = -torch.inf
        # Stable sort on the negated score: equal probabilities keep (layer, index) order.
        order = torch.sort(-score, stable=True).indices[:k_top]
        order = order[torch.isfinite(score[order]) & (score[order] > 0)]
        li, ji = order // I, order % I
        neurons[lang] = [ji[li == layer].sort().values for layer in range(L)]
    params = {"rate": rate, "other_max": other_max, "per_language": k_top}
    return NeuronSet(neurons, L, I, method="thresholding", params=params, meta=dict(meta or {}))


def threshold_from_stats(stats, **kwargs) -> NeuronSet:
    meta = {"model": stats.meta.get("model", {}), "corpus": stats.meta.get("corpus"),
            "tokens": {lang: int(n) for lang, n in zip(stats.languages, stats.n)}}
    return threshold_neurons(stats.over_zero, stats.n, stats.languages, meta=meta, **kwargs)
