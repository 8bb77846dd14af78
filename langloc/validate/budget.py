"""The budget curve: how many statistics tokens does a set need? (``validate --budget-curve``)

The K shards of :mod:`langloc.validate.shards` are contiguous stretches of the run's windows,
so the sum of the first k shards' counters is exactly the statistics ``collect`` would have
made with k/K of the budget (the first k/K of the same windows, in the same order), and
prefix sums give the curve without another pass over the corpus. For each prefix k = 1..K and
language the set is identified with the validated set's own settings
(:func:`langloc.validate.stability.identification_settings`) and compared with the full set:

* ``jaccard``: ``|A ∩ F| / |A ∪ F|`` with the full set F (n/a when both are empty);
* ``full_share``: the share of F that the prefix set A contains, ``|A ∩ F| / |F|``;
* ``core_share``: the share of the stable core that A contains;
* ``own_ratio`` [``own_lo``, ``own_hi``]: the own-language perplexity ratio of zeroing A, with
  its 95% paired interval on the study's held-out windows. A prefix set equal to the full set
  takes the full set's row of ``conditions.csv``; every other one costs one evaluation of
  ``--eval-tokens`` on its language (at most (K−1)·languages evaluations in all).

At k = K the prefix is the run's statistics (bit for bit where the shard check says so), so the
curve ends at Jaccard 1 and core share 1. Nothing makes the curve monotone: a larger prefix
can lose a neuron a smaller one had. The summary sentence therefore names the smallest budget
*from which on* every prefix holds at least ``target`` of the full set.
"""

from __future__ import annotations

import math

import torch

from langloc.errors import LanglocError
from langloc.evaluate.ablation import perplexity_table
from langloc.intervene.hooks import deactivate
from langloc.validate.shards import sum_stats
from langloc.validate.stability import find, jaccard, label

TARGET = 0.9  # default share of the full set the summary sentence asks for


def check_target(target: float) -> float:
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise LanglocError(f"--curve-target must be a share in (0, 1], got {target}")
    return float(target)


def prefix_stats(shards: list) -> list:
    """The statistics of the first k shards, k = 1..K (disjoint shards: the counters add up)."""
    return [sum_stats(shards[:k]) for k in range(1, len(shards) + 1)]


def curve_sets(method: str, shards: list, settings: dict, full_set, core, run_tokens: int) -> tuple[list[dict], list]:
    """The rows of the curve without ratios, and the prefix sets (k = 1..K)."""
    K, rows, sets = len(shards), [], []
    for k, stats in enumerate(prefix_stats(shards), start=1):
        found = find(method, stats, settings)
        sets.append(found)
        for lang in full_set.languages:
            a, f, c = found.mask(lang), full_set.mask(lang), core.mask(lang)
            size, core_size = int(f.sum()), int(c.sum())
            rows.append({"method": method, "language": lang, "k": k, "shards": K, "budget_share": k / K,
                         "tokens": round(run_tokens * k / K), "counted_tokens": int(stats.n[stats.index(lang)]),
                         "set_size": int(a.sum()), "full_size": size, "jaccard": jaccard(a, f),
                         "full_share": int((a & f).sum()) / size if size else math.nan,
                         "core_share": int((a & c).sum()) / core_size if core_size else math.nan,
                         "own_ratio": math.nan, "own_lo": math.nan, "own_hi": math.nan, "settings": label(settings)})
    return rows, sets


