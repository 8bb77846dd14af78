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
    # Worst: both negatives tie at 1, both positives at 0: one threshold with precision 2/4.
    assert ap[0].item() == 1.0 and ap[1].item() == pytest.approx(2 / 4)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-1.0, 0.0, 0.0, 0.5, 2.0]) | st.floats(-5, 5, allow_nan=False),
                          st.booleans()), min_size=2, max_size=30))
def test_average_precision_matches_sklearn(rows):
    # Many exact ties (zeros, as a ReLU gives): sklearn's average_precision_score, the
    # reference code's, treats equal scores as one threshold.
    from sklearn.metrics import average_precision_score

    scores = torch.tensor([[s] for s, _ in rows], dtype=torch.float64)
    pos = torch.tensor([p for _, p in rows])
    if pos.all() or not pos.any():
        return
    expected = average_precision_score(pos.numpy().astype(int), scores[:, 0].numpy())
    assert average_precision(scores, pos).item() == pytest.approx(expected, abs=1e-12)


def test_average_precision_ties_share_one_threshold():
    # A constant unit: every segment ties, so precision is the share of positives whatever the
    # order (a rank-by-rank AP gave 1.0 / 0.31 / 0.19 for the first / second / third language).
    labels = torch.arange(3).repeat_interleave(4)  # 3 languages x 4 segments, in language order
    const = torch.zeros(12, 1)
    for k in range(3):
        assert average_precision(const, labels == k).item() == pytest.approx(1 / 3, abs=1e-15)
    # Partly tied: scores 2,2,1,1 with labels +,-,-,+: thresholds 2 (P 1/2, R 1/2) and 1 (P 2/4, R 1).
    s = torch.tensor([[2.0], [2.0], [1.0], [1.0]])
    assert average_precision(s, torch.tensor([True, False, False, True])).item() == pytest.approx(0.5)
    assert average_precision(s, torch.tensor([False, True, True, False])).item() == pytest.approx(0.5)


def test_expert_units_do_not_depend_on_segment_or_language_order():
    # Units with many exact ties (a ReLU-like zero floor, constant units, two-valued units):
    # permuting the segments within each language and the order of the languages leaves every
    # AP bit-identical and every set unchanged.
    g = torch.Generator().manual_seed(3)
    langs = ["a", "b", "c"]
    resp = {}
    for k, lang in enumerate(langs):
        r = torch.relu(torch.randn(12, 2, 16, generator=g) - 0.3 + 0.5 * k * (torch.arange(16) % 3 == 0))
        r[:, :, 0] = 1.0  # constant: ties everywhere
        r[:, :, 1] = (torch.arange(12) % 2).float().view(12, 1)  # two values
        resp[lang] = r
    base, med = expert_units(resp, n=8)
    for trial in range(3):
        perm = torch.Generator().manual_seed(10 + trial)
        order = [langs[i] for i in torch.randperm(3, generator=perm).tolist()]
        shuffled = {lang: resp[lang][torch.randperm(12, generator=perm)] for lang in order}
        ns, med2 = expert_units(shuffled, n=8)
        for lang in langs:
            assert [t.tolist() for t in ns.layers(lang)] == [t.tolist() for t in base.layers(lang)]
            assert ns.params["ap"][lang] == base.params["ap"][lang]
            assert torch.equal(med2[lang], med[lang])
    # The constant unit's AP is 1/3 for every language (stable rank-by-rank AP gave 1.0 for "a").
    flat = torch.cat([resp[x].reshape(12, -1) for x in langs])
    labels = torch.arange(3).repeat_interleave(12)
    for k in range(3):
        assert average_precision(flat[:, :1], labels == k).item() == pytest.approx(1 / 3)


def test_median_response_is_numpy_percentile_50():
    import numpy as np

    from langloc.identify.expert_units import percentile_median

    g = torch.Generator().manual_seed(0)
    for S in (1, 2, 5, 6):
        x = torch.randn(S, 3, 7, generator=g)
        expected = torch.from_numpy(np.percentile(x.double().numpy(), 50, axis=0)).float()
        assert torch.allclose(percentile_median(x), expected, atol=1e-7)
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    assert percentile_median(x).item() == 2.0  # torch.median would give 1.0


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
    # np.percentile's median: 20 segments, the mean of the 10th and 11th values.
    srt = a.sort(0).values
    assert torch.allclose(medians["a"], (srt[9] + srt[10]) / 2)
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
