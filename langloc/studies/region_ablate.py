"""region-ablate: zero a region's weights (Top / Bottom / Random, mono:<lang>) and measure every
language's held-out perplexity ratio.

Writes ``OUT/region_ablation.csv``, ``OUT/plots/region_ablation.png`` and
``OUT/region_ablation.manifest.json``; ``OUT`` is usually the region folder. Under torchrun
the conditions are shared out over the processes (:func:`langloc.evaluate.ablation.perplexity_table`)
and the first writes the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.evaluate.intervals import default_window
from langloc.studies.base import Manifest, StudyConfig

KIND = kinds.REGION_ABLATION


@dataclass
class Config(StudyConfig):
    """folder: region folder with regions.safetensors (langloc regions); languages: languages to
    evaluate; regions: regions to zero (default top, bottom, random and every mono:<lang>);
    eval_tokens: held-out tokens per language; corpus: corpus whose eval split is used (default
    the folder's); batch_size: windows per forward pass; model, dtype, device: the model
    (default the folder's); progress: show progress bars."""

    folder: Path
    languages: tuple[str, ...]
    regions: Optional[tuple[str, ...]] = None
    eval_tokens: int = 1024
    corpus: Optional[str] = None
    batch_size: int = 2
    model: Optional[str] = None
    dtype: str = "auto"
    device: Optional[str] = None
    progress: bool = True


def run(lm, config: Config, out: str | Path) -> Manifest:
    from langloc import distributed
    from langloc.evaluate.ablation import write_ablation_csv
    from langloc.manifest import make_manifest, write_manifest
    from langloc.regions.ablation import region_ablation
    from langloc.regions.regions import Regions, default_regions_file
    from langloc.regions.folder import folder_corpus, folder_info, folder_model
    from langloc.plotting import plot_ablation

    c, out = config, Path(out)
    started = time.time()
    info = folder_info(c.folder)
    regions = Regions.load(default_regions_file(c.folder))
    lm = lm or folder_model(c.folder, c.model, c.dtype, c.device)
    corpus = folder_corpus(info, c.corpus)
    languages, names = list(c.languages), list(c.regions) if c.regions else None
    window = default_window(c.eval_tokens, info.get("window", 512))
    rows = region_ablation(lm, regions, corpus, languages=languages, names=names, eval_tokens=c.eval_tokens,
                           window=window, batch_size=c.batch_size, progress=c.progress)
    if not distributed.is_main():
        return Manifest(result=rows)
    path = write_ablation_csv(rows, out / "region_ablation.csv")
    plot = out / "plots" / "region_ablation.png"
    plot_ablation(rows, plot, ylabel="region zeroed",
                  title=f"Zeroing {regions.meta['rate']:.1%} regions of every decoder matrix "
                        f"({regions.meta['model'].get('name', '')})")
    manifest = make_manifest(
        KIND, model=lm.meta, corpus=corpus.describe(), split="eval", started=started,
        config={"languages": languages, "regions": names, "eval_tokens": c.eval_tokens,
                "window": window, "batch_size": c.batch_size, "rate": regions.meta.get("rate")})
    write_manifest(path, manifest, [path, plot])
    return Manifest(manifest, result=rows, path=path)
