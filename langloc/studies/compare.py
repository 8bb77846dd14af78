"""compare: how much the neuron sets of different methods agree, per language and layer.

Writes ``OUT/compare.csv`` (sizes, shared neurons, Jaccard similarity; per layer and over all
layers), ``OUT/compare.png`` and ``OUT/compare.manifest.json``. Needs no model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.studies.base import Manifest, StudyConfig

KIND = kinds.COMPARE


@dataclass
class Config(StudyConfig):
    """neurons: two or more neuron set files; names: a name per set (default its method, with
    the file's stem where two share one)."""

    neurons: tuple[Path, ...]
    names: Optional[tuple[str, ...]] = None


def run(lm, config: Config, out: str | Path) -> Manifest:
    from langloc.artefacts import write_csv
    from langloc.identify import NeuronSet
    from langloc.identify.compare import compare_sets
    from langloc.manifest import make_manifest, write_manifest
    from langloc.plotting import plot_comparison

    started = time.time()
    sets = {}
    for i, f in enumerate(config.neurons):
        ns = NeuronSet.load(f)
        name = config.names[i] if config.names else ns.method
        if name in sets:
            name = f"{name}:{Path(f).stem}"
        sets[name] = ns
    rows = compare_sets(sets)
    out = Path(out)
    write_csv(out / "compare.csv", rows, rows[0].keys())
    plot_comparison(rows, out / "compare.png")
    first = next(iter(sets.values()))
    manifest = make_manifest(
        KIND, model=first.meta.get("model"), corpus=first.meta.get("corpus"), started=started,
        config={"neuron_sets": {name: {"file": str(f), "method": ns.method, "params": ns.params}
                                for (name, ns), f in zip(sets.items(), config.neurons)}})
    write_manifest(out / "compare.csv", manifest, [out / "compare.csv", out / "compare.png"])
    return Manifest(manifest, result=rows, path=out / "compare.csv")
