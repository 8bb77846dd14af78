"""The relevance criterion measured on the model's own text (issue 28, item 3): it should
accept each native continuation after its own prompt and reject it after another prompt of the
same language. Apart from :mod:`langloc.steer.relevance` because it generates: the criterion
stays free of the steering module, which imports it to judge."""

from __future__ import annotations

import torch

from langloc.errors import LanglocError
from langloc.evaluate.intervals import rate_ci
from langloc.steer.prompts import builtin_prompts
from langloc.steer.relevance import pmi
from langloc.steer.steering import generate


def validate(lm, languages: list[str], gen, others: int = 4, report=None) -> list[dict]:
    """Per language: the unsteered model continues the built-in native prompts; the true pairs
    with PMI > 0 (accepted) and the shuffled pairs (each continuation after the prompt half the
    set away, compared with the ``others`` prompts after that one, none of them its own) with
    PMI ≤ 0 (rejected), as counts and rates with 95% Clopper-Pearson intervals; then the pooled
    row (``language`` "all"); ``report(row)`` is called on each row as it is made."""
    def row(lang, n, acc, rej, true, shuffled):
        (alo, ahi), (rlo, rhi) = rate_ci(acc, n), rate_ci(rej, n)
        return {"language": lang, "n": n, "accepted_true": acc, "accept_rate": acc / n, "accept_lo": alo,
                "accept_hi": ahi, "rejected_shuffled": rej, "reject_rate": rej / n, "reject_lo": rlo, "reject_hi": rhi,
                "median_pmi_true": float(torch.tensor(true).median()),
                "median_pmi_shuffled": float(torch.tensor(shuffled).median())}

    rows, all_true, all_shuffled = [], [], []
    for lang in languages:
        prompts = builtin_prompts(lang, "all")
        n = len(prompts)
        half = n // 2  # continuation of prompt i + n/2 after prompt i; others i+1..i+others exclude it
        if others >= half:
            raise LanglocError(f"{lang}: {n} prompts are too few to shuffle against {others} others")
        conts = [g["tokens"] for g in generate(lm, prompts, gen)]
        true = pmi(lm, prompts, conts, others)
        shuffled = pmi(lm, prompts, [conts[(i + half) % n] for i in range(n)], others)
        all_true += true
        all_shuffled += shuffled
        rows.append(row(lang, n, sum(v > 0 for v in true), sum(v <= 0 for v in shuffled), true, shuffled))
        if report is not None:
            report(rows[-1])
    rows.append(row("all", len(all_true), sum(v > 0 for v in all_true), sum(v <= 0 for v in all_shuffled),
                    all_true, all_shuffled))
    if report is not None:
        report(rows[-1])
    return rows
