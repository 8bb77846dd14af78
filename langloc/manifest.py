"""One manifest for every artefact and study output, and one loader that checks it.

Every file langloc writes for later use carries the same manifest fields (see
docs/artefacts.md), at the top level of its JSON document:

=================  ==========================================================================
``kind``           what the file is: a key of :data:`KINDS`, e.g. ``langloc.neuron_set``
``format_version`` the artefact format (:data:`FORMAT_VERSION`); older ones are refused
``langloc_version`` the langloc that wrote it
``model``          the model it was made with (``LoadedModel.meta``: name, source, revision,
                   weights and tokenizer fingerprints, neuron site, layers, width, dtype)
``corpus``         the corpus (``Corpus.describe()``: name, seed, how its splits are made)
``split``          the corpus split(s) read: ``stats``, ``eval``, ...
``config``         the settings that made it
``seeds``          every seed that made it
``command``        the command line (``sys.argv``)
``created``        when it was written (UTC, ISO 8601)
``wall_seconds``   how long the step that wrote it took
``machine``        CPU model and class, threads, GPU, torch and transformers versions
=================  ==========================================================================

Where the document is: a JSON artefact holds the fields itself (``run.json``, neuron sets,
interventions, ``steer.json``, ...); a safetensors file holds the document as JSON in its
metadata under ``"langloc"``; a study whose results are CSV files (ablation, transfer,
forgetting, ...) writes ``<name>.manifest.json`` beside its main CSV, which also lists the
files it wrote.

:func:`read_manifest` is the one loader: it refuses a foreign file, one of another kind, one
in an older (or newer) format and one made for another model, each with one line that says
what to do.
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langloc import kinds
from langloc._version import __version__
from langloc.artefacts import read_json, write_json
from langloc.errors import LanglocError

# 1: the files before the manifest (some had "kind" and "langloc_version", none a format).
FORMAT_VERSION = 2

FIELDS = ("kind", "format_version", "langloc_version", "model", "corpus", "split", "config", "seeds", "command",
          "created", "wall_seconds", "machine")


@dataclass(frozen=True)
class Kind:
    what: str  # how messages name it
    made_by: str  # the command that makes it
    file: str  # where it is written


KINDS: dict[str, Kind] = {k: Kind(*v) for k, v in {
    kinds.RUN: ("run file", "langloc collect", "RUN/run.json"),
    kinds.STATS: ("statistics file", "langloc collect", "RUN/stats/<lang>.safetensors (metadata)"),
    kinds.RESPONSES: ("segment responses file", "langloc collect --segments N",
                      "RUN/responses/<lang>.safetensors (metadata)"),
    kinds.RESIDUAL_SAMPLE: ("residual sample file", "langloc collect --residual-sample N",
                            "RUN/residual_sample/<lang>.safetensors (metadata)"),
    kinds.NEURON_SET: ("neuron set", "langloc identify", "RUN/neurons/<method>.json"),
    kinds.ABLATION: ("ablation study", "langloc ablate", "RUN/ablation.manifest.json beside ablation.csv"),
    kinds.COMPARE: ("neuron set comparison", "langloc compare", "OUT/compare.manifest.json"),
    kinds.INTERVENTION: ("intervention", "langloc steer", "OUT/interventions/<method>-<target>.json"),
    kinds.STEER: ("steering study", "langloc steer", "OUT/steer.json"),
    kinds.IMPORTANCE: ("importance folder", "langloc importance", "OUT/importance.json"),
    kinds.IMPORTANCE_SCORES: ("importance scores file", "langloc importance",
                              "OUT/importance/<lang>.safetensors (metadata)"),
    kinds.REGIONS: ("region file", "langloc regions", "FOLDER/regions.safetensors (metadata)"),
    kinds.REGIONS_SUMMARY: ("region summary", "langloc regions", "FOLDER/regions.json"),
    kinds.REGION_ABLATION: ("region ablation study", "langloc region-ablate",
                            "FOLDER/region_ablation.manifest.json"),
    kinds.PERTURB: ("perturbation study", "langloc perturb", "FOLDER/perturb.manifest.json"),
    kinds.TRAIN: ("training result", "langloc train", "OUT/<mode>/train.json"),
    kinds.FORGETTING: ("forgetting study", "langloc train", "OUT/forgetting.manifest.json"),
    kinds.TRANSFER: ("transfer study", "langloc transfer", "<out>.manifest.json beside the CSV"),
    kinds.ADAPTER: ("saved adapter", "langloc transfer --save-adapters", "ADAPTERS/<mode>/langloc_adapter.json"),
    kinds.SHARE: ("sharing study", "langloc share", "OUT/share.json"),
    kinds.HARNESS: ("harness study", "langloc harness", "OUT/results.json"),
    # issue 17: validate and its planted ground truth
    kinds.PLANTED: ("planted ground truth", "langloc planted", "OUT/truth.json"),
    kinds.VALIDATION: ("validation study", "langloc validate", "RUN/validate/validation.manifest.json"),
    kinds.SPREAD: ("residual-spread study", "langloc spread", "<out>.manifest.json beside the CSV"),
    # issue 30: neuron sets and DiffMean directions to share (langloc.hub reads them)
    kinds.EXPORT: ("langloc export", "langloc export", "OUT/langloc.json"),
}.items()}

# What files of format 1 said their kind was, where it was not a KINDS key.
_OLD_KINDS = {"training": kinds.TRAIN}


@functools.lru_cache(maxsize=1)
def _machine() -> dict:
    from langloc import machine

    return machine.describe()


def make_manifest(kind: str, *, model: dict | None = None, corpus: dict | None = None, split: Any = None,
                  config: dict | None = None, seeds: dict | None = None, started: float | None = None) -> dict:
    """The manifest fields of an artefact of ``kind`` (a key of :data:`KINDS`).

    ``model``: ``lm.meta`` (or the ``model`` of the artefact it was made from); ``corpus``:
    ``corpus.describe()``; ``split``: the split(s) read; ``config``: the settings; ``seeds``:
    every seed, by role; ``started``: ``time.time()`` when the step began (for
    ``wall_seconds``; None if not known).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown artefact kind {kind!r}; add it to langloc.manifest.KINDS")
    return {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "langloc_version": __version__,
        "model": dict(model) if model is not None else None,
        "corpus": corpus,
        "split": split,
        "config": config or {},
        "seeds": seeds or {},
        "command": list(sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 3) if started is not None else None,
        "machine": dict(_machine()),
    }


