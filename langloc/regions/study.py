"""The region experiments as folder-in, files-out steps (what the CLI commands call).

A *region folder* is what ``langloc importance`` writes: ``importance.json`` (model, corpus,
budget) and ``importance/<lang>.safetensors``. Later steps add to it:

- ``regions``: ``regions.safetensors`` (the masks), ``dimensions.csv`` (the Top region's
  entries per hidden dimension next to the residual stream's largest activation on it),
  ``regions.json`` (sizes and the densest dimensions) and ``plots/regions.png``;
- ``region-ablate``: ``region_ablation.csv`` and ``plots/region_ablation.png``;
- ``perturb``: ``perturb.csv``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import torch

from langloc.artefacts import read_json, write_csv, write_json
from langloc.data import load_corpus
from langloc.data.packing import corpus_windows
from langloc.errors import LanglocError
from langloc.manifest import make_manifest, read_manifest, stamp, write_manifest
from langloc.evaluate.ablation import AblationRow, perplexity_table, write_ablation_csv
from langloc.regions.ablation import region_ablation
from langloc.regions.dimensions import dimension_counts, entry_on_dimension, hidden_axis, massive_activations, perturbed
from langloc.regions.importance import INFO_FILE
from langloc.regions.params import layer_of
from langloc.regions.regions import Regions, build_regions, default_regions_file
from langloc.report.plots import plot_ablation, plot_region_location


def folder_info(folder: str | Path) -> dict:
    path = Path(folder) / INFO_FILE
    info = read_json(path, "importance folder description (run `langloc importance` first)")
    return read_manifest(info, "langloc.importance", where=path)


def folder_corpus(info: dict, corpus: str | None = None):
    spec = corpus or info.get("corpus", {}).get("name", "bible").split("folder:", 1)[-1]
    return load_corpus(spec, seed=info.get("corpus", {}).get("seed", 0))


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
    kinds = list(dict.fromkeys(_matrix_kind(n) for n in top))
    share = np.full((lm.num_layers, len(kinds)), np.nan)
    for name, idx in top.items():
        single = dimension_counts(lm, {name: idx}).numpy()
        if single.sum():
            share[layers[name], kinds.index(_matrix_kind(name))] = single[dense].sum() / single.sum()
    plot_region_location(kinds, share, counts, massive, folder / "plots" / "regions.png", top_dims=top_dims)
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
        "langloc.regions_summary", model=regions.meta["model"], corpus=info.get("corpus"), split="stats+eval",
        config={"languages": regions.meta["languages"], "rate": rate, "rounding": rounding,
                "probe_tokens": probe_tokens, "top_dims": top_dims}, seeds={"random_region": seed}, started=started))
    write_json(folder / "regions.json", summary)
    return summary


def region_ablate_step(folder: str | Path, lm, *, languages: list[str], names: list[str] | None = None,
                       eval_tokens: int = 1024, batch_size: int = 2, corpus: str | None = None,
                       progress: bool = True) -> tuple[list[AblationRow], Path]:
    started = time.time()
    folder = Path(folder)
    info = folder_info(folder)
    regions = Regions.load(default_regions_file(folder))
    rows = region_ablation(lm, regions, folder_corpus(info, corpus), languages=languages, names=names,
                           eval_tokens=eval_tokens, window=info.get("window", 512), batch_size=batch_size,
                           progress=progress)
    path = write_ablation_csv(rows, folder / "region_ablation.csv")
    plot_ablation(rows, folder / "plots" / "region_ablation.png", ylabel="region zeroed",
                  title=f"Zeroing {regions.meta['rate']:.1%} regions of every decoder matrix "
                       f"({regions.meta['model'].get('name', '')})")
    write_manifest(path, make_manifest(
        "langloc.region_ablation", model=lm.meta, corpus=folder_corpus(info, corpus).describe(), split="eval",
        config={"languages": languages, "regions": names, "eval_tokens": eval_tokens, "window": info.get("window", 512),
                "batch_size": batch_size, "rate": regions.meta.get("rate")}, started=started),
        [path, folder / "plots" / "region_ablation.png"])
    return rows, path


def _parse_target(lm, spec: str) -> str:
    """``1.mlp.down_proj`` (layer.matrix) or a full parameter name -> the parameter name."""
    names = dict(lm.model.named_parameters())
    if spec in names:
        return spec
    layer, _, kind = spec.partition(".")
    matches = [n for n in names if n.endswith(f".{layer}.{kind}.weight")] if layer.isdigit() else []
    if len(matches) != 1:
        raise LanglocError(f"no single decoder matrix {spec!r}; name it as LAYER.MODULE (e.g. 1.mlp.down_proj) "
                           "or as its full parameter name")
    return matches[0]


def perturb_step(folder: str | Path, lm, *, languages: list[str], matrix: str | None = None,
                 dims: list[int] | None = None, scale: float | None = 4.0, value: float | None = None,
                 whole: bool = False, eval_tokens: int = 1024, batch_size: int = 2, corpus: str | None = None,
                 progress: bool = True) -> tuple[list[dict], Path]:
    """Perturb one parameter (or a whole dimension) of ``matrix`` on each of ``dims`` and measure
    perplexity. Without ``dims``: the Top region's densest dimension and an ordinary one (the
    dimension with the median Top-region count). Without ``matrix``: the lowest layer's matrix
    that writes the residual stream and holds the most Top entries on the densest dimension."""
    started = time.time()
    folder = Path(folder)
    info = folder_info(folder)
    regions = Regions.load(default_regions_file(folder))
    regions.check_model(lm)
    top = regions["top"]
    counts = dimension_counts(lm, top)
    labels = {}
    if not dims:
        order = torch.argsort(-counts, stable=True)
        dims = [int(order[0]), int(order[len(order) // 2])]
        labels = {dims[0]: "densest", dims[1]: "ordinary"}
    if matrix is None:
        best = None
        for name, idx in top.items():
            n = int(dimension_counts(lm, {name: idx})[dims[0]])
            layer = layer_of(lm)[name]
            if n and (best is None or (layer, -n) < (best[0], -best[1])):
                best = (layer, n, name)
        if best is None:
            raise LanglocError("no matrix holds Top-region entries on that dimension; name one with --matrix")
        name = best[2]
    else:
        name = _parse_target(lm, matrix)
    p = dict(lm.model.named_parameters())[name]
    if hidden_axis(lm, name, p.shape) is None:
        raise LanglocError(f"{name} has no hidden-size axis to perturb a dimension of")
    corpus_ = folder_corpus(info, corpus)
    evals = {lang: corpus_windows(lm, corpus_, lang, "eval", window=info.get("window", 512), max_tokens=eval_tokens)
             for lang in languages}
    conditions, described = [], {}
    for d in dims:
        if whole:
            cond = f"dim {d} (whole)"
            conditions.append((cond, lambda d=d: perturbed(lm, name, dim=d, scale=scale, value=value)))
            described[cond] = {"index": "", "original": ""}
        else:
            index = entry_on_dimension(lm, name, d, top)
            cond = f"dim {d} entry {index}"
            conditions.append((cond, lambda i=index: perturbed(lm, name, i, scale=scale, value=value)))
            described[cond] = {"index": index, "original": float(p.detach().view(-1)[index])}
        described[cond].update(dimension=d, kind=labels.get(d, ""), top_entries=int(counts[d]))
    rows = perplexity_table(lm, evals, conditions, batch_size=batch_size, progress=progress, desc="perturb")
    op = f"x{scale:g}" if scale is not None else f"={value:g}"
    table = [{"parameter": name, **{k: described[r.deactivated][k] for k in ("dimension", "kind", "top_entries",
                                                                              "index", "original")},
              "operation": op, "language": r.evaluated, "base_ppl": round(r.base_ppl, 4), "ppl": round(r.ppl, 4),
              "ratio": round(r.ratio, 4),
              "ratio_lo": round(r.ratio_lo, 4), "ratio_hi": round(r.ratio_hi, 4)} for r in rows]
    path = folder / "perturb.csv"
    write_csv(path, table, table[0].keys())
    write_manifest(path, make_manifest(
        "langloc.perturb", model=lm.meta, corpus=corpus_.describe(), split="eval",
        config={"languages": languages, "matrix": name, "dims": dims, "scale": scale, "value": value, "whole": whole,
                "eval_tokens": eval_tokens, "batch_size": batch_size}, started=started), [path])
    return table, path
