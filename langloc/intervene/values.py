"""Where an intervention's numbers come from: statistics of the language the neurons serve.

Value sources (``--value``):

* ``mean_active``: mean activation over the tokens where the neuron is active (> 0), from
  the run's counters (the LAPE steering recipe);
* ``mean``: mean activation over all tokens, from the counters;
* ``median`` and ``pNN`` (e.g. ``p90``): token-level quantiles, estimated with streaming
  histograms for just these neurons (:mod:`langloc.stats.quantiles`);
* ``median_response``: the median of the neuron's segment-level mean response (expert
  units; needs ``collect --segments``);
* a number: that constant for every neuron.

``strength`` multiplies the values (for ``scale`` it is the factor itself).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

import torch

from langloc.errors import LanglocError

SOURCES = ("mean_active", "mean", "median", "pNN", "median_response", "<number>")


def parse_source(source: str) -> tuple[str, float | None]:
    """('mean_active'|'mean'|'quantile'|'median_response'|'constant', parameter)."""
    s = str(source).strip()
    if s in ("mean_active", "mean", "median_response"):
        return s, None
    if s == "median":
        return "quantile", 0.5
    m = re.fullmatch(r"p(\d{1,2}(\.\d+)?)", s)
    if m:
        return "quantile", float(m.group(1)) / 100
    try:
        return "constant", float(s)
    except ValueError:
        raise LanglocError(f"unknown value source {source!r}; use one of {', '.join(SOURCES)}") from None


def neuron_values(source: str, layers: Sequence[torch.Tensor], lang: str, *, stats=None,
                  medians: dict[str, torch.Tensor] | None = None,
                  batches: Callable[[], Iterable[torch.Tensor]] | None = None, lm=None) -> list[torch.Tensor]:
    """Per layer, one value per neuron of ``layers`` for language ``lang``.

    ``stats`` (ActivationStats) serves the counter-based sources, ``medians[lang]`` ([L, I])
    ``median_response``, and ``lm`` with ``batches()`` (packed windows of ``lang``) quantiles.
    """
    kind, param = parse_source(source)
    if kind == "constant":
        return [torch.full((len(i),), param, dtype=torch.float32) for i in layers]
    if kind in ("mean_active", "mean"):
        if stats is None:
            raise LanglocError(f"value source {source!r} needs a statistics run (--run)")
        k = stats.index(lang)
        table = stats.mean_active_value()[k] if kind == "mean_active" else stats.mean_activation()[k]
        return [table[layer, idx].float() for layer, idx in enumerate(layers)]
    if kind == "median_response":
        if not medians or lang not in medians:
            raise LanglocError(f"value source median_response needs segment responses for {lang!r} "
                               "(collect --segments)")
        return [medians[lang][layer, idx].float() for layer, idx in enumerate(layers)]
    if lm is None or batches is None:
        raise LanglocError(f"value source {source!r} needs the model and text in {lang!r}")
    from langloc.stats.quantiles import neuron_quantiles

    return neuron_quantiles(lm, batches(), layers, [param])[param]