def add_ratios(lm, rows: list[dict], sets: list, full_set, evals: dict, main_table: list, *, cached,
               batch_size: int, progress: bool) -> None:
    """Fill ``own_ratio`` / ``own_lo`` / ``own_hi`` in ``rows``: the full set's row of the main
    table where a prefix set is the full set, else one evaluation per language of its other
    prefix sets (``cached(name, settings, compute)`` keeps them under OUT/.parts)."""
    main = {(r.deactivated, r.evaluated): r for r in main_table}
    for lang in full_set.languages:
        own = [r for r in rows if r["language"] == lang]
        todo = [r["k"] for r in own if r["set_size"] and not torch.equal(sets[r["k"] - 1].mask(lang),
                                                                           full_set.mask(lang))]
        table = {}
        if todo:
            conditions = [(f"budget{k}:{lang}", lambda ls=sets[k - 1].layers(lang): deactivate(lm, ls)) for k in todo]
            key = {"sets": {k: [t.tolist() for t in sets[k - 1].layers(lang)] for k in todo}}
            table = {r.deactivated: r for r in cached(f"budget-{lang}", key, lambda c=conditions, lang=lang:
                     perplexity_table(lm, {lang: evals[lang]}, c, batch_size=batch_size, progress=progress,
                                      desc=f"validate: budget curve {lang}"))}
        for r in own:
            source = table.get(f"budget{r['k']}:{lang}") or (main.get((lang, lang)) if r["set_size"] else None)
            r["own_ratio"], r["own_lo"], r["own_hi"] = ((source.ratio, source.ratio_lo, source.ratio_hi) if source
                                                        else (math.nan, math.nan, math.nan))


def _tokens(n: int) -> str:
    return f"{n:,}"


def sentence(rows: list[dict], lang: str, target: float = TARGET) -> str:
    """``fr: 90% of the full set (N neurons) from 8,192 tokens on (1/8 of the budget): ...``."""
    own = sorted((r for r in rows if r["language"] == lang), key=lambda r: r["k"])
    full = own[-1]
    if not full["full_size"]:
        return f"{lang}: the full set is empty; no curve"
    reached = [r["full_share"] >= target - 1e-12 for r in own]
    first = next(i for i in range(len(own)) if all(reached[i:]))  # k = K always holds the whole set
    r = own[first]
    where = (f"from {_tokens(r['tokens'])} tokens on ({r['k']}/{r['shards']} of the budget)" if r["k"] < r["shards"]
             else f"only at the full budget ({_tokens(r['tokens'])} tokens)")
    text = (f"{lang}: {target:.0%} of the full set ({full['full_size']} neurons) {where}: "
            f"{r['full_share']:.0%} of it, Jaccard {r['jaccard']:.2f}")
    if r["core_share"] == r["core_share"]:
        text += f", {r['core_share']:.0%} of the stable core"
    if r.get("own_ratio", math.nan) == r.get("own_ratio", math.nan):
        text += f", own ×{r['own_ratio']:.2f}"
        if r["own_lo"] == r["own_lo"]:
            text += f" [{r['own_lo']:.2f}, {r['own_hi']:.2f}]"
        text += f" (full set ×{full['own_ratio']:.2f})"
    first_k = own[0]
    if first > 0:
        text += (f"; at {_tokens(first_k['tokens'])} tokens: {first_k['full_share']:.0%} of it, "
                 f"Jaccard {first_k['jaccard']:.2f}")
    return text


def budget_curve(lm, result: dict, neuron_set, settings: dict, run_tokens: int, out, *, target: float = TARGET,
                 batch_size: int = 10, progress: bool = True) -> dict:
    """The curve of ``neuron_set`` from a finished :func:`langloc.validate.validation.compute_validation`
    ``result`` (its shards, stable core, held-out windows and main table): ``{"rows",
    "sentences"}``; ``settings``: the set's own identification settings."""
    from langloc.validate.validation import _cached

    method = neuron_set.method
    if method not in result["cores"]:
        raise LanglocError(f"--budget-curve finds the set again with its own method ({method}), which is not "
                           "in --methods: add it")
    rows, sets = curve_sets(method, result["shard_stats"], settings, neuron_set, result["cores"][method], run_tokens)

    def cached(name, key, compute):
        return _cached(out, name, {**result["eval_key"], **key}, compute, result["steps"])

    add_ratios(lm, rows, sets, neuron_set, result["evals"], result["tables"]["sets"], cached=cached,
               batch_size=batch_size, progress=progress)
    return {"rows": rows, "sentences": [sentence(rows, lang, target) for lang in neuron_set.languages]}
