"""perturb: scale or set one parameter of a matrix on a hidden dimension and measure perplexity.

On a dimension the core (Top) region concentrates on, one parameter can break the model; on an
ordinary one nothing happens. Writes ``OUT/perturb.csv`` and ``OUT/perturb.manifest.json``
(``OUT`` is usually the region folder); under torchrun the conditions are shared out over the
processes and the first writes the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from langloc import kinds
from langloc.errors import LanglocError
from langloc.evaluate.intervals import default_window
from langloc.studies.base import Manifest, StudyConfig, check_numbers

KIND = kinds.PERTURB


@dataclass
class Config(StudyConfig):
    """folder: region folder with regions.safetensors; languages: languages to evaluate; matrix:
    LAYER.MODULE (e.g. 1.mlp.down_proj) or a full parameter name (default: the lowest layer's
    matrix with the most Top entries on the densest dimension); dims: hidden dimensions (default
    the Top region's densest and an ordinary, median one); scale: multiply the parameter by this
    (default 4 where value is not given); value: set the parameter to this instead; whole:
    perturb every entry of the matrix on the dimension, not the largest Top entry; eval_tokens:
    held-out tokens per language; batch_size: windows per forward pass; corpus: corpus (default
    the folder's); model, dtype, device: the model (default the folder's); progress: bars."""

    folder: Path
    languages: tuple[str, ...]
    matrix: Optional[str] = None
    dims: Optional[tuple[int, ...]] = None
    scale: Optional[float] = None
    value: Optional[float] = None
    whole: bool = False
    eval_tokens: int = 1024
    batch_size: int = 2
    corpus: Optional[str] = None
    model: Optional[str] = None
    dtype: str = "auto"
    device: Optional[str] = None
    progress: bool = True


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


def run(lm, config: Config, out: str | Path) -> Manifest:
    """Perturb one parameter (or a whole dimension) of the matrix on each dimension and measure
    perplexity; see :class:`Config` for the defaults. ``out``: the CSV to write, or a folder
    (OUT/perturb.csv)."""
    from langloc import distributed
    from langloc.artefacts import write_csv
    from langloc.data.packing import corpus_windows
    from langloc.evaluate.ablation import perplexity_table
    from langloc.manifest import make_manifest, write_manifest
    from langloc.regions.dimensions import dimension_counts, entry_on_dimension, hidden_axis, perturbed
    from langloc.regions.params import layer_of
    from langloc.regions.regions import Regions, default_regions_file
    from langloc.regions.folder import folder_corpus, folder_info, folder_model

    c = config
    if c.scale is not None and c.value is not None:
        raise LanglocError("give --scale or --value, not both")
    check_numbers("dims", c.dims, "integers")
    scale, value = (4.0 if c.scale is None and c.value is None else c.scale), c.value
    languages, dims, matrix, whole = list(c.languages), list(c.dims) if c.dims else None, c.matrix, c.whole
    eval_tokens, batch_size, progress = c.eval_tokens, c.batch_size, c.progress
    lm = lm or folder_model(c.folder, c.model, c.dtype, c.device)
    started = time.time()
    folder = Path(c.folder)
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
    corpus_ = folder_corpus(info, c.corpus)
    window = default_window(eval_tokens, info.get("window", 512))
    evals = {lang: corpus_windows(lm, corpus_, lang, "eval", window=window, max_tokens=eval_tokens)
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
              # 6 decimals: one entry often moves perplexity by less than 1e-4, and 4 would print
              # a real interval as [1.0, 1.0]
              "ratio": round(r.ratio, 6),
              "ratio_lo": round(r.ratio_lo, 6), "ratio_hi": round(r.ratio_hi, 6), "windows": r.windows} for r in rows]
    if not distributed.is_main():
        return Manifest(result=table)
    path = Path(out) if str(out).endswith(".csv") else Path(out) / "perturb.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, table, table[0].keys())
    write_manifest(path, manifest := make_manifest(
        KIND, model=lm.meta, corpus=corpus_.describe(), split="eval",
        config={"languages": languages, "matrix": name, "dims": dims, "scale": scale, "value": value, "whole": whole,
                "eval_tokens": eval_tokens, "batch_size": batch_size}, started=started), [path])
    return Manifest(manifest, result=table, path=path)
