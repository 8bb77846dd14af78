"""The steps behind each CLI command, as library functions over run folders.

A run folder collects everything one analysis produces::

    RUN/run.json, RUN/stats/<lang>.safetensors   langloc collect
    RUN/responses/<lang>.safetensors              langloc collect --segments N (expert units)
    RUN/neurons/<method>.json, RUN/plots/*.png    langloc identify [--method]
    RUN/ablation.csv, RUN/plots/ablation.png      langloc ablate (manifest: RUN/ablation.manifest.json)
    OUT/steer.json, summary.csv, ...              langloc steer
"""

from __future__ import annotations

import time
from pathlib import Path

from langloc.data import load_corpus
from langloc.errors import LanglocError
from langloc.evaluate.ablation import ablate, write_ablation_csv
from langloc.models import load_model
from langloc.report import plot_ablation, plot_neurons_per_layer, plot_overlap
from langloc.identify import NeuronSet, export_lape, import_lape, lape_from_stats
from langloc.identify.expert_units import expert_units, percentile_median
from langloc.identify.thresholding import threshold_from_stats
from langloc.manifest import make_manifest, write_manifest
from langloc.stats.responses import load_responses, responses_file, save_responses, segment_responses
from langloc.stats import ActivationStats, read_run, save_run


METHODS = ("lape", "thresholding", "expert_units")


def default_neurons(run: Path, method: str = "lape") -> Path:
    return Path(run) / "neurons" / f"{method}.json"


def identify_run(run: str | Path, *, method: str = "lape", top_rate=0.01, filter_rate=0.95,
                 activation_bar_ratio=0.95, rate: float = 0.00125, other_max: float | None = None,
                 n_units: int = 2000, out: str | Path | None = None, plots: bool = True) -> tuple[NeuronSet, Path]:
    """Identify language neurons in a run folder with ``method`` (see METHODS)."""
    started = time.time()
    run = Path(run)
    if method not in METHODS:
        raise LanglocError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    stats = ActivationStats.load(run)
    if method == "lape":
        ns = lape_from_stats(stats, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio)
    elif method == "thresholding":
        ns = threshold_from_stats(stats, rate=rate, other_max=other_max)
    else:
        responses = {lang: load_responses(run, lang) for lang in stats.languages}
        ns, _ = expert_units(responses, n=n_units, meta={"model": stats.meta.get("model", {}),
                                                          "corpus": stats.meta.get("corpus")})
    path = ns.save(out or default_neurons(run, method), started=started)
    if plots:
        name = stats.meta.get("model", {}).get("name", "")
        suffix = "" if method == "lape" else f"_{method}"
        plot_neurons_per_layer(ns, run / "plots" / f"neurons_per_layer{suffix}.png", name)
        plot_overlap(ns, run / "plots" / f"overlap{suffix}.png")
    return ns, path


def collect_responses_run(lm, corpus, languages: list[str], run: str | Path, *, segments: int = 100,
                          segment_tokens: int = 32, progress: bool = True) -> list[Path]:
    """Segment responses for expert units, per language, skipping languages already there."""
    started = time.time()
    run = Path(run)
    meta = {"model": lm.meta, "corpus": corpus.describe(), "segments": segments, "segment_tokens": segment_tokens}
    paths = []
    for lang in languages:
        path = responses_file(run, lang)
        if not path.is_file():
            save_responses(run, lang, segment_responses(lm, corpus, lang, segments=segments,
                                                        segment_tokens=segment_tokens, progress=progress), meta,
                           started)
        paths.append(path)
    return paths


def median_responses(run: str | Path, languages: list[str]) -> dict:
    """Per language, the median segment response [L, I] of every neuron (where collected)."""
    return {lang: percentile_median(load_responses(run, lang)) for lang in languages
            if responses_file(run, lang).is_file()}


