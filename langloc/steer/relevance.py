"""Relevance: does a continuation belong to its prompt? Pointwise mutual information under the
unsteered model, with no extra model (issue 28, item 3).

``pmi(c; p) = [log p(c | p) − log mean_j p(c | p_j)] / |c|``, in nats per continuation token:
how much likelier the continuation is after its own prompt than after ``others`` other prompts
``p_j`` (the ones following ``p`` in the list, cyclically; a fixed, seed-free choice). The
criterion fixed before any measurement: relevant when ``pmi > 0``. A fluent output unrelated to
its prompt is about as likely after any prompt, so its PMI sits near or below 0 (the mean of
probabilities in the reference is at least their geometric mean).

:func:`langloc.steer.relevance_validation.validate` measures the criterion on the model's own
continuations of native prompts (true pairs, which it should accept) against the same
continuations paired with another prompt of the set (shuffled pairs, which it should reject).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from langloc.errors import LanglocError


@dataclass
class Relevance:
    """The relevance criterion of the strict judge: ``on`` (off: not judged, for speed; the
    outputs say so) and ``others``, the prompts each continuation is compared with. It costs
    ``1 + others`` scoring passes over prompt + continuation per output."""

    on: bool = True
    others: int = 4

    def __post_init__(self):
        if self.others < 1:
            raise LanglocError(f"relevance needs at least one other prompt to compare with, got {self.others}")

    def score(self, lm, records: list[dict], only: list[dict] | None = None) -> list[dict]:
        """Add ``pmi`` and ``relevant`` (PMI > 0) to each record (``prompt`` and ``tokens``) that
        lacks them, comparing it with the distinct prompts of ``records``, in their order;
        ``only``: score just these records (of ``records``), against the same prompts."""
        todo = [r for r in (records if only is None else only) if "pmi" not in r]
        if not self.on or not todo:
            return records
        ref = list(dict.fromkeys(r["prompt"] for r in records))
        for r, v in zip(todo, pmi(lm, [r["prompt"] for r in todo], [r["tokens"] for r in todo], self.others, ref)):
            r.update(pmi=round(v, 4) if math.isfinite(v) else None, relevant=bool(v > 0))
        return records


@torch.inference_mode()
def continuation_logprob(lm, prompts: list[str], continuations: list[list[int]], batch_size: int = 8) -> list[float]:
    """log p(continuation tokens | prompt), summed over the continuation's tokens, under the
    unsteered ``lm`` (any intervention still hooked into it is passed through)."""
    from langloc.intervene.intervention import unsteered
    from langloc.models.calls import logits_at

    if len(prompts) != len(continuations):
        raise LanglocError("give one prompt per continuation")
    tok = lm.tokenizer
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    out = []
    for s in range(0, len(prompts), batch_size):
        items = [(tok(p)["input_ids"], list(c)) for p, c in zip(prompts[s:s + batch_size], continuations[s:s + batch_size])]
        T = max(len(p) + len(c) for p, c in items)
        # Logits only where some row predicts a continuation token: the vocabulary head (262k
        # rows on Gemma) is most of a scoring pass, and the prompts' positions need none of it.
        lo = max(min(len(p) for p, _ in items) - 1, 0)
        hi = max(len(p) + len(c) for p, c in items) - 1
        if hi <= lo:  # no continuation tokens in this batch
            out += [0.0] * len(items)
            continue
        ids = torch.full((len(items), T), pad, dtype=torch.long)
        mask = torch.zeros(len(items), T, dtype=torch.long)
        scored = torch.zeros(len(items), hi - lo, dtype=torch.bool)  # kept positions that predict continuation tokens
        for r, (p, c) in enumerate(items):
            ids[r, :len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
            mask[r, :len(p) + len(c)] = 1
            scored[r, len(p) - 1 - lo:len(p) + len(c) - 1 - lo] = True
        with unsteered(lm):
            logits = logits_at(lm.model, torch.arange(lo, hi, device=lm.device),
                               input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device))
        logp = -F.cross_entropy(logits.float().flatten(0, 1), ids[:, lo + 1:hi + 1].to(lm.device).flatten(),
                                reduction="none").view(len(items), -1).cpu().double()
        out += [float(logp[r][scored[r]].sum()) for r in range(len(items))]
    return out


def pmi(lm, prompts: list[str], continuations: list[list[int]], others: int = 4, reference: list[str] | None = None,
        batch_size: int = 8) -> list[float]:
    """Per pair, PMI in nats per continuation token (see the module); ``reference``: the prompts
    the other ones are drawn from (default ``prompts``), the ``others`` after pair i's prompt's
    first place in ``reference`` (after place i where it is not there)."""
    ref = reference if reference is not None else prompts
    if len(ref) <= others:
        raise LanglocError(f"relevance needs more than {others} prompts to compare with, got {len(ref)}")
    first = {}
    for i, p in enumerate(ref):
        first.setdefault(p, i)
    at = [first.get(p, i) for i, p in enumerate(prompts)]
    own = continuation_logprob(lm, prompts, continuations, batch_size)
    alt = [continuation_logprob(lm, [ref[(a + j) % len(ref)] for a in at], continuations, batch_size)
           for j in range(1, others + 1)]
    out = []
    for i, c in enumerate(continuations):
        if not c:
            out.append(float("-inf"))
            continue
        base = torch.logsumexp(torch.tensor([a[i] for a in alt], dtype=torch.float64), 0) - math.log(others)
        out.append((own[i] - float(base)) / len(c))
    return out
