"""validate: are a run's language neurons real? Stability over shards of the statistics,
selectivity with intervals, two controls, a second domain, and the exclusive/shared split.

Writes into ``OUT`` (default ``RUN/validate``): ``validation.csv`` (one row per language,
every figure with its 95% interval, the verdict), ``verdicts.txt``, ``stability.csv``,
``conditions.csv`` / ``controls.csv`` / ``domain.csv`` (every perplexity ratio, in
``ablation.csv``'s columns), ``stable_core_<method>.json`` (neuron sets), ``plots/validation.png``,
``plots/stability.png``, with ``--budget-curve`` ``budget_curve.csv`` / ``.txt`` and
``plots/budget_curve.png``, ``shards/shard<j>/`` (the shards' statistics, run folders) and
``validation.manifest.json``. docs/validate.md says what each check means.

Under torchrun the processes share out the shards' batches (counters summed, as ``collect``'s),
the bootstrap resamples (hits summed) and every perplexity table's evaluations (the set, its
parts, each control draw, the second domain, the budget curve's prefix sets); the first
process writes the files, the same as one process's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.errors import LanglocError
from langloc.studies.base import Manifest, StudyConfig, check_choices, load_model_of, run_corpus

KIND = kinds.VALIDATION


@dataclass
class Config(StudyConfig):
    """run: run folder made by collect and identify; neurons: the set to validate (default
    RUN/neurons/lape.json); domain: a second corpus (folder of <lang>.txt / <lang>.eval.txt) or
    gsm-symbolic; methods: identification methods whose stability is measured (lape,
    thresholding); shards: K disjoint shards of the run's statistics windows; stats_batch_size:
    windows per batch when counting shards (collect's, so that the shards add up to the run
    exactly); resamples: bootstrap resamples of shards; core_min: share of resamples a neuron
    must be found in to be in the stable core; eval_tokens: held-out tokens per language (also
    on the second domain); window: tokens per evaluation window; batch_size: evaluation
    windows per forward pass; control_draws: independent draws of each control; bins:
    activation-probability bins of the matched control; identify: identification settings of the
    stability check, by name (``{"top_rate": 0.02, "other_max": 0.5}``: the settings of the
    methods in :data:`langloc.identify.methods.METHODS` that work on the counters; one not given:
    for the set's own method the setting recorded in the set, which must find the set again on
    the run's statistics, for another method identify's default; a value given for the set's
    method must equal the recorded one); budget_curve: also find
    the set on the first k of the K shards, k = 1..K, and compare it with the full set
    (budget_curve.csv, docs/validate.md); curve_target: the share of the full set the curve's
    sentence per language asks for; seed: controls and shard resamples; model, dtype, device: the model (default: the run's model and dtype);
    progress: bars."""

    run: Path
    neurons: Optional[Path] = None
    domain: Optional[str] = None
    methods: tuple[str, ...] = ("lape", "thresholding")
    shards: int = 4
    stats_batch_size: int = 4
    resamples: int = 200
    core_min: float = 0.8
    eval_tokens: int = 384
    window: int = 32
    batch_size: int = 10
    control_draws: int = 3
    bins: int = 10
    identify: dict = field(default_factory=dict)
    budget_curve: bool = False
    curve_target: float = 0.9
    seed: int = 0
    model: Optional[str] = None
    dtype: Optional[str] = None
    device: Optional[str] = None
    progress: bool = True


def _check(c: Config) -> None:
    from langloc.controls import check_draws
    from langloc.validate.budget import check_target
    from langloc.identify.methods import METHODS
    from langloc.validate.stability import COUNTER_METHODS, check_methods

    check_draws(c.control_draws)
    check_methods(c.methods)
    if not c.methods:
        check_choices("method", c.methods, COUNTER_METHODS)
    for name in ("shards", "resamples", "eval_tokens", "batch_size", "stats_batch_size", "bins"):
        if int(getattr(c, name)) < 1:
            raise LanglocError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(c, name)}")
    if c.window < 2 or c.eval_tokens < c.window:
        raise LanglocError(f"--eval-tokens ({c.eval_tokens}) must hold at least one --window ({c.window}, >= 2)")
    if not 0 < c.core_min <= 1:
        raise LanglocError(f"--core-min must be in (0, 1], got {c.core_min}")
    check_target(c.curve_target)
    known = {n for m in METHODS.values() if m.counters for n in m.settings}
    unknown = sorted(set(c.identify) - known)
    if unknown:
        raise LanglocError(f"unknown identification setting(s) {', '.join(unknown)} for the stability check; "
                           f"choose from {', '.join(sorted(known))}")


def run(lm, config: Config, out: str | Path) -> Manifest:
    """The manifest written to validation.manifest.json; ``result``: the rows of validation.csv."""
    from langloc import distributed
    from langloc.data import load_corpus
    from langloc.identify import NeuronSet
    from langloc.manifest import make_manifest, write_manifest
    from langloc.stats import ActivationStats
    from langloc.validate.budget import budget_curve
    from langloc.validate.domain import resolve_domain
    from langloc.validate.stability import identification_settings
    from langloc.validate.validation import compute_validation
    from langloc.workflows import default_neurons

    c, out = config, Path(out)
    _check(c)
    started = time.time()
    stats = ActivationStats.load(c.run)
    neurons = c.neurons or default_neurons(c.run)
    ns = NeuronSet.load(neurons)
    settings = identification_settings(c.methods, ns, c.identify, stats, what=str(neurons))
    if c.budget_curve and ns.method not in settings:
        raise LanglocError(f"--budget-curve finds the set again with its own method ({ns.method}): add it to "
                           f"--methods (given: {','.join(c.methods)})")
    corpus = run_corpus(stats.meta, seed=stats.meta.get("seed", 0))  # through the run's language-ID filter, if any
    corpus.require_text(ns.languages, "eval")
    if distributed.is_main():  # gsm-symbolic is written under OUT by the first process, then read by all
        domain_spec = resolve_domain(c.domain, ns.languages, out)
    distributed.barrier()
    if not distributed.is_main():
        domain_spec = resolve_domain(c.domain, ns.languages, out)
    domain = load_corpus(domain_spec) if domain_spec else None
    if domain is not None:
        domain.require_text(ns.languages, "eval")
    dtype = c.dtype or stats.meta["model"].get("dtype", "auto")
    lm = lm or load_model_of(stats.meta, c.model, dtype, c.device or distributed.local_device(), str(c.run))
    ns.check_model(lm)
    result = compute_validation(lm, stats, ns, corpus, domain, c, settings, out)
    if c.budget_curve:
        t = time.time()
        result["budget_curve"] = budget_curve(lm, result, ns, settings[ns.method], stats.meta["tokens"], out,
                                              target=c.curve_target, batch_size=c.batch_size, progress=c.progress)
        result["wall"]["budget_curve"] = time.time() - t
    if not distributed.is_main():
        return Manifest(result=result["rows"])
    paths = _write_outputs(result, out)
    manifest = make_manifest(
        KIND, model=lm.meta, corpus={"stats": stats.meta.get("corpus"), "eval": corpus.describe(),
                                     "domain": domain.describe() if domain else None},
        split={"shards": "stats", "ratios": "eval", "domain": "eval"}, started=started,
        config={**c.to_dict(), "neurons": str(neurons), "method": ns.method, "stability_settings": settings},
        seeds={"controls": c.seed, "shard_resamples": c.seed})
    if c.budget_curve:  # the sentence per language, for the console and the report
        manifest["budget_curve"] = result["budget_curve"]["sentences"]
    write_manifest(paths[0], manifest, paths, shard_check=result["shard_check"],
                   wall_seconds_by_step={k: round(v, 1) for k, v in result["wall"].items()},
                   compute_seconds_of_kept_steps=result["steps"])
    return Manifest(manifest, result=result["rows"], path=paths[0])


def _write_outputs(result: dict, out: Path) -> list[Path]:
    """validation.csv, verdicts.txt, stability.csv, conditions.csv, controls.csv, domain.csv,
    stable-core neuron sets, the plots, and budget_curve.csv / .txt where the result has a
    budget curve; returns their paths."""
    from langloc.artefacts import write_csv, write_text
    from langloc.evaluate.ablation import write_ablation_csv
    from langloc.validate.plots import plot_budget_curve, plot_stability, plot_validation

    rows = result["rows"]
    paths = [out / "validation.csv", out / "verdicts.txt", out / "stability.csv", out / "conditions.csv",
             out / "controls.csv"]
    write_csv(paths[0], [{k: _cell(v) for k, v in r.items()} for r in rows], list(rows[0]))
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
        paths += [out / "budget_curve.csv", out / "budget_curve.txt"]
        write_csv(paths[-2], [{k: _cell(v) for k, v in r.items()} for r in curve["rows"]], list(curve["rows"][0]))
        write_text(paths[-1], "\n".join(curve["sentences"]) + "\n")
        paths.append(plot_budget_curve(curve["rows"], out / "plots" / "budget_curve.png"))
    return paths


def _cell(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v
