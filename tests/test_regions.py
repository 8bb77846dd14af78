"""Linguistic regions: importance scores, Top/Bottom/Random/monolingual regions, exact zeroing,
hidden-dimension counts and single-parameter perturbation."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CharTokenizer, tiny_model
from langloc.data import FolderCorpus, corpus_windows
from langloc.errors import LanglocError
from langloc.models import load_model
from langloc.models.loading import bind
from langloc.regions import region_parameters, zeroed
from langloc.regions.ablation import region_ablation
from langloc.regions.dimensions import dimension_counts, entry_on_dimension, hidden_axis, perturbed
from langloc.regions.importance import compute_importance, load_importance
from langloc.regions.regions import Regions, build_regions, region_count, regions_from_scores
from tiny import save_tiny_llama, write_folder_corpus


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_model(str(save_tiny_llama(tmp_path_factory.mktemp("m") / "tiny")), device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return FolderCorpus(write_folder_corpus(tmp_path_factory.mktemp("c") / "corpus"))


# -- regions from scores: a hand example ------------------------------------------------------

def test_top_bottom_and_monolingual_regions_on_a_hand_example():
    # One 2x5 matrix, rate 0.2 -> k = 2 entries per region.
    en = torch.tensor([[9., 1., 0., 0., 5.], [0., 0., 8., 0., 0.]])
    fr = torch.tensor([[0., 7., 0., 0., 6.], [0., 0., 0., 3., 0.]])
    r = regions_from_scores({"en": {"w": en}, "fr": {"w": fr}}, rate=0.2)
    # core = en + fr = [[9, 8, 0, 0, 11], [0, 0, 8, 3, 0]]: top 2 = flat 4 (11), 0 (9)
    assert r["top"]["w"].tolist() == [0, 4]
    # smallest core values are the zeros at flat 2, 3, 5, 6, 9: ties go to the lower index
    assert r["bottom"]["w"].tolist() == [2, 3]
    # en's top 2 = {0, 7}; fr's top 2 = {1, 4}: disjoint, so each is monolingual
    assert r["mono:en"]["w"].tolist() == [0, 7]
    assert r["mono:fr"]["w"].tolist() == [1, 4]
    assert len(r["random"]["w"]) == 2 and len(set(r["random"]["w"].tolist())) == 2


def test_an_entry_top_for_two_languages_is_monolingual_for_neither():
    en = torch.tensor([[5., 4., 0., 0.]])
    fr = torch.tensor([[5., 0., 4., 0.]])
    r = regions_from_scores({"en": {"w": en}, "fr": {"w": fr}}, rate=0.5 - 1e-9, rounding="nearest")  # k = 2
    assert r["mono:en"]["w"].tolist() == [1]
    assert r["mono:fr"]["w"].tolist() == [2]


def test_region_size_rounds_down_like_the_reference():
    # 0.01 * 36 = 0.36 -> at least 1; 0.3 * 5 = 1.5 -> floor 1, nearest 2; 0.01 * 250 = 2.5 -> 2 / 2 (banker's)
    assert region_count(36, 0.01) == 1 and region_count(5, 0.3) == 1 and region_count(5, 0.3, "nearest") == 2
    assert region_count(1999, 0.01) == 19 and region_count(1999, 0.01, "nearest") == 20
    s = {"en": {"w": torch.arange(20.0).view(4, 5)}}
    assert len(regions_from_scores(s, rate=0.19)["top"]["w"]) == 3  # int(3.8)
    assert len(regions_from_scores(s, rate=0.19, rounding="nearest")["top"]["w"]) == 4
    with pytest.raises(LanglocError, match="rounding"):
        regions_from_scores(s, rounding="ceil")


def test_monolingual_bottom_regions():
    # Bottom 2 of en = {2, 3} (zeros, lower index first); of fr = {0, 3}; shared entry 3 drops out.
    en = torch.tensor([[5., 4., 0., 0.]])
    fr = torch.tensor([[0., 1., 2., 0.]])
    r = regions_from_scores({"en": {"w": en}, "fr": {"w": fr}}, rate=0.5 - 1e-9, rounding="nearest")
    assert r["mono-bottom:en"]["w"].tolist() == [2]
    assert r["mono-bottom:fr"]["w"].tolist() == [0]
    assert r["mono:en"]["w"].tolist() == [0] and r["mono:fr"]["w"].tolist() == [2]  # top 2: {0, 1} and {1, 2}
    assert not regions_from_scores({"en": {"w": en}, "fr": {"w": fr}}, monolingual=False).keys() & {"mono-bottom:en"}


def test_random_region_depends_on_the_seed_only():
    s = {"en": {"w": torch.rand(10, 10)}}
    assert torch.equal(regions_from_scores(s, seed=3)["random"]["w"], regions_from_scores(s, seed=3)["random"]["w"])
    assert not torch.equal(regions_from_scores(s, rate=0.2, seed=3)["random"]["w"],
                           regions_from_scores(s, rate=0.2, seed=4)["random"]["w"])


@pytest.mark.parametrize("rate", [0.0, 0.5, -1.0])
def test_out_of_range_rate_is_refused(rate):
    with pytest.raises(LanglocError, match="rate"):
        regions_from_scores({"en": {"w": torch.rand(4, 4)}}, rate=rate)


# -- importance -------------------------------------------------------------------------------

def _reference_scores(lm, windows):
    """|θ · ∂(mean token NLL)/∂θ| computed directly, one forward over all windows."""
    params = region_parameters(lm)
    lm.model.zero_grad()
    logits = lm.model(input_ids=windows).logits
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), windows[:, 1:].flatten())
    grads = torch.autograd.grad(loss, list(params.values()))
    return {name: (p.detach() * g).abs() for (name, p), g in zip(params.items(), grads)}


def test_importance_is_theta_times_the_gradient_of_the_mean_nll(lm, corpus, tmp_path):
    out = compute_importance(lm, corpus, ["en", "fr"], tmp_path / "imp", tokens=256, window=64, batch_size=1,
                             precision="float32", progress=False)
    scores, info = load_importance(out, lm=lm)
    assert info["languages"] == ["en", "fr"]
    for lang in ("en", "fr"):
        ref = _reference_scores(lm, corpus_windows(lm, corpus, lang, "stats", window=64, max_tokens=256))
        assert set(scores[lang]) == set(ref)
        for name in ref:
            torch.testing.assert_close(scores[lang][name], ref[name], rtol=1e-4, atol=1e-9)
    # The model is left as it was: no gradients, parameters' requires_grad unchanged.
    assert all(p.grad is None and p.requires_grad for p in lm.model.parameters())


def test_importance_resumes_after_an_interruption(lm, corpus, tmp_path, monkeypatch):
    from langloc.regions import importance as imp

    straight = compute_importance(lm, corpus, ["en"], tmp_path / "a", tokens=384, window=64, batch_size=1,
                                  precision="float32", progress=False)
    calls = {"n": 0}
    real = imp._batch_nll_sum

    def dies_at_the_fourth_batch(model, ids):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(model, ids)

    monkeypatch.setattr(imp, "_batch_nll_sum", dies_at_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        compute_importance(lm, corpus, ["en"], tmp_path / "b", tokens=384, window=64, batch_size=1,
                           precision="float32", checkpoint_every=1, progress=False)
    with pytest.raises(LanglocError, match="--resume"):
        compute_importance(lm, corpus, ["en"], tmp_path / "b", tokens=384, window=64, batch_size=1,
                           precision="float32", checkpoint_every=1, progress=False)
    monkeypatch.setattr(imp, "_batch_nll_sum", real)
    compute_importance(lm, corpus, ["en"], tmp_path / "b", tokens=384, window=64, batch_size=1,
                       precision="float32", checkpoint_every=1, resume=True, progress=False)
    a, _ = load_importance(straight)
    b, _ = load_importance(tmp_path / "b")
    assert all(torch.equal(a["en"][n], b["en"][n]) for n in a["en"])


def test_importance_refuses_a_folder_of_another_model(lm, corpus, tmp_path):
    out = compute_importance(lm, corpus, ["en"], tmp_path / "imp", tokens=128, window=64, progress=False)
    other = bind(tiny_model("llama", layers=2, width=64, seed=5), CharTokenizer(), "other")
    with pytest.raises(LanglocError, match="made for"):
        load_importance(out, lm=other)


# -- region files, zeroing, ablation ------------------------------------------------------------

def test_region_file_roundtrip_and_refusal(lm, corpus, tmp_path):
    out = compute_importance(lm, corpus, ["en", "fr"], tmp_path / "imp", tokens=128, window=64, progress=False)
    regions = build_regions(out, rate=0.05, lm=lm)
    assert regions.names == ["top", "bottom", "random", "mono:en", "mono:fr", "mono-bottom:en", "mono-bottom:fr"]
    params = region_parameters(lm)
    for name in ("top", "bottom", "random"):
        assert {n: len(i) for n, i in regions[name].items()} == {n: int(0.05 * p.numel()) for n, p in params.items()}
    path = regions.save(tmp_path / "regions.safetensors")
    back = Regions.load(path)
    assert back.meta["rate"] == 0.05 and back.names == regions.names
    assert all(torch.equal(back["top"][n], regions["top"][n]) for n in params)
    back.check_model(lm)
    other = bind(tiny_model("llama", layers=2, width=64, seed=5), CharTokenizer(), "other")
    with pytest.raises(LanglocError, match="made for"):
        back.check_model(other)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LanglocError, match="unreadable"):
        Regions.load(path)


def test_zeroing_a_region_zeroes_exactly_it_and_restores_bit_for_bit(lm):
    params = region_parameters(lm)
    name = next(iter(params))
    before = {n: p.detach().clone() for n, p in params.items()}
    region = {name: torch.tensor([0, 5, 17])}
    with zeroed(lm, region):
        flat = params[name].detach().view(-1)
        assert flat[[0, 5, 17]].eq(0).all()
        changed = (params[name].detach() != before[name]).view(-1).nonzero().flatten().tolist()
        assert set(changed) <= {0, 5, 17}
    assert all(torch.equal(params[n].detach(), before[n]) for n in params)
    with pytest.raises(LanglocError, match="outside"):
        with zeroed(lm, {name: torch.tensor([params[name].numel()])}):
            pass


def test_region_ablation_rows(lm, corpus, tmp_path):
    out = compute_importance(lm, corpus, ["en", "fr"], tmp_path / "imp", tokens=128, window=64, progress=False)
    regions = build_regions(out, rate=0.05, lm=lm)
    rows = region_ablation(lm, regions, corpus, languages=["en", "fr"], eval_tokens=128, window=64, progress=False)
    assert [(r.deactivated, r.evaluated) for r in rows][:2] == [("top", "en"), ("top", "fr")]
    assert {r.deactivated for r in rows} == {"top", "bottom", "random", "mono:en", "mono:fr"}
    assert all(r.ppl > 0 and r.base_ppl > 0 for r in rows)


# -- dimensions and perturbation ----------------------------------------------------------------

def test_hidden_axis_reads_and_writes():
    llama = bind(tiny_model("llama"), CharTokenizer(), "llama")
    assert hidden_axis(llama, "model.layers.0.mlp.gate_proj.weight", (48, 32)) == 1   # reads: [I, hidden]
    assert hidden_axis(llama, "model.layers.0.mlp.down_proj.weight", (32, 48)) == 0   # writes: [hidden, I]
    gpt2 = bind(tiny_model("gpt2"), CharTokenizer(), "gpt2")
    assert hidden_axis(gpt2, "transformer.h.0.mlp.c_fc.weight", (32, 48)) == 0        # Conv1D [in, out]
    assert hidden_axis(gpt2, "transformer.h.0.mlp.c_proj.weight", (48, 32)) == 1


def test_dimension_counts_of_a_region_on_one_dimension():
    lm = bind(tiny_model("llama"), CharTokenizer(), "llama")
    gate = "model.layers.0.mlp.gate_proj.weight"   # [48, 32]: column d is hidden dimension d
    down = "model.layers.1.mlp.down_proj.weight"   # [32, 48]: row d is hidden dimension d
    region = {gate: torch.tensor([3, 32 + 3, 2 * 32 + 3]), down: torch.tensor([3 * 48, 3 * 48 + 1, 5 * 48])}
    counts = dimension_counts(lm, region)
    assert counts[3] == 5 and counts[5] == 1 and counts.sum() == 6


def test_perturbing_one_entry_or_a_dimension_and_restoring():
    lm = bind(tiny_model("llama"), CharTokenizer(), "llama")
    name = "model.layers.0.mlp.down_proj.weight"
    w = dict(lm.model.named_parameters())[name]
    before = w.detach().clone()
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    base = lm.model(input_ids=ids).logits
    with perturbed(lm, name, 7, scale=4.0):
        assert w.view(-1)[7] == before.view(-1)[7] * 4
        assert ((w != before).view(-1).nonzero().flatten().tolist()) in ([7], [])
        assert not torch.equal(lm.model(input_ids=ids).logits, base)
    with perturbed(lm, name, dim=2, value=0.0):
        assert w[2].eq(0).all() and torch.equal(w[3], before[3])
    assert torch.equal(w, before)
    assert torch.equal(lm.model(input_ids=ids).logits, base)
    entry = entry_on_dimension(lm, name, 2)
    assert entry // 48 == 2 and abs(before.view(-1)[entry]) == before[2].abs().max()
    with pytest.raises(LanglocError, match="exactly one"):
        with perturbed(lm, name, 7):
            pass


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=200), st.data())
def test_region_selection_is_a_stable_sorts_first_k_ties_to_the_lower_index(values, data):
    """The regions pick entries by selection (kthvalue), not by sorting; with scores full of
    ties (bfloat16 makes them common at the boundary) the pick is the stable sort's, exactly."""
    from langloc.regions.regions import _bottom, _top

    scores = torch.tensor(values, dtype=torch.float32).view(1, -1)
    k = data.draw(st.integers(1, len(values)))
    flat = scores.flatten()
    assert torch.equal(_top(scores, k), torch.sort(flat, descending=True, stable=True).indices[:k].sort().values)
    assert torch.equal(_bottom(scores, k), torch.sort(flat, stable=True).indices[:k].sort().values)