def compare_run(neuron_files: list[Path], out: str | Path, names: list[str] | None = None) -> tuple[list[dict], Path]:
    from langloc.artefacts import write_csv
    from langloc.identify.compare import compare_sets
    from langloc.report import plot_comparison

    started = time.time()
    sets = {}
    for i, f in enumerate(neuron_files):
        ns = NeuronSet.load(f)
        name = names[i] if names else ns.method
        if name in sets:
            name = f"{name}:{Path(f).stem}"
        sets[name] = ns
    rows = compare_sets(sets)
    out = Path(out)
    write_csv(out / "compare.csv", rows, rows[0].keys())
    plot_comparison(rows, out / "compare.png")
    first = next(iter(sets.values()))
    write_manifest(out / "compare.csv", make_manifest(
        "langloc.compare", model=first.meta.get("model"), corpus=first.meta.get("corpus"), started=started,
        config={"neuron_sets": {name: {"file": str(f), "method": ns.method, "params": ns.params}
                                for (name, ns), f in zip(sets.items(), neuron_files)}}),
        [out / "compare.csv", out / "compare.png"])
    return rows, out / "compare.csv"


def load_run_model(run: Path, model: str | None, dtype: str, device: str | None):
    return _load_model_of(read_run(run), model, dtype, device, str(run))


def _load_model_of(meta: dict, model: str | None, dtype: str, device: str | None, what: str):
    """``model`` if given, else the model an artefact's metadata names (with its neuron site)."""
    made_by = meta.get("model", {})
    name = model or made_by.get("name")
    if not name:
        raise LanglocError(f"{what} does not say which model made it; pass --model")
    return load_model(name, dtype=dtype, device=device, neuron_site=made_by.get("neuron_site") if model is None else None)


def _run_corpus_spec(meta: dict, corpus: str | None = None) -> str:
    """The corpus a run's statistics came from (``corpus`` overrides), as a load_corpus spec."""
    return corpus or meta.get("corpus", {}).get("name", "bible").split("folder:", 1)[-1]


def ablate_run(run: str | Path, *, neurons: str | Path | None = None, model: str | None = None,
               dtype: str = "auto", device: str | None = None, languages: list[str] | None = None,
               eval_tokens: int = 2048, window: int | None = None, batch_size: int = 2,
               controls: bool = True, seed: int = 0, out: str | Path | None = None, lm=None,
               corpus: str | None = None, progress: bool = True, control_draws: int = 3):
    """Under torchrun every process evaluates its share of the conditions; the first writes
    the CSV and the plot (the others return the same rows and ``None``)."""
    from langloc import distributed

    started = time.time()
    run = Path(run)
    meta = read_run(run)
    ns = NeuronSet.load(neurons or default_neurons(run))
    lm = lm or load_run_model(run, model, dtype, device)
    # Evaluate on the held-out split of the corpus the statistics came from, unless told otherwise.
    eval_corpus = load_corpus(_run_corpus_spec(meta, corpus), seed=meta.get("seed", 0))
    rows = ablate(lm, ns, eval_corpus, languages=languages, eval_tokens=eval_tokens,
                  window=window or meta.get("window", 512), batch_size=batch_size, seed=seed,
                  controls=controls, control_draws=control_draws, progress=progress)
    if not distributed.is_main():
        return rows, None
    csv_path = write_ablation_csv(rows, out or run / "ablation.csv")
    plot_ablation(rows, run / "plots" / "ablation.png")
    write_manifest(csv_path, make_manifest(
        "langloc.ablation", model=lm.meta, corpus=eval_corpus.describe(), split="eval", started=started,
        config={"neurons": str(neurons or default_neurons(run)), "method": ns.method, "languages": languages,
                "eval_tokens": eval_tokens, "window": window or meta.get("window", 512), "batch_size": batch_size,
                "controls": controls, "control_draws": control_draws}, seeds={"controls": seed}),
        [csv_path, run / "plots" / "ablation.png"])
    return rows, csv_path


def export_run(run: str | Path, outdir: str | Path, neurons: str | Path | None = None) -> list[Path]:
    run = Path(run)
    stats = ActivationStats.load(run)
    path = Path(neurons) if neurons else default_neurons(run)
    ns = NeuronSet.load(path) if path.is_file() else None
    if ns is not None and ns.languages != stats.languages:
        raise LanglocError(f"neuron set {path} covers {ns.languages}, the run {stats.languages}")
    return export_lape(stats, ns, outdir)


