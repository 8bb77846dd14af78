"""Thresholding, expert units (average precision), quantile sketches and set comparison,
each checked against a hand-computed example or a direct computation."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import CharTokenizer, tiny_model
from langloc.errors import LanglocError
from langloc.identify import NeuronSet
from langloc.identify.compare import compare_sets
from langloc.identify.expert_units import average_precision, expert_units
from langloc.identify.thresholding import threshold_neurons
from langloc.intervene.values import neuron_values, parse_source
from langloc.models.loading import bind
from langloc.stats.quantiles import BINS, HI, LO, histogram_quantile, neuron_quantiles


def test_thresholding_hand_example():
    # 2 languages, 1 layer, 4 neurons, 100 tokens each.
    over_zero = torch.tensor([[[90, 80, 10, 50]], [[85, 5, 70, 50]]])
    n = torch.tensor([100, 100])
    ns = threshold_neurons(over_zero, n, ["a", "b"], rate=0.5)  # 2 per language
    assert ns.layers("a")[0].tolist() == [0, 1] and ns.layers("b")[0].tolist() == [0, 2]
    # Keep only neurons rarely active elsewhere: neuron 0 (0.85 / 0.90 elsewhere) drops out.
    ns = threshold_neurons(over_zero, n, ["a", "b"], rate=0.5, other_max=0.5)
    assert ns.layers("a")[0].tolist() == [1, 3] and ns.layers("b")[0].tolist() == [2, 3]
    assert ns.method == "thresholding" and ns.params["per_language"] == 2


def test_thresholding_rejects_bad_input():
    with pytest.raises(LanglocError, match="rate"):
        threshold_neurons(torch.ones(2, 1, 4, dtype=torch.long), torch.tensor([2, 2]), ["a", "b"], rate=0)
    with pytest.raises(LanglocError, match="positive token count"):
        threshold_neurons(torch.ones(2, 1, 4, dtype=torch.long), torch.tensor([2, 0]), ["a", "b"])


def test_average_precision_hand_example():
    # Ranking by score: rows 0 (+), 2 (-), 1 (+), 3 (-): AP = (1/1 + 2/3) / 2 = 5/6.
    scores = torch.tensor([[0.9], [0.5], [0.7], [0.1]])
    pos = torch.tensor([True, True, False, False])
    assert average_precision(scores, pos).item() == pytest.approx(5 / 6)
    # Perfect and worst detectors.
    both = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ap = average_precision(both, pos)
    assert ap[0].item() == 1.0 and ap[1].item() == pytest.approx((1 / 3 + 2 / 4) / 2)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5, allow_nan=False), st.booleans()), min_size=2, max_size=30))
def test_average_precision_matches_its_definition(rows):
    scores = torch.tensor([[s] for s, _ in rows], dtype=torch.float64)
    pos = torch.tensor([p for _, p in rows])
    if pos.all() or not pos.any():
        return
    order = sorted(range(len(rows)), key=lambda i: -rows[i][0])  # Python's sort is stable too
    hits, total = 0, 0.0
    for rank, i in enumerate(order, 1):
        if rows[i][1]:
            hits += 1
            total += hits / rank
    assert average_precision(scores, pos).item() == pytest.approx(total / int(pos.sum()))


def test_expert_units_take_top_and_bottom_by_ap():
    # 1 layer, 6 units; language a's segments respond strongly on unit 0 and weakly on unit 5.
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20, 1, 6, generator=g)
    b = torch.rand(20, 1, 6, generator=g)
    a[:, 0, 0] += 10
    a[:, 0, 5] -= 10
    ns, medians = expert_units({"a": a, "b": b}, n=2)
    assert ns.layers("a")[0].tolist() == [0, 5]
    assert ns.layers("b")[0].tolist() == [0, 5]  # the mirror image: b lacks what a has
    assert torch.equal(medians["a"], a.median(0).values)
    with pytest.raises(LanglocError, match="even number"):
        expert_units({"a": a, "b": b}, n=3)


def test_histogram_quantiles_are_within_one_bin_of_exact():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(5000) * 0.1, torch.rand(3000) * 40 - 0.2, torch.zeros(500)])
    x = x[torch.randperm(len(x))]
    b = ((torch.asinh(x) - LO) * (BINS / (HI - LO))).floor().clamp(0, BINS - 1).long()
    hist = torch.bincount(b, minlength=BINS).unsqueeze(0)
    width = (HI - LO) / BINS
    for q in (0.05, 0.5, 0.75, 0.9, 0.99):
        est = histogram_quantile(hist, q).item()
        exact = torch.quantile(x.double(), q).item()
        assert abs(torch.asinh(torch.tensor(est)) - torch.asinh(torch.tensor(exact))) <= width + 1e-6, q


def test_neuron_quantiles_on_a_model_match_exact_quantiles():
    lm = bind(tiny_model("llama"), CharTokenizer(), "tiny-llama")
    layers = [torch.tensor([0, 5]), torch.tensor([], dtype=torch.long), torch.tensor([7])]
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(3, 120, (2, 16), generator=g) for _ in range(3)]
    batches = [torch.cat([torch.ones(2, 1, dtype=torch.long), b], 1) for b in batches]  # BOS first
    got = neuron_quantiles(lm, batches, layers, [0.5, 0.9])
    seen = {0: [], 2: []}
    hooks = [lm.neuron_modules[i].register_forward_hook(
        lambda m, a, o, i=i: seen[i].append(o[:, 1:].reshape(-1, o.shape[-1]))) for i in seen]
    with torch.no_grad():
        for b in batches:
            lm.body(input_ids=b)
    for h in hooks:
        h.remove()
    width = (HI - LO) / BINS
    for layer in (0, 2):
        acts = torch.cat(seen[layer])[:, layers[layer]]
        for q in (0.5, 0.9):
            exact = torch.quantile(acts.double(), q, dim=0)
            assert (torch.asinh(got[q][layer].double()) - torch.asinh(exact)).abs().max() <= width + 1e-6
    assert got[0.5][1].numel() == 0


def test_value_sources_parse():
    assert parse_source("median") == ("quantile", 0.5)
    assert parse_source("p90") == ("quantile", 0.9)
    assert parse_source("p97.5") == ("quantile", 0.975)
    assert parse_source("-1.5") == ("constant", -1.5)
    assert parse_source("mean_active") == ("mean_active", None)
    with pytest.raises(LanglocError, match="unknown value source"):
        parse_source("loud")
    vals = neuron_values("3", [torch.tensor([1, 2]), torch.tensor([], dtype=torch.long)], "en")
    assert vals[0].tolist() == [3.0, 3.0] and vals[1].numel() == 0
    with pytest.raises(LanglocError, match="needs a statistics run"):
        neuron_values("mean_active", [torch.tensor([1])], "en")


def test_compare_counts_and_jaccard():
    a = NeuronSet({"x": [torch.tensor([0, 1, 2]), torch.tensor([], dtype=torch.long)]}, 2, 8, method="a")
    b = NeuronSet({"x": [torch.tensor([1, 2, 3, 4]), torch.tensor([], dtype=torch.long)]}, 2, 8, method="b")
    rows = compare_sets({"a": a, "b": b})
    by_layer = {r["layer"]: r for r in rows}
    assert by_layer[0]["shared"] == 2 and by_layer[0]["jaccard"] == pytest.approx(2 / 5)
    assert by_layer[1]["jaccard"] is None  # both empty
    assert by_layer["all"]["size_a"] == 3 and by_layer["all"]["size_b"] == 4
    with pytest.raises(LanglocError, match="at least two"):
        compare_sets({"a": a})
