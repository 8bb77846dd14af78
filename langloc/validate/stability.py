"""Stability of a neuron set over disjoint shards of the statistics corpus.

For an identification method (one that works on the activation counters: LAPE,
thresholding) and every language:

* ``shard_jaccard``: the mean Jaccard index ``|A ∩ B| / |A ∪ B|`` between the sets found on
  every pair of shards (``shard_jaccard_min``: the smallest pair). A shard holds 1/K of the
  statistics, so this is the agreement of two independent corpora of that size.
* ``stable_core``: the share of the full set's neurons (the set found on all the statistics)
  that are found again in at least ``core_min`` (0.8) of ``resamples`` bootstrap resamples of
  the shards (K shards drawn with replacement, their counters summed; the method run on the
  sum). The neurons that pass are the language's *stable core*.

Resample ``r`` draws its shards from ``derive_seed(seed, "shard-bootstrap", r)``.
"""

from __future__ import annotations

from itertools import combinations

import torch

from langloc.controls import derive_seed
from langloc.errors import LanglocError
from langloc.identify.methods import METHODS
from langloc.identify.neuron_set import NeuronSet
from langloc.stats import ActivationStats

STABLE_CORE_MIN = 0.8  # a neuron is in the stable core if found in at least this share of resamples
# Methods that work on the counters alone (expert units need segment responses per shard).
COUNTER_METHODS = ("lape", "thresholding")


def check_methods(methods) -> list[str]:
    bad = [m for m in methods if m not in COUNTER_METHODS]
    if bad:
        hint = " (expert units need segment responses, which shards do not keep)" if "expert_units" in bad else ""
        raise LanglocError(f"stability runs on {', '.join(COUNTER_METHODS)}, not {', '.join(bad)}{hint}")
    return list(methods)


def find(method: str, stats: ActivationStats, settings: dict) -> NeuronSet:
    return METHODS[method].find(stats, None, **settings)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard index of two [L, I] masks (1 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def resample_stats(shards: list[ActivationStats], pick: list[int]) -> ActivationStats:
    first = shards[0]
    return ActivationStats(list(first.languages), sum(shards[i].n for i in pick),
                           sum(shards[i].over_zero for i in pick), first.active_sum, first.act_sum, first.meta)


def stability(method: str, full: ActivationStats, shards: list[ActivationStats], settings: dict, *,
              resamples: int = 200, core_min: float = STABLE_CORE_MIN, seed: int = 0, progress=None
              ) -> tuple[list[dict], NeuronSet]:
    """Rows per language (see the module) and the stable-core neuron set."""
    if resamples < 1:
        raise LanglocError(f"--resamples must be at least 1, got {resamples}")
    langs = full.languages
    full_set = find(method, full, settings)
    shard_sets = [find(method, s, settings) for s in shards]
    K = len(shards)
    hits = {lang: torch.zeros(full.num_layers, full.intermediate_size) for lang in langs}
    for r in range(resamples):
        g = torch.Generator().manual_seed(derive_seed(seed, "shard-bootstrap", r))
        pick = torch.randint(K, (K,), generator=g).tolist()
        ns = find(method, resample_stats(shards, pick), settings)
        for lang in langs:
            hits[lang] += ns.mask(lang).double()
        if progress is not None:
            progress()
    rows, core = [], {}
    for lang in langs:
        masks = [s.mask(lang) for s in shard_sets]
        pairs = [jaccard(a, b) for a, b in combinations(masks, 2)]
        full_mask = full_set.mask(lang)
        in_core = full_mask & (hits[lang] >= core_min * resamples - 1e-9)
        size = int(full_mask.sum())
        core[lang] = [torch.nonzero(in_core[layer]).flatten() for layer in range(full.num_layers)]
        rows.append({"method": method, "language": lang, "set_size": size,
                     "shard_sizes": "/".join(str(int(m.sum())) for m in masks),
                     "shard_jaccard": sum(pairs) / len(pairs), "shard_jaccard_min": min(pairs),
                     "shard_vs_full_jaccard": sum(jaccard(m, full_mask) for m in masks) / K,
                     "stable_core": int(in_core.sum()) / size if size else float("nan"),
                     "core_size": int(in_core.sum())})
    core_set = NeuronSet(core, full.num_layers, full.intermediate_size, method=f"{method}-stable-core",
                         params={"method": method, "settings": settings, "resamples": resamples,
                                 "core_min": core_min, "shards": K}, meta={"model": full.meta.get("model", {})})
    return rows, core_set
