"""Sharing categories of neurons on parallel inputs (Wang et al. 2024, "Sharing Matters").

For one item (the same input in K languages) a neuron is *activated* in a language if its
activation exceeds ``threshold`` (default 0). With s = the number of languages where it is
activated:

==================  ===============
category            s
==================  ===============
``all_shared``      s = K
``partial_shared``  2 <= s <= K - 1
``specific``        s = 1
``non_activated``   s = 0
==================  ===============

(With K = 2 there is no partial-shared neuron.) Which activation: by default the last prompt
token's (the paper's choice); with ``position="all"`` the mean over the prompt's tokens, or
with ``reduce="max"`` the maximum, which classifies a neuron as activated if *any* token
exceeds the threshold (:mod:`langloc.share.capture`).

Per task: the share of each category per layer, averaged over items (every item counts
equally; each layer has the same number of neurons, so this is also the pooled share), and
per neuron its *modal* category over the items and its *stability*, the fraction of items
in which it falls in that modal category (1 = always the same category). Ties between
categories go to the one listed first above.
"""

from __future__ import annotations

import math

import torch

from langloc.errors import LanglocError

CATEGORIES = ("all_shared", "partial_shared", "specific", "non_activated")
ALL_SHARED, PARTIAL_SHARED, SPECIFIC, NON_ACTIVATED = range(4)


def check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise LanglocError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise LanglocError(f"threshold must be finite, got {threshold}")
    return value


def classify(acts: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Category codes (int8, indices into :data:`CATEGORIES`) of activations ``[K, ..., I]``
    of one item in K languages; the result has the shape ``[..., I]``."""
    threshold = check_threshold(threshold)
    K = acts.shape[0]
    if K < 2:
        raise LanglocError(f"sharing categories need at least 2 languages, got {K}")
    s = (acts > threshold).sum(0)
    codes = torch.full(s.shape, PARTIAL_SHARED, dtype=torch.int8)
    codes[s == K] = ALL_SHARED
    codes[s == 1] = SPECIFIC
    codes[s == 0] = NON_ACTIVATED
    return codes


def category_counts(codes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` int64: for codes ``[N, ...]`` of N items, how many items put each neuron
    into each category."""
    if codes.dim() < 1 or codes.shape[0] == 0:
        raise LanglocError("no items to count")
    return torch.stack([(codes == c).sum(0) for c in range(len(CATEGORIES))], -1)


def category_shares(codes: torch.Tensor) -> torch.Tensor:
    """``[L, 4]`` float64: for codes ``[N, L, I]``, the share of each category among a layer's
    neurons, averaged over the N items. Rows sum to 1."""
    if codes.dim() != 3 or codes.shape[0] == 0:
        raise LanglocError(f"expected codes [items, layers, neurons], got shape {tuple(codes.shape)}")
    per_item = torch.stack([(codes == c).double().mean(-1) for c in range(len(CATEGORIES))], -1)  # [N, L, 4]
    return per_item.mean(0)


def stability(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For codes ``[N, ...]``: the modal category of each neuron ``[...]`` (int8), the fraction
    of items in that category ``[...]`` (float64), and the counts ``[..., 4]``."""
    counts = category_counts(codes)
    modal = counts.argmax(-1)  # the first maximum: ties go to the category listed first
    frac = counts.gather(-1, modal.unsqueeze(-1)).squeeze(-1).double() / codes.shape[0]
    return modal.to(torch.int8), frac, counts


def modal_neurons(modal: torch.Tensor, category: int | str) -> list[torch.Tensor]:
    """Per layer, the neurons (sorted LongTensor) whose modal category is ``category``."""
    c = CATEGORIES.index(category) if isinstance(category, str) else int(category)
    return [torch.nonzero(row == c).flatten() for row in modal]
