"""The deactivation experiment: zero one language's neurons, measure every language's perplexity.

Rows of the result: for each language k, ``deactivated = k`` (its neuron set) and
``deactivated = random:k`` (the control: random neurons, same count per layer, drawn
``control_draws`` times from seeds derived from the run seed and the name ``random:k``,
:mod:`langloc.controls`). ``ratio = ppl / base_ppl`` on each evaluated language's held-out
windows; for a control, ``ppl`` is exp of the NLL averaged over the draws (so ``ratio`` is the
geometric mean of the draws' ratios) and ``ratio_min``, ``ratio_max`` the draws' range.
``ratio_lo, ratio_hi`` is the 95% paired Student-t interval of the log-ratio over the
``windows`` held-out windows (:mod:`langloc.evaluate.intervals`); with fewer than
``MIN_UNITS`` windows it is not reported.

Under torchrun the model evaluations (base, each set, each control draw) are shared out over
the processes and gathered: the table is the one a single process computes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import math
import sys

import torch
from tqdm.auto import tqdm

from langloc import distributed
from langloc.artefacts import write_text
from langloc.controls import check_draws, random_control
from langloc.data.packing import corpus_windows
from langloc.evaluate.intervals import MIN_UNITS, no_interval, perplexity_ratio_ci
from langloc.evaluate.perplexity import window_nll
from langloc.intervene.hooks import deactivate

COLUMNS = ("deactivated", "evaluated", "base_ppl", "ppl", "ratio", "ratio_lo", "ratio_hi", "ratio_min", "ratio_max",
           "draws", "windows")
CONTROL_DRAWS = 3


@dataclass
class AblationRow:
    deactivated: str
    evaluated: str
    base_ppl: float
    ppl: float
    ratio_lo: float = math.nan  # 95% interval of the ratio over windows (nan: too few windows)
    ratio_hi: float = math.nan
    ratio_min: float | None = None  # a control's range over its draws
    ratio_max: float | None = None
    draws: int | None = None  # a control's number of draws (None: not a control)
    windows: int | None = None  # held-out windows of the evaluated language: the interval's units

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
    control_draws: int = CONTROL_DRAWS,
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
        draws = check_draws(control_draws)
        for lang in langs:
            name = f"random:{lang}"
            conditions.append((name, [lambda layers=random_control(neuron_set.layers(lang), neuron_set.intermediate_size,
                                                                   seed, name, d): deactivate(lm, layers)
                                      for d in range(draws)]))
    return perplexity_table(lm, evals, conditions, batch_size=batch_size, progress=progress)


def perplexity_table(lm, evals: dict[str, torch.Tensor], conditions, *, batch_size: int = 2,
                     progress: bool = True, desc: str = "ablate") -> list[AblationRow]:
    """Perplexity of every language's windows unchanged, then under each ``(name, context)``
    condition (``context()`` returns a context manager that changes the model and restores it;
    a list of them is a control's draws, reported as their mean and range).

    Each row has the 95% paired interval of its ratio over the language's windows, or none
    (and one warning line) where a language has fewer than ``MIN_UNITS`` windows. Under
    torchrun, evaluation ``j`` (0: base, then every condition's draws in order) runs on rank
    ``j % world``; the per-window NLL are gathered on every rank.
    """
    langs = list(evals)
    few = [f"{lang}: {no_interval(len(evals[lang]))}" for lang in langs if len(evals[lang]) < MIN_UNITS]
    if few and distributed.rank_and_world()[0] == 0:
        # Fewer windows would give intervals that cover well under 95%: say so rather than print them.
        tqdm.write(f"warning: {'; '.join(few)}; give more held-out tokens (--eval-tokens) or a smaller window",
                   file=sys.stderr)
    # All languages' windows go through the model together (fuller batches), then the per-window
    # NLL sums are added up per language.
    ids = torch.cat([evals[lang] for lang in langs])
    owner = torch.cat([torch.full((len(evals[lang]),), k) for k, lang in enumerate(langs)])
    tokens = torch.tensor([float(w.shape[0] - 1) for lang in langs for w in evals[lang]], dtype=torch.float64)
    predicted = torch.zeros(len(langs), dtype=torch.float64).index_add_(0, owner, tokens)
    groups = [(name, list(ctx) if isinstance(ctx, (list, tuple)) else [ctx], isinstance(ctx, (list, tuple)))
              for name, ctx in conditions]
    runs = [None] + [c for _, ctxs, _ in groups for c in ctxs]  # None: the base model
    rank, world = distributed.rank_and_world()
    mine = [j for j in range(len(runs)) if j % world == rank]
    nll = torch.zeros(len(runs), len(ids), dtype=torch.float64)
    bar = tqdm(total=len(mine), desc=desc, unit="condition", disable=not progress or rank != 0)
    for j in mine:
        if runs[j] is None:
            nll[j] = window_nll(lm, ids, batch_size)
        else:
            with runs[j]():
                nll[j] = window_nll(lm, ids, batch_size)
        bar.update()
    bar.close()
    if world > 1:
        # Every other entry is 0: the sum is each evaluation's NLL exactly, on every rank.
        nll = distributed.all_reduce_sum({"nll": nll}, getattr(lm, "device", None) or "cpu")["nll"]

    def ppl(row: torch.Tensor) -> torch.Tensor:
        return torch.exp(torch.zeros(len(langs), dtype=torch.float64).index_add_(0, owner, row) / predicted)

    base = ppl(nll[0])
    where = [(owner == k).nonzero().flatten() for k in range(len(langs))]
    rows, j = [], 1
    for name, ctxs, control in groups:
        block = nll[j:j + len(ctxs)]
        j += len(ctxs)
        per_draw = torch.stack([ppl(b) for b in block])  # [draws, langs]
        pooled = ppl(block.mean(0))  # exp of the NLL averaged over draws: the draws' geometric mean
        for k, lang in enumerate(langs):
            w = where[k]
            lo, hi = perplexity_ratio_ci(nll[0, w], block[:, w], tokens[w])
            ratios = per_draw[:, k] / base[k]
            rows.append(AblationRow(name, lang, base[k].item(), pooled[k].item(), lo, hi,
                                    ratios.min().item() if control else None,
                                    ratios.max().item() if control else None,
                                    len(ctxs) if control else None, len(w)))
    return rows


def _g(v) -> str:
    return "" if v is None or v != v else f"{v:.6g}"


def rows_to_csv(rows: list[AblationRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([r.deactivated, r.evaluated, f"{r.base_ppl:.6g}", f"{r.ppl:.6g}", f"{r.ratio:.6g}",
                    _g(r.ratio_lo), _g(r.ratio_hi), _g(r.ratio_min), _g(r.ratio_max),
                    "" if r.draws is None else r.draws, "" if r.windows is None else r.windows])
    return buf.getvalue()


def write_ablation_csv(rows: list[AblationRow], path: str | Path) -> Path:
    write_text(path, rows_to_csv(rows))
    return Path(path)

