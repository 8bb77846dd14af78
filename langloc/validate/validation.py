"""What ``langloc validate`` computes (:func:`compute_validation`): shards -> stability, then
one perplexity table for the set and its parts, one per language for its controls, and one on
the second domain, and a row with a verdict per language.

It writes no output file: :mod:`langloc.studies.validate` writes them and the manifest. It
keeps only its resumable caches in the folder it is given: every step's result under
``OUT/.parts/`` with the settings that made it, so a killed run resumes after its last
finished step, and the shards' statistics under ``OUT/shards`` (resumed per shard and
language).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from langloc.artefacts import compute_key, shared_step
from langloc.controls import random_control
from langloc.data.packing import corpus_windows
from langloc.errors import LanglocError
from langloc.evaluate.ablation import AblationRow, perplexity_table
from langloc.intervene.hooks import deactivate
from langloc.validate import conditions as cond
from langloc.validate.shards import collect_shards, compare_with_run
from langloc.validate.stability import stability
from langloc.validate.verdicts import ALWAYS_ON, language_row


def _cached(out: Path, name: str, settings: dict, compute, seconds: dict):
    """Rows of a finished step from ``out/.parts/<name>.json`` if made with ``settings``; the
    seconds the step took when computed go into ``seconds``. Every step is a perplexity table,
    whose evaluations are shared out over the processes under torchrun (:func:`shared_step`)."""
    rows = shared_step(out / ".parts", name, settings, lambda: [dataclasses.asdict(r) for r in compute()], seconds)
    return [AblationRow(**r) for r in rows]


def _layers(mask_rows):
    return [torch.as_tensor(r, dtype=torch.long) for r in mask_rows]


def compute_validation(lm, run_stats, neuron_set, corpus, domain, config, identify_settings: dict,
                       out: str | Path) -> dict:
    """Everything ``langloc validate`` computes, with the settings of ``config`` (a
    :class:`langloc.studies.validate.Config`, where their defaults are stated); ``domain``: the
    second corpus or None; ``identify_settings``: per method in ``config.methods``, the settings
    of the stability check (:func:`langloc.validate.stability.identification_settings`); ``out``:
    the folder of the resumable caches. Returns ``{"rows", "stability", "cores", "tables",
    "shard_check", "wall", "steps", ...}``; ``wall``: this invocation's seconds per stage;
    ``steps``: each kept step's seconds when it was computed, in this invocation or an earlier
    one."""
    c, out = config, Path(out)
    methods, resamples, core_min, seed, progress = c.methods, c.resamples, c.core_min, c.seed, c.progress
    eval_tokens, window, batch_size, control_draws, bins = c.eval_tokens, c.window, c.batch_size, c.control_draws, c.bins
    langs = list(neuron_set.languages)
    missing = [lang for lang in langs if lang not in run_stats.languages]
    if missing:
        raise LanglocError(f"the neuron set has language(s) {', '.join(missing)} that the run has no statistics for")
    wall, steps = {}, {}
    t = time.time()
    shard_stats = collect_shards(lm, corpus, run_stats.meta, run_stats.languages, out / "shards", shards=c.shards,
                                 batch_size=c.stats_batch_size, progress=progress)
    shard_check = compare_with_run(shard_stats, run_stats)
    wall["shards"] = time.time() - t
    t = time.time()
    stab_rows, cores = [], {}
    for method in methods:
        rows, core = stability(method, run_stats, shard_stats, identify_settings[method], resamples=resamples,
                               core_min=core_min, seed=seed)
        stab_rows += rows
        cores[method] = core
    wall["stability"] = time.time() - t

    t = time.time()
    evals = {lang: corpus_windows(lm, corpus, lang, "eval", window=window, max_tokens=eval_tokens) for lang in langs}
    parts = {lang: cond.split_set(neuron_set, lang) for lang in langs}
    main_conditions = [(lang, lambda layers=neuron_set.layers(lang): deactivate(lm, layers)) for lang in langs]
    for name, k in (("exclusive", 0), ("shared", 1)):
        for lang in langs:
            layers = parts[lang][k]
            if sum(len(i) for i in layers):
                main_conditions.append((f"{name}:{lang}", lambda layers=layers: deactivate(lm, layers)))
    # A kept table is reused only if everything that changes its numbers is the same: the
    # windows, the set, the model *as computed* (dtype, device class) and the batches.
    common = {"eval_tokens": eval_tokens, "window": window, "seed": seed, "set": neuron_set.to_dict()["neurons"],
              "model": compute_key(lm), "batch_size": batch_size, "corpus": corpus.describe()}
    table = _cached(out, "main", common, lambda: perplexity_table(
        lm, evals, main_conditions, batch_size=batch_size, progress=progress, desc="validate: sets"),
        steps)
    wall["sets"] = time.time() - t

    # Controls are evaluated on their own language only: the verdict compares them with the
    # set's own-language ratio (the same windows).
    t = time.time()
    p = run_stats.activation_probability()
    controls, off_bin = [], {}
    for lang in langs:
        layers = neuron_set.layers(lang)
        if not neuron_set.count(lang):
            continue
        k = run_stats.index(lang)
        matched = [cond.matched_control(layers, p[k], seed, f"matched:{lang}", d, bins) for d in range(control_draws)]
        off_bin[lang] = [m[1] for m in matched]
        ctl = [(f"matched:{lang}", [lambda ls=m[0]: deactivate(lm, ls) for m in matched]),
               (f"random:{lang}", [lambda ls=random_control(layers, neuron_set.intermediate_size, seed,
                                                            f"random:{lang}", d): deactivate(lm, ls)
                                   for d in range(control_draws)])]
        controls += _cached(out, f"controls-{lang}", {**common, "draws": control_draws, "bins": bins},
                            lambda ctl=ctl, lang=lang: perplexity_table(
                                lm, {lang: evals[lang]}, ctl, batch_size=batch_size, progress=progress,
                                desc=f"validate: controls {lang}"), steps)
    wall["controls"] = time.time() - t

    domain_table = None
    if domain is not None:
        t = time.time()
        d_evals = {lang: corpus_windows(lm, domain, lang, "eval", window=window, max_tokens=eval_tokens)
                   for lang in langs}
        d_conditions = [(lang, lambda layers=neuron_set.layers(lang): deactivate(lm, layers)) for lang in langs]
        domain_table = _cached(out, "domain", {**common, "corpus": domain.describe()}, lambda: perplexity_table(
            lm, d_evals, d_conditions, batch_size=batch_size, progress=progress, desc="validate: 2nd domain"), steps)
        wall["domain"] = time.time() - t

    tbl = {(r.deactivated, r.evaluated): r for r in table}
    ctl_tbl = {(r.deactivated, r.evaluated): r for r in controls}
    dom = {(r.deactivated, r.evaluated): r for r in domain_table} if domain_table else None
    primary = neuron_set.method if neuron_set.method in methods else None
    stab = {r["language"]: r for r in stab_rows if r["method"] == primary}
    always = (p >= ALWAYS_ON).all(0)  # [L, I] active on >= 90% of every language's tokens
    rows = []
    for lang in langs:
        excl, shared = parts[lang]
        sizes = {"set_size": neuron_set.count(lang), "exclusive_size": sum(len(i) for i in excl),
                 "shared_size": sum(len(i) for i in shared)}
        row = language_row(lang, langs, tbl, ctl_tbl, dom, stab.get(lang), sizes,
                           int((neuron_set.mask(lang) & always).sum()))
        row["matched_off_bin"] = "/".join(map(str, off_bin.get(lang, [])))
        rows.append(row)
    # The shards, held-out windows and their key stay in the result for the budget curve
    # (langloc.validate.budget), which reuses them rather than counting or reading again.
    return {"rows": rows, "stability": stab_rows, "cores": cores, "tables": {"sets": table, "controls": controls,
            "domain": domain_table}, "shard_check": shard_check, "wall": wall, "steps": steps,
            "shard_stats": shard_stats, "evals": evals, "eval_key": common}
