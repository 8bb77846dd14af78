"""95% bootstrap intervals over evaluation units (docs/statistics.md).

The units are what a figure is an average over: held-out windows for a perplexity ratio,
prompts for a steering rate, items for a task accuracy. A resample draws ``n`` units with
replacement from the ``n`` units; ``n_resamples`` (1000) resamples give the statistic's
bootstrap distribution, and the interval is its percentile interval: with ``a = (1 -
level) / 2`` and the resampled values sorted, ``v[floor(a (B - 1))]`` and ``v[ceil((1 - a)
(B - 1))]`` (the ``lower`` and ``higher`` quantiles, so each end is a value that occurred).

Resample indices come from ``torch.randint`` on a ``torch.Generator`` seeded with ``seed``:
the same seed gives the same interval in any process. A perplexity ratio is resampled
*paired*: the same windows for the base model and for the condition, so the interval is
that of the ratio, not of two independent perplexities.
"""

from __future__ import annotations

import math

import torch

N_RESAMPLES = 1000
LEVEL = 0.95


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> torch.Tensor:
    """``[n_resamples, n]`` unit indices, drawn with replacement."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(n, (n_resamples, n), generator=g)


def percentile_interval(values: torch.Tensor, level: float = LEVEL) -> tuple[float, float]:
    """(lower, higher) percentile interval of resampled ``values`` (see the module)."""
    v = torch.sort(values.double().flatten()).values
    if not len(v):
        return math.nan, math.nan
    a = (1.0 - level) / 2
    b = len(v) - 1
    return v[math.floor(a * b + 1e-9)].item(), v[math.ceil((1 - a) * b - 1e-9)].item()


def bootstrap_ci(statistic, n: int, *, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL,
                 indices: torch.Tensor | None = None) -> tuple[float, float]:
    """Interval of ``statistic(idx)`` where ``idx`` is ``[n_resamples, n]`` resampled unit
    indices and ``statistic`` returns the ``[n_resamples]`` resampled values. ``indices``
    replaces the drawn indices (e.g. to use the same resamples for several statistics)."""
    if n == 0:
        return math.nan, math.nan
    idx = resample_indices(n, n_resamples, seed) if indices is None else indices
    return percentile_interval(statistic(idx), level)


def ratio_of_sums_ci(num, den=None, **kw) -> tuple[float, float]:
    """Interval of ``sum(num) / sum(den)`` over units (``den`` = 1 per unit: a mean, e.g. a
    success rate over prompts or an accuracy over items)."""
    num = torch.as_tensor(num, dtype=torch.float64)
    den = torch.ones_like(num) if den is None else torch.as_tensor(den, dtype=torch.float64)
    return bootstrap_ci(lambda idx: num[idx].sum(1) / den[idx].sum(1), len(num), **kw)


def mean_ci(values, **kw) -> tuple[float, float]:
    """Interval of the mean of per-unit values (a rate when they are 0/1)."""
    return ratio_of_sums_ci(values, None, **kw)


def perplexity_ratio_ci(nll_base, nll_cond, tokens, **kw) -> tuple[float, float]:
    """Paired interval of ``exp(sum nll_cond / sum tokens) / exp(sum nll_base / sum tokens)``
    over windows. ``nll_cond`` may be ``[draws, windows]``: the statistic is then the mean
    ratio over the draws, each on the same resampled windows."""
    base = torch.as_tensor(nll_base, dtype=torch.float64)
    cond = torch.as_tensor(nll_cond, dtype=torch.float64)
    cond = cond[None] if cond.dim() == 1 else cond
    tok = torch.as_tensor(tokens, dtype=torch.float64)

    def stat(idx):
        t = tok[idx].sum(1)
        b = base[idx].sum(1)
        return torch.stack([torch.exp((c[idx].sum(1) - b) / t) for c in cond]).mean(0)

    return bootstrap_ci(stat, len(base), **kw)


def includes(lo: float, hi: float, value: float = 1.0) -> bool:
    """Whether the interval includes ``value`` (no effect); False when there is no interval."""
    return lo == lo and hi == hi and lo <= value <= hi
