"""The deactivation experiment: zero one language's neurons, measure every language's perplexity.

Rows of the result: for each language k, ``deactivated = k`` (its neuron set) and
``deactivated = random:k`` (the control: random neurons, same count per layer, seeded).
``ratio = ppl / base_ppl`` on each evaluated language's held-out windows.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from langloc.artefacts import write_text
from langloc.data.packing import corpus_windows
from langloc.evaluate.perplexity import window_nll
from langloc.intervene.hooks import deactivate

COLUMNS = ("deactivated", "evaluated", "base_ppl", "ppl", "ratio")


@dataclass
class AblationRow:
    deactivated: str
    evaluated: str
    base_ppl: float
    ppl: float

    @property
    def ratio(self) -> float:
        return self.ppl / self.base_ppl


def ablate(
    lm,
    neuron_set,
    corpus,
    *,
    languages: list[str] | None = None,
    eval_tokens: int = 2048,
    window: int = 512,
    batch_size: int = 2,
    seed: int = 0,
    controls: bool = True,
    progress: bool = True,
) -> list[AblationRow]:
    neuron_set.check_model(lm)
    langs = languages or neuron_set.languages
    for lang in langs:
        neuron_set.layers(lang)
    corpus.check_languages(langs)
    evals = {lang: corpus_windows(lm, corpus, lang, "eval", window=window, max_tokens=eval_tokens) for lang in langs}
    conditions = [(lang, lambda layers=neuron_set.layers(lang): deactivate(lm, layers)) for lang in langs]
    if controls:
        conditions += [(f"random:{lang}", lambda layers=neuron_set.random_like(lang, seed + i): deactivate(lm, layers))
                       for i, lang in enumerate(langs)]
    return perplexity_table(lm, evals, conditions, batch_size=batch_size, progress=progress)


def perplexity_table(lm, evals: dict[str, torch.Tensor], conditions, *, batch_size: int = 2,
                     progress: bool = True, desc: str = "ablate") -> list[AblationRow]:
    """Perplexity of every language's windows unchanged, then under each ``(name, context)``
    condition (``context()`` returns a context manager that changes the model and restores it)."""
    langs = list(evals)
    # All languages' windows go through the model together (fuller batches), then the per-window
    # NLL sums are added up per language.
    ids = torch.cat([evals[lang] for lang in langs])
    owner = torch.cat([torch.full((len(evals[lang]),), k) for k, lang in enumerate(langs)])
    predicted = torch.tensor([evals[lang][:, 1:].numel() for lang in langs], dtype=torch.float64)

    def ppl_per_language() -> torch.Tensor:
        per_window = window_nll(lm, ids, batch_size)
        sums = torch.zeros(len(langs), dtype=torch.float64).index_add_(0, owner, per_window)
        bar.update()
        return torch.exp(sums / predicted)

    bar = tqdm(total=len(conditions) + 1, desc=desc, unit="condition", disable=not progress)
    base = ppl_per_language()
    rows = []
    for name, context in conditions:
        with context():
            ppl = ppl_per_language()
        rows += [AblationRow(name, lang, base[k].item(), ppl[k].item()) for k, lang in enumerate(langs)]
    bar.close()
    return rows


def rows_to_csv(rows: list[AblationRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([r.deactivated, r.evaluated, f"{r.base_ppl:.6g}", f"{r.ppl:.6g}", f"{r.ratio:.6g}"])
    return buf.getvalue()


def write_ablation_csv(rows: list[AblationRow], path: str | Path) -> Path:
    write_text(path, rows_to_csv(rows))
    return Path(path)


def read_ablation_csv(path: str | Path) -> list[AblationRow]:
    with open(path, encoding="utf-8") as fh:
        return [AblationRow(r["deactivated"], r["evaluated"], float(r["base_ppl"]), float(r["ppl"]))
                for r in csv.DictReader(fh)]
