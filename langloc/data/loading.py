"""Opening a corpus by name: the sources of :mod:`langloc.data.corpora` behind the optional
language-ID filter of :mod:`langloc.data.lid_filter`, and a run's own corpus as its metadata
names it. Kept apart from both so that the filter (a Corpus) and the sources import nothing of
each other's."""

from __future__ import annotations

from pathlib import Path

from langloc.data.corpora import BibleCorpus, Corpus, FolderCorpus, HFCorpus
from langloc.data.lid_filter import LidFilter
from langloc.errors import LanglocError


def load_corpus(spec: str = "bible", *, seed: int = 0, lid_filter: dict | None = None) -> Corpus:
    """``bible``, a folder path, or ``hf:PATH[:CONFIG]``; with ``lid_filter`` (the keyword
    arguments of :class:`langloc.data.lid_filter.LidFilter`, e.g. ``{"threshold": 0.5}``), only
    its documents that language identification assigns to their language."""
    corpus = _load_corpus(spec, seed)
    return corpus if lid_filter is None else LidFilter(corpus, **lid_filter)


def _load_corpus(spec: str, seed: int) -> Corpus:
    if spec == "bible":
        BibleCorpus.db_path()
        return BibleCorpus(seed=seed)
    if spec.startswith("hf:"):
        parts = spec[3:].split(":", 1)
        return HFCorpus(parts[0], parts[1] if len(parts) > 1 else None)
    if Path(spec).is_dir():
        return FolderCorpus(Path(spec))
    raise LanglocError(f"unknown corpus {spec!r}: use 'bible', a folder of <lang>.txt/.jsonl/.parquet files, or hf:PATH[:CONFIG]")


def run_corpus_spec(meta: dict, corpus: str | None = None) -> str:
    """The corpus a run's statistics came from (``corpus`` overrides), as a load_corpus spec."""
    return corpus or meta.get("corpus", {}).get("name", "bible").split("folder:", 1)[-1]


def run_corpus(meta: dict, corpus: str | None = None, seed: int = 0):
    """The corpus a run's (or importance folder's) text came from (``corpus`` overrides the
    source), through the same language-ID filter as that text, if it went through one."""
    lid = (meta.get("corpus") or {}).get("lid_filter")
    return load_corpus(run_corpus_spec(meta, corpus), seed=seed, lid_filter=None if lid is None else {
        "threshold": lid["threshold"], "candidates": tuple(lid["candidates"])})
