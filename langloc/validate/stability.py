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

Two sets that are both empty have no Jaccard index (n/a, NaN), not 1: agreeing on finding
nothing says nothing about stability. An empty full set has no stable core share either.

The settings (:func:`identification_settings`): for the method the validated set was made
with, the ones recorded in the set, and the check refuses to run unless they find exactly that
set again on the run's statistics, so that it measures the set it was given and not another;
for any other method, the ones given, else identify's defaults.

Resample ``r`` draws its shards from ``derive_seed(seed, "shard-bootstrap", r)``.
"""

from __future__ import annotations

import math
from itertools import combinations

import torch

from langloc import distributed
from langloc.controls import derive_seed
from langloc.errors import LanglocError
from langloc.identify.methods import METHODS, defaults
from langloc.identify.neuron_set import NeuronSet
from langloc.stats import ActivationStats

STABLE_CORE_MIN = 0.8  # a neuron is in the stable core if found in at least this share of resamples
# Methods that work on the counters alone (expert units need segment responses per shard).
COUNTER_METHODS = tuple(name for name, m in METHODS.items() if m.counters)


def check_methods(methods) -> list[str]:
    bad = [m for m in methods if m not in COUNTER_METHODS]
    if bad:
        hint = " (expert units need segment responses, which shards do not keep)" if "expert_units" in bad else ""
        raise LanglocError(f"stability runs on {', '.join(COUNTER_METHODS)}, not {', '.join(bad)}{hint}")
    return list(methods)


def find(method: str, stats: ActivationStats, settings: dict) -> NeuronSet:
    return METHODS[method].find(stats, None, **settings)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _sizes(ns: NeuronSet, langs) -> str:
    return "/".join(str(ns.count(lang)) for lang in langs)


def _own_settings(method: str, neuron_set: NeuronSet, given: dict, what: str) -> tuple[dict, dict]:
    """The settings of the set's own method (recorded, else given, else identify's default) and
    where each came from; a given setting that contradicts the recorded one is refused."""
    settings, source = {}, {}
    for n in METHODS[method].settings:
        if n in neuron_set.params:
            if given.get(n) is not None and not _same(given[n], neuron_set.params[n]):
                raise LanglocError(f"{what} was made with {method} {n}={neuron_set.params[n]}; "
                                   f"--{n.replace('_', '-')} {given[n]} would measure the stability of another "
                                   "set: leave the option out (validate uses the set's settings)")
            settings[n], source[n] = neuron_set.params[n], "recorded in the set"
        elif given.get(n) is not None:
            settings[n], source[n] = given[n], "given"
        else:
            settings[n], source[n] = defaults()[n], "identify's default"
    return settings, source


def identification_settings(methods, neuron_set: NeuronSet, given: dict, run_stats: ActivationStats,
                            what: str = "the set") -> dict[str, dict]:
    """Per method, the settings its stability is measured with (see the module docstring).

    ``given``: the settings passed explicitly (None: not given). For the set's own method a
    given setting must equal the recorded one; settings the set does not record (imported or
    hand-made sets) come from ``given``, else identify's defaults, and are kept only if they
    find the set again on ``run_stats``; otherwise one LanglocError says why."""
    out = {}
    for method in methods:
        names = METHODS[method].settings
        if method != neuron_set.method:
            out[method] = {n: given[n] if given.get(n) is not None else defaults()[n] for n in names}
            continue
        settings, source = _own_settings(method, neuron_set, given, what)
        found = find(method, run_stats, settings)
        langs = [lang for lang in neuron_set.languages if lang in run_stats.languages]  # the study refuses the rest
        if any(not torch.equal(found.mask(lang), neuron_set.mask(lang)) for lang in langs):
            used = ", ".join(f"{n}={settings[n]} ({source[n]})" for n in names)
            opts = ", ".join(f"--{n.replace('_', '-')}" for n in names)
            raise LanglocError(
                f"{method} with {used} finds sets of {_sizes(found, langs)} neurons ({'/'.join(langs)}) on the run's "
                f"statistics, not {what}'s {_sizes(neuron_set, langs)}: it was made from other statistics, by hand or "
                f"with other settings, so its stability cannot be measured here; pass the settings it was made with "
                f"({opts}) or leave {method} out of --methods")
        out[method] = settings
    return out


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard index of two [L, I] masks; NaN (n/a) when both are empty."""
    union = int((a | b).sum())
    return math.nan if union == 0 else int((a & b).sum()) / union


def _mean(values: list[float]) -> float:
    """Mean of the defined values (NaN if none is)."""
    defined = [v for v in values if v == v]
    return sum(defined) / len(defined) if defined else math.nan


def label(settings: dict) -> str:
    """``top_rate=0.01 filter_rate=0.95 ...``: the settings as one cell."""
    return " ".join(f"{k}={v}" for k, v in settings.items())


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
    # Under torchrun resample r runs on rank r % W; the hits are counts (integers), summed exactly.
    rank, world = distributed.rank_and_world()
    for r in range(rank, resamples, world):
        g = torch.Generator().manual_seed(derive_seed(seed, "shard-bootstrap", r))
        pick = torch.randint(K, (K,), generator=g).tolist()
        ns = find(method, resample_stats(shards, pick), settings)
        for lang in langs:
            hits[lang] += ns.mask(lang).double()
        if progress is not None:
            progress()
    hits = distributed.all_reduce_sum(hits)
    rows, core = [], {}
    for lang in langs:
        masks = [s.mask(lang) for s in shard_sets]
        pairs = [jaccard(a, b) for a, b in combinations(masks, 2)]
        full_mask = full_set.mask(lang)
        in_core = full_mask & (hits[lang] >= core_min * resamples - 1e-9)
        size = int(full_mask.sum())
        core[lang] = [torch.nonzero(in_core[layer]).flatten() for layer in range(full.num_layers)]
        rows.append({"method": method, "language": lang, "settings": label(settings), "set_size": size,
                     "shard_sizes": "/".join(str(int(m.sum())) for m in masks),
                     "shard_jaccard": _mean(pairs), "shard_jaccard_min": min((v for v in pairs if v == v),
                                                                              default=math.nan),
                     "shard_vs_full_jaccard": _mean([jaccard(m, full_mask) for m in masks]),
                     "stable_core": int(in_core.sum()) / size if size else float("nan"),
                     "core_size": int(in_core.sum())})
    core_set = NeuronSet(core, full.num_layers, full.intermediate_size, method=f"{method}-stable-core",
                         params={"method": method, "settings": settings, "resamples": resamples,
                                 "core_min": core_min, "shards": K}, meta={"model": full.meta.get("model", {})})
    return rows, core_set
