"""``langloc share``: sharing categories, attribution and causal tests for parallel tasks.

For every task and item, one forward and backward pass over the item's prompt in the K
languages captures, at the last prompt token, each neuron's activation, its output
coefficient and the gradient of the gold token's log-probability
(:mod:`langloc.share.capture`); the item's categories come from the K activations
(:mod:`langloc.share.categories`), and the attribution scores of each language's instance
are added to the category that the item gave each neuron (:mod:`langloc.share.attribution`).
Then optionally the causal tests (:mod:`langloc.share.causal`).

:func:`share_study` computes the rows and writes nothing; :mod:`langloc.studies.share` writes,
in ``out``: ``categories.csv`` (task, layer, category, share), ``stability.csv`` (per
neuron: modal category, stability, counts per category), ``attribution.csv`` (mean scores
per task, layer and category, pooled over instances), ``attribution_reference.csv`` (the
Sharing-Matters code's aggregation: per task, language, layer, category and score, the max,
mean, min and sum over the category's neurons in each (item, language), 0 if empty, averaged
over items), ``top_contribution.csv`` (per task, language, layer: the category make-up of the
``top_k`` neurons of largest contribution), ``causal.csv`` (task, condition, language,
accuracy, n_neurons, ...), ``share.json`` (settings, model, items, summary) and ``plots/``.

Under torchrun the batches of items and the causal (condition, language) evaluations are
shared out over the processes and gathered in order, so every process returns one process's rows
(the study's first process writes them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from langloc import distributed
from langloc.errors import LanglocError
from langloc.share.attribution import (AGGREGATES, CategoryAttribution, ReferenceAggregation, TopContribution,
                                      column_norms, gold_directions, neuron_scores)
from langloc.share.capture import capture, check_gold_tokens, check_position
from langloc.share.categories import CATEGORIES, category_shares, check_threshold, classify, stability
from langloc.share.causal import causal_study


@dataclass
class TaskSharing:
    task: str
    codes: torch.Tensor  # [N, L, I] int8
    shares: torch.Tensor  # [L, 4]
    modal: torch.Tensor  # [L, I] int8
    stability: torch.Tensor  # [L, I] float64
    counts: torch.Tensor  # [L, I, 4]
    attribution: CategoryAttribution
    reference: ReferenceAggregation | None = None
    top: TopContribution | None = None
    gold_logp: dict = field(default_factory=dict)  # language -> mean log p(gold first token)


def analyse_task(lm, name: str, items: dict[str, list], *, threshold: float = 0.0, position: str = "last",
                 reduce: str = "any", gold_tokens: str = "joint", top_k: int = 800, batch_size: int = 8,
                 progress: bool = True) -> TaskSharing:
    """Categories, stability and attribution of one task's parallel items."""
    threshold = check_threshold(threshold)
    check_position(position, reduce)
    check_gold_tokens(gold_tokens)
    langs = list(items)
    if len(langs) < 2:
        raise LanglocError(f"sharing categories need at least 2 languages, got {len(langs)}")
    K, N = len(langs), len(items[langs[0]])
    per_batch = max(1, batch_size // K)
    norms = column_norms(lm)
    attribution = CategoryAttribution(lm.num_layers)
    reference = ReferenceAggregation(K, lm.num_layers)
    top = TopContribution(K, lm.num_layers, top_k)
    codes = torch.empty(N, lm.num_layers, lm.intermediate_size, dtype=torch.int8)
    logp = torch.zeros(K, dtype=torch.float64)

    def batch_of(start: int) -> dict:
        """One batch of items (one forward and backward pass): what it adds, per instance."""
        idx = list(range(start, min(N, start + per_batch)))
        batch = [items[lang][i] for i in idx for lang in langs]  # item-major: K rows per item
        cap = capture(lm, [it.prompt for it in batch], [it.gold for it in batch], position=position, reduce=reduce,
                      gold_tokens=gold_tokens)
        contribution, effective = neuron_scores(cap.coef, norms, gold_directions(lm, cap.gold))
        gxa = cap.grad * cap.last
        out = {"idx": idx, "logp": cap.logp.double().view(len(idx), K).sum(0), "codes": [], "instances": []}
        for j in range(len(idx)):
            rows = slice(j * K, (j + 1) * K)
            item_codes = classify(cap.stat[rows], threshold)
            out["codes"].append(item_codes)
            out["instances"] += [(CategoryAttribution.increment(item_codes, contribution[r], effective[r], gxa[r]),
                                  ReferenceAggregation.increment(item_codes, contribution[r], effective[r], gxa[r]),
                                  top.increment(item_codes, contribution[r])) for r in range(j * K, (j + 1) * K)]
        return out

    # Under torchrun the batches are shared out over the processes; their increments are added
    # here in the batches' order, so the sums are one process's to the bit.
    starts = list(range(0, N, per_batch))
    bar = tqdm(total=len(starts[distributed.rank_and_world()[0]::distributed.rank_and_world()[1]]),
               desc=f"share {name}", unit="item", disable=not progress or not distributed.is_main())
    for done in distributed.map_cells(batch_of, starts, lambda j, r: bar.update()):
        logp += done["logp"]
        for j, i in enumerate(done["idx"]):
            codes[i] = done["codes"][j]
            for k in range(K):
                attr, ref, tp = done["instances"][j * K + k]
                attribution.apply(attr)
                reference.apply(k, ref)
                top.apply(k, tp)
    bar.close()
    modal, frac, counts = stability(codes)
    return TaskSharing(name, codes, category_shares(codes), modal, frac, counts, attribution, reference, top,
                       {lang: float(logp[k] / N) for k, lang in enumerate(langs)})


@dataclass
class ShareAnalysis:
    """What :func:`share_study` computes: the rows of each file :mod:`langloc.studies.share`
    writes (categories.csv, stability.csv, attribution.csv, attribution_reference.csv,
    top_contribution.csv, causal.csv), the category shares per task for the plot, the summary
    per task and the seconds each step took."""

    languages: list[str]
    categories: list[dict]
    stability: list[dict]
    attribution: list[dict]
    reference: list[dict]
    top: list[dict]
    causal: list[dict]
    shares: dict  # task -> [layers, 4] category shares
    summary: dict
    seconds: dict


def share_study(lm, tasks: dict, items: dict[str, dict[str, list]], config) -> ShareAnalysis:
    """Run the analysis for ``tasks`` (name -> Task) on ``items`` (name -> language -> items) and
    return its rows; writes nothing (:mod:`langloc.studies.share` writes the files and share.json).

    ``config``: the study's settings, :class:`langloc.studies.share.Config`, checked there (read
    by attribute: ``threshold``, ``position``, ``reduce``, ``gold_tokens``, ``top_k``,
    ``batch_size``, ``progress``, ``causal``, ``boost``, ``boost_controls``, ``seed``)."""
    cfg = config
    cat_rows, stab_rows, attr_rows, causal_rows, summary, timings, shares = [], [], [], [], {}, {}, {}
    ref_rows, top_rows = [], []
    languages = None
    for name, task in tasks.items():
        t0 = time.time()
        res = analyse_task(lm, name, items[name], threshold=cfg.threshold, position=cfg.position, reduce=cfg.reduce,
                           gold_tokens=cfg.gold_tokens, top_k=cfg.top_k, batch_size=cfg.batch_size, progress=cfg.progress)
        languages = list(items[name])
        shares[name] = res.shares.numpy()
        for layer in range(lm.num_layers):
            for c, cat in enumerate(CATEGORIES):
                cat_rows.append({"task": name, "layer": layer, "category": cat, "share": float(res.shares[layer, c])})
        for layer in range(lm.num_layers):
            for i in range(lm.intermediate_size):
                cnt = res.counts[layer, i].tolist()
                stab_rows.append({"task": name, "layer": layer, "neuron": i,
                                  "modal_category": CATEGORIES[int(res.modal[layer, i])],
                                  "stability": float(res.stability[layer, i]), **dict(zip(CATEGORIES, cnt))})
        attr_rows += res.attribution.rows(name)
        ref_rows += res.reference.rows(name, languages)
        top_rows += res.top.rows(name, languages)
        means = res.attribution.means()
        ref_means = res.reference.means()  # [K, L, 4, 4] per field
        top_shares = res.top.shares()  # [K, L, 4]
        summary[name] = {
            "items": len(items[name][languages[0]]),
            "share_overall": {cat: float(res.shares[:, c].mean()) for c, cat in enumerate(CATEGORIES)},
            "share_per_layer": {cat: [round(float(v), 6) for v in res.shares[:, c]] for c, cat in enumerate(CATEGORIES)},
            "modal_count": {cat: int((res.modal == c).sum()) for c, cat in enumerate(CATEGORIES)},
            "mean_stability": float(res.stability.mean()),
            "mean_stability_by_modal": {cat: (float(res.stability[res.modal == c].mean()) if (res.modal == c).any() else None)
                                        for c, cat in enumerate(CATEGORIES)},
            "attribution_mean": {f: {cat: _nanmean_weighted(means[f][:, c], res.attribution.n[:, c])
                                     for c, cat in enumerate(CATEGORIES)} for f in CategoryAttribution.FIELDS},
            # The reference code's aggregation, averaged over languages and layers.
            "attribution_reference": {f: {a: {cat: float(ref_means[f][:, :, c, i].mean()) for c, cat in enumerate(CATEGORIES)}
                                           for i, a in enumerate(AGGREGATES)} for f in ReferenceAggregation.FIELDS},
            "top_contribution_share": {cat: float(top_shares[:, :, c].mean()) for c, cat in enumerate(CATEGORIES)},
            "gold_logp": res.gold_logp,
        }
        timings[f"analyse:{name}"] = round(time.time() - t0, 1)
        if cfg.causal:
            t0 = time.time()
            causal_rows += causal_study(lm, task, items[name], res.modal, boosts=list(cfg.boost),
                                        boost_controls=cfg.boost_controls, seed=cfg.seed, batch_size=cfg.batch_size,
                                        progress=cfg.progress)
            timings[f"causal:{name}"] = round(time.time() - t0, 1)
        del res
    return ShareAnalysis(languages, cat_rows, stab_rows, attr_rows, ref_rows, top_rows, causal_rows, shares, summary,
                         timings)


def _nanmean_weighted(values: torch.Tensor, weights: torch.Tensor) -> float | None:
    """Mean over layers weighted by the number of instances (= the pooled mean); None if none."""
    w = weights.double()
    if float(w.sum()) == 0:
        return None
    v = torch.nan_to_num(values.double(), nan=0.0)
    return float((v * w).sum() / w.sum())
