"""Region ablation: zero a region's weights, measure every language's perplexity.

Rows are the same as the neuron ablation's (``deactivated`` names the region): for the core
regions ``top``, ``bottom`` and ``random``, and for each monolingual region ``mono:<lang>``.
The ``ratio`` of a language is its perplexity with the region zeroed over its perplexity
unchanged, on held-out (evaluation split) windows.
"""

from __future__ import annotations

from langloc.data.packing import corpus_windows
from langloc.evaluate.ablation import AblationRow, perplexity_table
from langloc.errors import LanglocError
from langloc.regions.params import zeroed


def region_ablation(lm, regions, corpus, *, languages: list[str], names: list[str] | None = None,
                    eval_tokens: int, window: int = 512, batch_size: int = 2,
                    progress: bool = True) -> list[AblationRow]:
    regions.check_model(lm)
    names = names or [n for n in ("top", "bottom", "random") if n in regions.names] + \
        [n for n in regions.names if n.startswith("mono:")]
    for n in names:
        regions[n]
    if not languages:
        raise LanglocError("name at least one language to evaluate")
    corpus.check_languages(languages)
    evals = {lang: corpus_windows(lm, corpus, lang, "eval", window=window, max_tokens=eval_tokens) for lang in languages}
    conditions = [(n, lambda r=regions[n]: zeroed(lm, r)) for n in names]
    return perplexity_table(lm, evals, conditions, batch_size=batch_size, progress=progress, desc="region ablation")
