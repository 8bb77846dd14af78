"""The region folder: what ``langloc importance`` writes and the later steps add to.

A *region folder* holds ``importance.json`` (model, corpus, budget) and
``importance/<lang>.safetensors``. Later steps add to it:

- ``regions`` (:func:`langloc.workflows.regions_run`): ``regions.safetensors`` (the masks),
  ``dimensions.csv`` (the Top region's entries per hidden dimension next to the residual
  stream's largest activation on it), ``regions.json`` (sizes and the densest dimensions) and
  ``plots/regions.png``;
- ``region-ablate`` (:mod:`langloc.studies.region_ablate`): ``region_ablation.csv`` and
  ``plots/region_ablation.png``;
- ``perturb`` (:mod:`langloc.studies.perturb`): ``perturb.csv``.

This module reads a folder's description, corpus and model.
"""

from __future__ import annotations

from pathlib import Path

from langloc import kinds
from langloc.artefacts import read_json
from langloc.manifest import read_manifest
from langloc.regions.importance import INFO_FILE


def folder_info(folder: str | Path) -> dict:
    path = Path(folder) / INFO_FILE
    info = read_json(path, "importance folder description (run `langloc importance` first)")
    return read_manifest(info, kinds.IMPORTANCE, where=path)


def folder_corpus(info: dict, corpus: str | None = None):
    from langloc.data.loading import run_corpus

    return run_corpus(info, corpus, seed=info.get("corpus", {}).get("seed", 0))


def folder_model(folder: str | Path, model: str | None, dtype: str, device: str | None):
    """The model a region folder was made with (``model`` overrides), on this process's device."""
    from langloc import distributed
    from langloc.models.loading import load_model_of

    return load_model_of(folder_info(folder), model, dtype, device or distributed.local_device(), str(folder))