def import_run(indir: str | Path, out: str | Path, *, model_meta: dict | None = None) -> Path:
    import torch

    langs, n, over_zero, ns = import_lape(indir)
    K, L, I = over_zero.shape
    meta = {"model": model_meta or {"name": "unknown", "num_layers": L, "intermediate_size": I},
            "corpus": {"name": f"imported:{indir}"}, "imported": True}
    if model_meta and (model_meta["num_layers"], model_meta["intermediate_size"]) != (L, I):
        raise LanglocError(f"the files hold [L, I] = [{L}, {I}], the model {model_meta['name']} has "
                           f"[{model_meta['num_layers']}, {model_meta['intermediate_size']}]")
    zeros = torch.zeros(K, L, I, dtype=torch.float64)
    save_run(out, ActivationStats(langs, n, over_zero, zeros, zeros.clone(), meta))
    if ns is not None:
        ns.meta = {"model": meta["model"]}
        ns.save(default_neurons(Path(out)))
    return Path(out)


def steer_run(neurons: list[Path], targets: list[str], *, source: str | None = "en", run: str | Path | None = None,
              model: str | None = None, dtype: str = "auto", device: str | None = None,
              prompts: str = "builtin:en", tune_prompts: str | None = None, search: bool = True,
              setting=None, strengths=None, gen=None, fluency=None, candidates=None, controls: bool = True,
              seed: int = 0, quantile_tokens: int = 16384, out: str | Path | None = None, lm=None,
              value: str = "auto", positions: str | tuple[str, ...] = "all", progress: bool = True,
              control_draws: int = 3) -> dict:
    """Steer into each of ``targets`` with each neuron set; see :func:`langloc.steer.study.steer_study`.

    ``positions``: the position mode(s) the search tries (one or several of all, prompt, generated).
    """
    from langloc.data.packing import corpus_windows, iter_batches
    from langloc.steer import prompts as P
    from langloc.steer.judge import DEFAULT_CANDIDATES, FluencyRule, LanguageIdentifier
    from langloc.steer.steering import DEFAULT_STRENGTHS, Generation, Steerer, ValueContext, search_grid
    from langloc.steer.study import check_targets, steer_study

    sets = {}
    for f in neurons:
        ns = NeuronSet.load(f)
        name = ns.method if ns.method not in sets else f"{ns.method}:{Path(f).stem}"
        sets[name] = ns
    if not sets:
        raise LanglocError("give at least one neuron set (--neurons)")
    first = next(iter(sets.values()))
    eval_p = P.load_prompts(prompts, "eval")
    tune_p = None
    if search:
        tune_spec = tune_prompts or (prompts if prompts.startswith("builtin:") else None)
        if tune_spec is None:
            raise LanglocError("the strength search needs tuning prompts (--tune-prompts FILE) separate from --prompts")
        tune_p = P.load_prompts(tune_spec, "tune")
        if set(tune_p) & set(eval_p):
            raise LanglocError("tuning and evaluation prompts overlap; the evaluation must be held out")
    check_targets(sets, targets)  # before the model loads
    run_meta = read_run(Path(run)) if run else None
    if lm is None:
        lm = _load_model_of(run_meta or first.meta, model, dtype, device, str(run or neurons[0]))
    stats = ActivationStats.load(run) if run else None
    corpus = None
    if run_meta:
        spec = _run_corpus_spec(run_meta)
        corpus = load_corpus(spec, seed=run_meta.get("seed", 0)) if not spec.startswith("imported:") else None
    window = (run_meta or {}).get("window", 512)

    def batches(lang):  # text for quantile values: the run's statistics split
        return iter_batches(corpus_windows(lm, corpus, lang, "stats", window=window,
                                           max_tokens=quantile_tokens, lazy=True), 4)

    values = ValueContext(stats=stats, medians=median_responses(run, targets) if run else None,
                          batches=batches if corpus is not None else None)
    gen = gen or Generation()
    steerer = Steerer(lm, values, gen, fluency or FluencyRule(), LanguageIdentifier(candidates or DEFAULT_CANDIDATES))
    if search:
        grid = search_grid(value, tuple(strengths or DEFAULT_STRENGTHS), with_source=source is not None,
                           positions=positions)
        return steer_study(steerer, sets, targets, source=source, eval_prompts=eval_p, tune_prompts=tune_p,
                           settings=grid, controls=controls, seed=seed, out=out, progress=progress,
                           control_draws=control_draws)
    return steer_study(steerer, sets, targets, source=source, eval_prompts=eval_p, setting=setting,
                       controls=controls, seed=seed, out=out, progress=progress, control_draws=control_draws)
