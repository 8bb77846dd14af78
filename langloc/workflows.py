"""The steps that make a run folder's artefacts (collect, identify, export, import), as library
functions. The experiments on them are studies (:mod:`langloc.studies`), which take these
folders as input; this module imports none of them.

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

from langloc.errors import LanglocError
from langloc.identify import NeuronSet, export_lape, import_lape
from langloc.identify.expert_units import percentile_median
from langloc.identify.methods import METHODS
from langloc.plotting import plot_neurons_per_layer, plot_overlap
from langloc.stats.responses import load_responses, responses_file, save_responses, segment_responses
from langloc.stats import ActivationStats, save_run


def default_neurons(run: Path, method: str = "lape") -> Path:
    return Path(run) / "neurons" / f"{method}.json"


def identify_run(run: str | Path, *, method: str = "lape", top_rate=0.01, filter_rate=0.95,
                 activation_bar_ratio=0.95, rate: float = 0.00125, other_max: float | None = None,
                 n_units: int = 2000, out: str | Path | None = None, plots: bool = True) -> tuple[NeuronSet, Path]:
    """Identify language neurons in a run folder with ``method`` (a key of METHODS)."""
    started = time.time()
    run = Path(run)
    if method not in METHODS:
        raise LanglocError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    stats = ActivationStats.load(run)
    ns = METHODS[method].find(stats, run, top_rate=top_rate, filter_rate=filter_rate,
                              activation_bar_ratio=activation_bar_ratio, rate=rate, other_max=other_max,
                              n_units=n_units)
    path = ns.save(out or default_neurons(run, method), started=started)
    if plots:
        name = stats.meta.get("model", {}).get("name", "")
        suffix = "" if method == "lape" else f"_{method}"
        plot_neurons_per_layer(ns, run / "plots" / f"neurons_per_layer{suffix}.png", name)
        plot_overlap(ns, run / "plots" / f"overlap{suffix}.png")
    return ns, path


def collect_run(out: str | Path, languages: list[str], *, model: str, corpus: str = "bible", tokens: int = 100_000,
                window: int = 512, batch_size: int = 4, seed: int = 0, dtype: str = "auto", device: str | None = None,
                neuron_site: str | None = None, resume: bool = False, checkpoint_every: int = 50, segments: int = 0,
                segment_tokens: int = 32, lid_filter: dict | None = None, residual_sample: int = 0):
    """``langloc collect``: load the corpus (checked first) and the model, count activations
    into ``out`` (data-parallel under torchrun) and, with ``segments``, the segment responses
    expert units need (first process only). ``lid_filter``: keep only the documents language
    identification assigns to their language (:class:`langloc.data.lid_filter.LidFilter`'s
    settings, e.g. ``{"threshold": 0.5}``). ``residual_sample``: keep a seeded sample of that many
    tokens' residual states per language and layer (:mod:`langloc.stats.residual_sample`).
    Returns ``(stats, corpus)``."""
    from langloc import distributed
    from langloc.data import load_corpus
    from langloc.models import load_model
    from langloc.stats import collect

    c = load_corpus(corpus, seed=seed, lid_filter=lid_filter)
    c.require_text(languages, "stats")
    lm = load_model(model, dtype=dtype, device=device or distributed.local_device(), neuron_site=neuron_site)
    stats = collect(lm, c, languages, out=out, tokens=tokens, window=window, batch_size=batch_size, seed=seed,
                    resume=resume, checkpoint_every=checkpoint_every, residual_sample=residual_sample)
    if segments and distributed.is_main():
        collect_responses_run(lm, c, languages, out, segments=segments, segment_tokens=segment_tokens)
    return stats, c


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
