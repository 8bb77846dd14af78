"""The region folder and the step that builds its regions (``langloc regions``).

A *region folder* is what ``langloc importance`` writes: ``importance.json`` (model, corpus,
budget) and ``importance/<lang>.safetensors``. Later steps add to it:

- ``regions``: ``regions.safetensors`` (the masks), ``dimensions.csv`` (the Top region's
  entries per hidden dimension next to the residual stream's largest activation on it),
  ``regions.json`` (sizes and the densest dimensions) and ``plots/regions.png``;
- ``region-ablate`` (:mod:`langloc.studies.region_ablate`): ``region_ablation.csv`` and
  ``plots/region_ablation.png``;
- ``perturb`` (:mod:`langloc.studies.perturb`): ``perturb.csv``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import torch

from langloc import kinds
from langloc.artefacts import read_json, write_csv, write_json
from langloc.data.packing import corpus_windows
from langloc.manifest import make_manifest, read_manifest, stamp
from langloc.plotting import plot_region_location
from langloc.regions.dimensions import dimension_counts, massive_activations
from langloc.regions.importance import INFO_FILE
from langloc.regions.params import layer_of
from langloc.regions.regions import build_regions, default_regions_file


def folder_info(folder: str | Path) -> dict:
    path = Path(folder) / INFO_FILE
    info = read_json(path, "importance folder description (run `langloc importance` first)")
    return read_manifest(info, kinds.IMPORTANCE, where=path)


def folder_corpus(info: dict, corpus: str | None = None):
    from langloc.studies.base import run_corpus

    return run_corpus(info, corpus, seed=info.get("corpus", {}).get("seed", 0))


def folder_model(folder: str | Path, model: str | None, dtype: str, device: str | None):
    """The model a region folder was made with (``model`` overrides), on this process's device."""
    from langloc import distributed
    from langloc.studies.base import load_model_of

    return load_model_of(folder_info(folder), model, dtype, device or distributed.local_device(), str(folder))


def _matrix_kind(name: str) -> str:
    """``model.layers.3.mlp.down_proj.weight`` -> ``mlp.down_proj``."""
    m = re.search(r"\.\d+\.(.+)\.weight$", name)
    return m.group(1) if m else name


def regions_step(folder: str | Path, lm, *, languages: list[str] | None = None, rate: float = 0.01, seed: int = 0,
                 probe_tokens: int = 1024, top_dims: int = 5, progress: bool = True, rounding: str = "floor") -> dict:
    """Build the regions, locate the Top region on hidden dimensions, write files; returns the summary."""
    started = time.time()
    folder = Path(folder)
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
