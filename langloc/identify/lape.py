"""LAPE: language activation probability entropy (Tang et al., ACL 2024), docs/methods.md §1.

Given per-language counts ``over_zero[k, l, j]`` and token counts ``n[k]``:

1. ``p = over_zero / n``; 2. ``q = p / sum_k p`` (0 where the sum is 0);
3. ``H = -sum_k q log q`` with 0 log 0 = 0;
4. ``tau = kthvalue(p.flatten(), round(filter_rate * N))`` (N = K·L·I values; the reference
   code's definition of the percentile); neurons whose largest p is not above tau are excluded;
5. keep the ``round(top_rate · L · I)`` eligible neurons with the smallest H (ties: lower
   layer, then lower index first; the reference's ``topk`` leaves ties unspecified);
6. assign a kept neuron to every language with ``p > kthvalue(p.flatten(),
   round(activation_bar_ratio * N))``.

One deliberate difference from the reference code: if fewer than ``round(top_rate·L·I)``
neurons are eligible, the reference's ``topk`` would fill up with excluded (H = inf) neurons;
here excluded neurons are never selected.
"""

from __future__ import annotations

import torch

from langloc.errors import LanglocError, check_range
from langloc.identify.neuron_set import NeuronSet


def _kth(flat: torch.Tensor, rate: float) -> float:
    k = min(max(round(len(flat) * rate), 1), len(flat))
    return flat.kthvalue(k).values.item()


def lape_scores(over_zero: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (p [K, L, I], H [L, I]) in float64."""
    if over_zero.dim() != 3 or n.shape != (over_zero.shape[0],):
        raise LanglocError(f"expected over_zero [K, L, I] and n [K], got {tuple(over_zero.shape)} and {tuple(n.shape)}")
    if (n <= 0).any():
        raise LanglocError("every language needs a positive token count n")
    p = over_zero.double() / n.double().view(-1, 1, 1)
    total = p.sum(0, keepdim=True)
    q = torch.where(total > 0, p / total.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    H = -(torch.where(q > 0, q * q.clamp(min=torch.finfo(torch.float64).tiny).log(), 0.0)).sum(0)
    return p, H


def lape(
    over_zero: torch.Tensor,
    n: torch.Tensor,
    languages: list[str],
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
    meta: dict | None = None,
) -> NeuronSet:
    """Language-specific neurons by LAPE; see the module docstring for the exact recipe."""
    check_range("top_rate", top_rate, 0.0, 1.0, low_open=True)
    check_range("filter_rate", filter_rate, 0.0, 1.0)
    check_range("activation_bar_ratio", activation_bar_ratio, 0.0, 1.0)
    K, L, I = over_zero.shape
    if len(languages) != K:
        raise LanglocError(f"{len(languages)} language names for {K} languages of counts")
    if K < 2:
        raise LanglocError("LAPE compares languages: give at least two")
    p, H = lape_scores(over_zero, n)
    flat_p = p.flatten()
    tau = _kth(flat_p, filter_rate)
    eligible = p.amax(0) > tau
    H = torch.where(eligible, H, torch.inf).flatten()
    k = round(top_rate * L * I)
    order = torch.sort(H, stable=True).indices[:k]
    order = order[torch.isfinite(H[order])]
    bar = _kth(flat_p, activation_bar_ratio)
    layer_idx, neuron_idx = order // I, order % I
    selected = p[:, layer_idx, neuron_idx] > bar  # [K, k]
    neurons = {}
    for ki, lang in enumerate(languages):
        chosen_l, chosen_j = layer_idx[selected[ki]], neuron_idx[selected[ki]]
        neurons[lang] = [chosen_j[chosen_l == layer].sort().values for layer in range(L)]
    params = {"top_rate": top_rate, "filter_rate": filter_rate, "activation_bar_ratio": activation_bar_ratio,
              "filter_threshold": tau, "activation_bar": bar, "selected": int(len(order))}
    return NeuronSet(neurons, L, I, method="lape", params=params, meta=dict(meta or {}))


def lape_from_stats(stats, **kwargs) -> NeuronSet:
    meta = {"model": stats.meta.get("model", {}), "corpus": stats.meta.get("corpus"),
            "tokens": {lang: int(n) for lang, n in zip(stats.languages, stats.n)}}
    return lape(stats.over_zero, stats.n, stats.languages, meta=meta, **kwargs)
