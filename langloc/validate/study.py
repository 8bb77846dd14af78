"""The validate study: shards -> stability, then one perplexity table for the set and its
parts, one per language for its controls, and one on the second domain.

Every step's result is kept under ``OUT/.parts/`` with the settings that made it, so a killed
run resumes after its last finished step (the shards resume per shard and language).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from langloc.artefacts import compute_key, shared_step, write_csv, write_json
from langloc.controls import random_control
from langloc.data.packing import corpus_windows
from langloc.errors import LanglocError
from langloc.evaluate.ablation import AblationRow, perplexity_table, write_ablation_csv
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


def validate_study(lm, run_stats, neuron_set, corpus, out: str | Path, *, domain=None, methods: tuple[str, ...],
                   identify_settings: dict, shards: int, stats_batch_size: int, resamples: int, core_min: float,
                   eval_tokens: int, window: int, batch_size: int, control_draws: int, bins: int, seed: int,
                   progress: bool = True) -> dict:
    """Everything ``langloc validate`` computes, with the settings of
    :class:`langloc.studies.validate.Config` (where their defaults are stated); ``identify_settings``:
    per method in ``methods``, the settings of the stability check
    (:func:`langloc.validate.stability.identification_settings`).
    Returns ``{"rows", "stability", "tables", "shard_check", "wall", "steps"}`` (the files are written by the study's ``run``); ``wall``: this
    invocation's seconds per stage; ``steps``: each kept step's seconds when it was computed,
    in this invocation or an earlier one."""
    out = Path(out)
    langs = list(neuron_set.languages)
    missing = [lang for lang in langs if lang not in run_stats.languages]
    if missing:
        raise LanglocError(f"the neuron set has language(s) {', '.join(missing)} that the run has no statistics for")
    wall, steps = {}, {}
    t = time.time()
    shard_stats = collect_shards(lm, corpus, run_stats.meta, run_stats.languages, out / "shards", shards=shards,
                                 batch_size=stats_batch_size, progress=progress)
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


def write_outputs(result: dict, out: Path) -> list[Path]:
    """validation.csv, verdicts.txt, stability.csv, conditions.csv, controls.csv, domain.csv,
    stable-core neuron sets, the plots, and budget_curve.csv / .txt where the result has a
    budget curve; returns their paths."""
    from langloc.validate.plots import plot_stability, plot_validation

    rows = result["rows"]
    paths = [out / "validation.csv", out / "verdicts.txt", out / "stability.csv", out / "conditions.csv",
             out / "controls.csv"]
    write_csv(paths[0], [{k: _cell(v) for k, v in r.items()} for r in rows], list(rows[0]))
    (out / "verdicts.txt").parent.mkdir(parents=True, exist_ok=True)
    from langloc.artefacts import write_text

    write_text(paths[1], "\n".join(r["verdict"] for r in rows) + "\n")
    stab = result["stability"]
    write_csv(paths[2], [{k: _cell(v) for k, v in r.items()} for r in stab], list(stab[0]))
    write_ablation_csv(result["tables"]["sets"], paths[3])
    write_ablation_csv(result["tables"]["controls"], paths[4])
    if result["tables"]["domain"]:
        paths.append(write_ablation_csv(result["tables"]["domain"], out / "domain.csv"))
    for method, core in result["cores"].items():
        paths.append(core.save(out / f"stable_core_{method}.json"))
    paths.append(plot_validation(rows, out / "plots" / "validation.png"))
    paths.append(plot_stability(stab, out / "plots" / "stability.png"))
    curve = result.get("budget_curve")
    if curve:
        from langloc.validate.plots import plot_budget_curve

        paths += [out / "budget_curve.csv", out / "budget_curve.txt"]
        write_csv(paths[-2], [{k: _cell(v) for k, v in r.items()} for r in curve["rows"]], list(curve["rows"][0]))
        write_text(paths[-1], "\n".join(curve["sentences"]) + "\n")
        paths.append(plot_budget_curve(curve["rows"], out / "plots" / "budget_curve.png"))
    return paths


def _cell(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v
