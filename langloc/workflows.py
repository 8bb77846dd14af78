"""The build steps: the library functions that make the artefacts studies read (``collect``,
``identify``, ``importance``, ``regions``, ``export``, ``import``). The experiments on them are
studies (:mod:`langloc.studies`), which take these folders as input; this module imports none
of them.

Every step with settings has one config dataclass that states their defaults once (the CLI's
options read them from it, tests/test_defaults.py checks that): ``CollectConfig`` (in
:mod:`langloc.stats.activation_stats`, whose ``collect`` takes it),
:class:`IdentifyConfig` (the settings of each identification method are its own class in
:mod:`langloc.identify.methods`), ``ImportanceConfig`` (in :mod:`langloc.regions.importance`,
whose ``compute_importance`` reads its defaults) and :class:`RegionsConfig`.

A run folder collects everything one analysis produces::

    RUN/run.json, RUN/stats/<lang>.safetensors   langloc collect
    RUN/responses/<lang>.safetensors              langloc collect --segments N (expert units)
    RUN/neurons/<method>.json, RUN/plots/*.png    langloc identify [--method]
    RUN/ablation.csv, RUN/plots/ablation.png      langloc ablate (manifest: RUN/ablation.manifest.json)
    OUT/steer.json, summary.csv, ...              langloc steer

and a region folder (:mod:`langloc.regions.folder`) what ``importance`` and ``regions`` make.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from langloc import kinds
from langloc.artefacts import write_csv, write_json
from langloc.data.packing import corpus_windows
from langloc.errors import LanglocError
from langloc.identify import NeuronSet, export_lape, import_lape
from langloc.identify.expert_units import percentile_median
from langloc.identify.methods import METHODS
from langloc.manifest import make_manifest, stamp
from langloc.plotting import plot_neurons_per_layer, plot_overlap, plot_region_location
from langloc.regions.dimensions import dimension_counts, massive_activations
from langloc.regions.folder import folder_corpus, folder_info
from langloc.regions.importance import ImportanceConfig, compute_importance
from langloc.regions.params import layer_of
from langloc.regions.regions import build_regions, default_regions_file
from langloc.stats.responses import load_responses, responses_file, save_responses, segment_responses
from langloc.stats import ActivationStats, save_run
from langloc.stats.activation_stats import CollectConfig


@dataclass
class IdentifyConfig:
    """``langloc identify``'s settings besides the method's own (those are the fields of
    ``METHODS[method].Settings``): method: a key of METHODS; output: the neuron set file
    (default RUN/neurons/<method>.json); plots: plot the set per layer and its overlap."""

    method: str = "lape"
    output: Optional[Path] = None
    plots: bool = True


@dataclass
class RegionsConfig:
    """``langloc regions``'s settings, with their defaults (stated here once): rate: share of
    each weight matrix in the Top / Bottom / Random regions; languages: the languages summed
    (None: all scored); seed: the Random region's; rounding: entries per region, floor =
    int(rate * entries) (the reference code's) or nearest; probe_tokens: held-out tokens per
    language to find the residual stream's largest activations; top_dims: the densest and the
    loudest dimensions reported; model, dtype, device: the model (default: the folder's)."""

    rate: float = 0.01
    languages: Optional[tuple[str, ...]] = None
    seed: int = 0
    rounding: str = "floor"
    probe_tokens: int = 1024
    top_dims: int = 5
    model: Optional[str] = None
    dtype: str = "auto"
    device: Optional[str] = None


def default_neurons(run: Path, method: str = "lape") -> Path:
    return Path(run) / "neurons" / f"{method}.json"


def identify_run(run: str | Path, config: IdentifyConfig | None = None, **settings) -> tuple[NeuronSet, Path]:
    """Identify language neurons in a run folder with ``config.method`` (a key of METHODS);
    ``settings``: the method's settings not at their default (a setting of another method is
    left unused, so a caller may pass every method's)."""
    started = time.time()
    run, config = Path(run), config or IdentifyConfig()
    method = config.method
    if method not in METHODS:
        raise LanglocError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    unknown = sorted(set(settings) - {n for m in METHODS.values() for n in m.settings})
    if unknown:
        raise LanglocError(f"unknown identification setting(s) {', '.join(unknown)}")
    stats = ActivationStats.load(run)
    ns = METHODS[method].find(stats, run, **settings)
    path = ns.save(config.output or default_neurons(run, method), started=started)
    if config.plots:
        name = stats.meta.get("model", {}).get("name", "")
        suffix = "" if method == "lape" else f"_{method}"
        plot_neurons_per_layer(ns, run / "plots" / f"neurons_per_layer{suffix}.png", name)
        plot_overlap(ns, run / "plots" / f"overlap{suffix}.png")
    return ns, path


def _corpus_and_model(c: CollectConfig | ImportanceConfig):
    """The corpus (checked for the languages' statistics text first, so bad input fails before a
    model loads) and the model, as collect and importance both read them."""
    from langloc import distributed
    from langloc.data import load_corpus
    from langloc.models import load_model

    corpus = load_corpus(c.corpus, seed=c.seed, lid_filter=c.lid_filter)
    corpus.require_text(list(c.languages), "stats")
    lm = load_model(c.model, dtype=c.dtype, device=c.device or distributed.local_device(), neuron_site=c.neuron_site)
    return corpus, lm


def collect_run(config: CollectConfig):
    """``langloc collect``: load the corpus (checked first) and the model, count activations
    into ``config.out`` (data-parallel under torchrun) and, with ``segments``, the segment
    responses expert units need (first process only). Returns ``(stats, corpus)``."""
    from langloc import distributed
    from langloc.stats import collect

    c, languages = config, list(config.languages)
    corpus, lm = _corpus_and_model(c)
    stats = collect(lm, corpus, c)
    if c.segments and distributed.is_main():
        collect_responses_run(lm, corpus, languages, c.out, segments=c.segments, segment_tokens=c.segment_tokens)
    return stats, corpus


def importance_run(config: ImportanceConfig):
    """``langloc importance``: load the corpus (checked first) and the model, score every
    decoder-layer weight per language into ``config.out`` (:func:`compute_importance`, data-
    parallel under torchrun). Returns the corpus."""
    c, languages = config, list(config.languages)
    corpus, lm = _corpus_and_model(c)
    compute_importance(lm, corpus, languages, c.out, tokens=c.tokens, window=c.window, batch_size=c.batch_size,
                       precision=c.precision, resume=c.resume, checkpoint_every=c.checkpoint_every)
    return corpus


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


def _matrix_kind(name: str) -> str:
    """``model.layers.3.mlp.down_proj.weight`` -> ``mlp.down_proj``."""
    m = re.search(r"\.\d+\.(.+)\.weight$", name)
    return m.group(1) if m else name


def regions_run(folder: str | Path, lm, config: RegionsConfig) -> dict:
    """``langloc regions``: build the regions, locate the Top region on hidden dimensions, write
    the files (:mod:`langloc.regions.folder`); returns the summary (regions.json)."""
    started = time.time()
    folder, c = Path(folder), config
    languages = list(c.languages) if c.languages else None
    rate, seed, probe_tokens, top_dims, rounding = c.rate, c.seed, c.probe_tokens, c.top_dims, c.rounding
    info = folder_info(folder)
    regions = build_regions(folder, languages=languages, rate=rate, seed=seed, lm=lm, rounding=rounding)
    regions.save(default_regions_file(folder), started=started)
    top = regions["top"]
    counts = dimension_counts(lm, top).numpy()
    # The residual stream's largest activations, on held-out text of every scored language.
    corpus = folder_corpus(info)
    window = info.get("window", 512)
    probe = torch.cat([corpus_windows(lm, corpus, lang, "eval", window=window, max_tokens=max(window, probe_tokens))
                       for lang in regions.meta["languages"]])
    massive, massive_layer = massive_activations(lm, probe)
    massive = massive.numpy()
    expected = counts.sum() / len(counts)
    rows = [{"dimension": d, "top_entries": int(counts[d]), "concentration": float(counts[d] / expected),
             "max_abs_activation": float(massive[d]), "layer_of_max": int(massive_layer[d])}
            for d in range(len(counts))]
    write_csv(folder / "dimensions.csv", sorted(rows, key=lambda r: -r["top_entries"]), rows[0].keys(), float_digits=4)
    dense = [int(d) for d in np.argsort(-counts, kind="stable")[:top_dims]]
    loud = [int(d) for d in np.argsort(-massive, kind="stable")[:top_dims]]
    # Per layer and matrix kind: the share of the region's entries on the densest dimensions.
    layers = layer_of(lm)
    matrix_kinds = list(dict.fromkeys(_matrix_kind(n) for n in top))
    share = np.full((lm.num_layers, len(matrix_kinds)), np.nan)
    for name, idx in top.items():
        single = dimension_counts(lm, {name: idx}).numpy()
        if single.sum():
            share[layers[name], matrix_kinds.index(_matrix_kind(name))] = single[dense].sum() / single.sum()
    plot_region_location(matrix_kinds, share, counts, massive, folder / "plots" / "regions.png", top_dims=top_dims)
    summary = {
        "rate": rate,
        "languages": regions.meta["languages"],
        "sizes": regions.sizes(),
        "densest_dimensions": [{"dimension": d, "top_entries": int(counts[d]),
                                "concentration": round(float(counts[d] / expected), 2),
                                "max_abs_activation": round(float(massive[d]), 1)} for d in dense],
        "massive_activation_dimensions": [{"dimension": d, "max_abs_activation": round(float(massive[d]), 1),
                                           "layer": int(massive_layer[d])} for d in loud],
        "overlap": sorted(set(dense) & set(loud)),
        "median_abs_activation": round(float(np.median(massive)), 2),
    }
    summary = stamp(summary, make_manifest(
        kinds.REGIONS_SUMMARY, model=regions.meta["model"], corpus=info.get("corpus"), split="stats+eval",
        config={"languages": regions.meta["languages"], "rate": rate, "rounding": rounding,
                "probe_tokens": probe_tokens, "top_dims": top_dims}, seeds={"random_region": seed}, started=started))
    write_json(folder / "regions.json", summary)
    return summary
