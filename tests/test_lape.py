"""LAPE is exactly docs/methods.md §1: a hand-computed example and an independent literal version."""

import numpy as np
import pytest
import torch

from langloc.errors import LanglocError
from langloc.identify import lape

# p[k, l, j] for languages a, b, c over 2 layers x 4 neurons, with n = 10 tokens each.
P = {
    "a": [[0.9, 0.5, 0.0, 0.1], [0.0, 0.3, 0.0, 0.4]],
    "b": [[0.0, 0.5, 0.8, 0.1], [0.0, 0.2, 0.0, 0.0]],
    "c": [[0.0, 0.5, 0.7, 0.0], [0.6, 0.1, 0.0, 0.2]],
}
LANGS = ["a", "b", "c"]
OVER_ZERO = torch.tensor([P[k] for k in LANGS]).mul(10).round().long()
N = torch.tensor([10, 10, 10])


def as_lists(ns):
    return {lang: [idx.tolist() for idx in ns.layers(lang)] for lang in ns.languages}


def test_hand_computed_example():
    # 24 values of p sorted: ten 0s, 0.1 x3, 0.2 x2, 0.3, 0.4, 0.5 x3, 0.6, 0.7, 0.8, 0.9.
    # filter_rate 0.75 -> k = 18 -> tau = 0.5: eligible neurons are (0,0) 0.9, (0,2) 0.8, (1,0) 0.6.
    # Entropies: (0,0) and (1,0) are 0, (0,2) is H(8/15, 7/15) > 0. top_rate 0.375 keeps all three.
    # activation_bar_ratio 0.75 -> bar 0.5: (0,0) -> a; (0,2) -> b and c; (1,0) -> c.
    ns = lape(OVER_ZERO, N, LANGS, top_rate=0.375, filter_rate=0.75, activation_bar_ratio=0.75)
    assert as_lists(ns) == {"a": [[0], []], "b": [[2], []], "c": [[2], [0]]}
    assert ns.params["filter_threshold"] == pytest.approx(0.5)


def test_top_rate_keeps_lowest_entropy_and_bar_is_separate_parameter():
    # top_rate 0.25 -> round(2) neurons: the two zero-entropy ones.
    ns = lape(OVER_ZERO, N, LANGS, top_rate=0.25, filter_rate=0.75, activation_bar_ratio=0.75)
    assert as_lists(ns) == {"a": [[0], []], "b": [[], []], "c": [[], [0]]}
    # A higher bar (k = round(21.6) = 22 -> 0.7) drops c from (0,2) and (1,0), not the selection.
    ns = lape(OVER_ZERO, N, LANGS, top_rate=0.375, filter_rate=0.75, activation_bar_ratio=0.9)
    assert as_lists(ns) == {"a": [[0], []], "b": [[2], []], "c": [[], []]}
    assert ns.params["selected"] == 3


def literal_lape(over_zero, n, top_rate, filter_rate, bar_ratio):
    """docs/methods.md §1 written out with numpy loops, independently of langloc's tensor code."""
    K, L, I = over_zero.shape
    p = over_zero / n[:, None, None]
    flat = np.sort(p.flatten())
    tau = flat[min(max(round(len(flat) * filter_rate), 1), len(flat)) - 1]
    bar = flat[min(max(round(len(flat) * bar_ratio), 1), len(flat)) - 1]
    scored = []
    for layer in range(L):
        for j in range(I):
            col = p[:, layer, j]
            if col.max() <= tau:
                continue
            s = col.sum()
            q = col / s if s > 0 else np.zeros(K)
            h = -sum(x * np.log(x) for x in q if x > 0)
            scored.append((h, layer * I + j))
    scored.sort()
    kept = scored[: round(top_rate * L * I)]
    out = [[[] for _ in range(L)] for _ in range(K)]
    for _, flat_idx in kept:
        layer, j = divmod(flat_idx, I)
        for k in range(K):
            if p[k, layer, j] > bar:
                out[k][layer].append(j)
    return [[sorted(x) for x in langs] for langs in out]


@pytest.mark.parametrize("seed", range(5))
def test_matches_literal_implementation_on_random_counts(seed):
    g = torch.Generator().manual_seed(seed)
    K, L, I = 4, 3, 50
    n = torch.randint(1000, 5000, (K,), generator=g)
    # Skewed counts so that some neurons are language-specific; values unique with high probability.
    over_zero = (torch.rand(K, L, I, generator=g) ** 3 * n.view(-1, 1, 1)).long()
    ns = lape(over_zero, n, list("wxyz"), top_rate=0.1, filter_rate=0.8, activation_bar_ratio=0.7)
    expect = literal_lape(over_zero.numpy().astype(float), n.numpy().astype(float), 0.1, 0.8, 0.7)
    assert [[idx.tolist() for idx in ns.layers(lang)] for lang in "wxyz"] == expect


@pytest.mark.parametrize("kwargs, message", [
    ({"top_rate": 0.0}, "top_rate"),
    ({"top_rate": 1.5}, "top_rate"),
    ({"filter_rate": -0.1}, "filter_rate"),
    ({"activation_bar_ratio": 2}, "activation_bar_ratio"),
])
def test_out_of_range_parameters_are_refused(kwargs, message):
    with pytest.raises(LanglocError, match=message):
        lape(OVER_ZERO, N, LANGS, **kwargs)


def test_needs_two_languages_and_positive_counts():
    with pytest.raises(LanglocError, match="at least two"):
        lape(OVER_ZERO[:1], N[:1], ["a"])
    with pytest.raises(LanglocError, match="positive token count"):
        lape(OVER_ZERO, torch.tensor([10, 0, 10]), LANGS)
