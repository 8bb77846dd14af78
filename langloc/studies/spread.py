"""spread: how far one perturbed weight moves the residual stream, before and after a block's
output norm, and what it costs in perplexity, on the same cases chosen by one rule for every
model (:mod:`langloc.regions.spread`; docs/methods.md, "the residual-stream spread").

Writes the CSV ``OUT`` (one row per model and case: the relative change at each site, the
perplexity ratio and the seconds each model took) and ``<OUT stem>.manifest.json`` beside it,
which names every model measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.errors import LanglocError
from langloc.studies.base import Manifest, StudyConfig

KIND = kinds.SPREAD


@dataclass
class Config(StudyConfig):
    """models: models measured, each on the same cases (a name, alias or local folder); corpus:
    the text (default the Bible) and language: its language, read from the eval split; tokens:
    held-out tokens; window: tokens per window;
    layer: the decoder layer whose MLP holds the perturbed matrices; big: the value the `=big`
    case sets an entry to; batch_size: windows per forward pass; dtype, device: how each model
    is loaded (float32 by default: the relative changes are small numbers); progress: bars."""

    models: tuple[str, ...]
    corpus: str = "bible"
    language: str = "en"
    tokens: int = 1024
    window: int = 256
    layer: int = 1
    big: float = 100.0
    batch_size: int = 2
    dtype: str = "float32"
    device: Optional[str] = None
    progress: bool = True


def run(lm, config: Config, out: str | Path) -> Manifest:
    """Measure every model of ``config`` (``lm``, if given, is used for the single model named)."""
    from tqdm.auto import tqdm

    from langloc.artefacts import write_csv
    from langloc.data import corpus_windows, load_corpus
    from langloc.manifest import make_manifest, write_manifest
    from langloc.models import load_model
    from langloc.regions.spread import spread_study

    c = config
    if not c.models:
        raise LanglocError("give at least one model")
    if lm is not None and len(c.models) != 1:
        raise LanglocError("a loaded model stands for one model: name only that one")
    if c.tokens < 2 or c.window < 2 or c.batch_size < 1 or c.layer < 0:
        raise LanglocError("tokens and window must be at least 2, batch_size positive, layer not negative")
    corpus = load_corpus(c.corpus)
    corpus.require_text([c.language], "eval")
    started = time.time()
    rows, metas = [], []
    for name in tqdm(c.models, desc="spread", unit="model", disable=not c.progress or len(c.models) < 2):
        t = time.time()
        model = lm or load_model(name, dtype=c.dtype, device=c.device)
        if not c.layer < model.num_layers:
            raise LanglocError(f"--layer {c.layer}: {model.name} has layers 0..{model.num_layers - 1}")
        windows = corpus_windows(model, corpus, c.language, "eval", window=c.window, max_tokens=c.tokens)
        got = spread_study(model, windows, layer=c.layer, big=c.big, batch_size=c.batch_size, progress=c.progress)
        for r in got:
            r["seconds"] = round(time.time() - t, 1)
        rows += got
        metas.append(model.meta)
    path = Path(out)
    write_csv(path, rows, list(dict.fromkeys(k for r in rows for k in r)), float_digits=4)
    manifest = make_manifest(KIND, model=metas[0] if len(metas) == 1 else None, corpus=corpus.describe(),
                             split="eval", config=c.to_dict(), started=started)
    write_manifest(path, manifest, [path], models=metas)
    return Manifest(manifest, result=rows, path=path)