def stamp(doc: dict, manifest: dict) -> dict:
    """``doc`` with the manifest fields first (replacing any it had), then its own fields."""
    return {**manifest, **{k: v for k, v in doc.items() if k not in FIELDS}}


def content(doc: dict, keep: tuple[str, ...] = ("model", "corpus")) -> dict:
    """``doc`` without the manifest fields (those in ``keep`` stay)."""
    return {k: v for k, v in doc.items() if k not in FIELDS or k in keep}


def manifest_file(path: str | Path) -> Path:
    """Where the manifest of a study whose main output is ``path`` goes: ``<stem>.manifest.json``
    beside it (``ablation.csv`` -> ``ablation.manifest.json``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.manifest.json")


def write_manifest(path: str | Path, manifest: dict, outputs: list[str | Path], **extra) -> Path:
    """Write ``<stem>.manifest.json`` beside ``path`` (a study's main CSV), listing the files the
    study wrote (relative to that folder where they are inside it). Returns its path."""
    target = manifest_file(path)
    folder = target.parent.resolve()

    def rel(p) -> str:
        p = Path(p).resolve()
        return str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p)

    write_json(target, {**manifest, **extra, "outputs": [rel(p) for p in outputs]})
    return target


def _kind_of(doc: dict) -> str | None:
    kind = doc.get("kind")
    return _OLD_KINDS.get(kind, kind) if isinstance(kind, str) else None


def read_manifest(source: str | Path | dict, kind: str, *, where: str | Path | None = None,
                  model_meta: dict | None = None) -> dict:
    """The document of a langloc artefact of ``kind`` (a path to its JSON, or the dict already
    read, e.g. a safetensors file's metadata), checked; returns the whole document.

    Refused with one line that says what to do: a file that is not a langloc artefact, one of
    another kind, one of an older or newer format, one made for another model than
    ``model_meta`` (``LoadedModel.meta``) where that is given.
    """
    spec = KINDS[kind]
    if isinstance(source, dict):
        doc, where = source, where or f"this {spec.what}"
    else:
        where = where or source
        doc = read_json(source, spec.what)
    remake = f"remake it with `{spec.made_by}`"
    if not isinstance(doc, dict):
        raise LanglocError(f"{where} is not a langloc {spec.what} (not a JSON object); "
                           f"give the {spec.what} that `{spec.made_by}` writes ({spec.file})")
    found = _kind_of(doc)
    old = "format_version" not in doc and (found is not None and found.startswith("langloc.")
                                           or "langloc_version" in doc)
    if found != kind and not (old and found is None):
        what = (f"it is a langloc {KINDS[found].what}" if found in KINDS
                else f"it says kind={found!r}" if found is not None else "it has no langloc manifest")
        raise LanglocError(f"{where} is not a langloc {spec.what} ({what}); "
                           f"give the {spec.what} that `{spec.made_by}` writes ({spec.file})")
    version = doc.get("format_version", 1)
    if not isinstance(version, int) or version < FORMAT_VERSION:
        raise LanglocError(f"{where} was written by an older langloc (format {version}, this langloc reads "
                           f"{FORMAT_VERSION}): {remake}")
    if version > FORMAT_VERSION:
        raise LanglocError(f"{where} was written by a newer langloc (format {version}, this langloc reads "
                           f"{FORMAT_VERSION}): upgrade langloc (pip install -U langloc)")
    if model_meta is not None:
        check_same_model(doc, model_meta, f"{spec.what} {where}")
    return doc


def read_safetensors_manifest(path: str | Path, kind: str, *, model_meta: dict | None = None) -> dict:
    """The checked document a langloc safetensors file carries in its metadata (``"langloc"``)."""
    from safetensors import safe_open

    path = Path(path)
    what = KINDS[kind].what
    if not path.is_file():
        raise LanglocError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get("langloc")
    except Exception as exc:  # noqa: BLE001 - any damage means the same thing to the user
        raise LanglocError(f"{what} {path} is unreadable (truncated or not safetensors): {exc}") from None
    try:
        doc = json.loads(raw) if raw is not None else {}
    except json.JSONDecodeError:
        doc = {}
    return read_manifest(doc, kind, where=path, model_meta=model_meta)


def load_artefact(path: str | Path, kind: str, what: str, build):
    """Read a langloc JSON artefact of ``kind``, check its manifest (see :mod:`langloc.manifest`)
    and ``build`` it from its dict; a foreign, older-format or damaged file gets one clear error."""
    d = read_manifest(path, kind)
    try:
        return build(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise LanglocError(f"{path} is a damaged {what} ({type(exc).__name__}: {exc})") from None


_REDO = "load the model it was made for (--model), or remake it with this one"


def check_same_model(meta: dict, model_meta: dict, what: str) -> None:
    """Refuse an artefact whose model metadata does not match the loaded model."""
    mine = meta.get("model") or {}
    for key in ("num_layers", "intermediate_size"):
        if key in mine and mine[key] != model_meta[key]:
            raise LanglocError(
                f"{what} was made for a model with {key}={mine[key]} ({mine.get('name', '?')}), "
                f"but the loaded model {model_meta['name']} has {key}={model_meta[key]}; {_REDO}"
            )
    for key in ("weights_fingerprint", "tokenizer_fingerprint"):
        if mine.get(key) and mine[key] != model_meta[key]:
            raise LanglocError(
                f"{what} was made for model {mine.get('name', '?')} ({key} {mine[key]}), not for the "
                f"loaded model {model_meta['name']} ({model_meta[key]}); {_REDO}"
            )
