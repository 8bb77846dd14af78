"""Steering: the search grid (what it tries, gentle first) and the strict judge, whose every
criterion rejects a hand-made failing output while a clean native one passes."""

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langloc.errors import LanglocError
from langloc.steer.judge import LanguageIdentifier, StrictRule, chunks, native_k, script_share, target_share
from langloc.evaluate.intervals import rate_ci
from langloc.steer.search import axes, edge_search, flat
from langloc.steer.steering import DirectionSetting, LayerGroupError, ResidualSetting, SteerSetting, layer_group, parse_setting
from langloc.steer.evaluation import GridSpec


def test_grid_tries_each_rule_and_mode_gentle_first():
    spec = GridSpec(rules={"set": (1.0, 2.0), "add": (1.0,), "scale": (2.0,)}, modes=("on", "on+off", "off"),
                    positions=("all", "generated"))
    labels = [s.label() for s in spec.neuron_grid("mean_active", with_source=True)]
    assert labels[:6] == ["on(mean_activex1)", "on(mean_activex2)", "on(+mean_activex1)", "on(x2)",
                          "on(mean_activex1)+off", "on(mean_activex2)+off"]
    assert labels[8] == "off" and labels[9] == "on(mean_activex1)@generated" and len(labels) == 18
    # without the source language's neurons only `on` settings remain
    assert all(s.mode == "on" for s in spec.neuron_grid("p90", with_source=False))


def test_residual_grid_covers_layers_and_bands_times_alphas():
    spec = GridSpec(residual_layers=("6", "5-7"), alphas=(2.0, 4.0))
    assert [s.label() for s in spec.residual_grid(18)] == [
        "diffmean(L6x2)", "diffmean(L6x4)", "diffmean(L5-7x2)", "diffmean(L5-7x4)"]
    with pytest.raises(Exception, match="steering rule"):
        SteerSetting("on", 1.0, "mean_active", "all", "flip")
    with pytest.raises(Exception, match="at least one layer"):
        ResidualSetting(())


# -- defaults that scale with the model ----------------------------------------------------------
def test_a_decimal_point_makes_a_fraction_of_the_depth_and_an_integer_a_layer():
    assert layer_group("6", 18) == layer_group("6") == (6,)  # absolute: the same on every model
    assert layer_group("5-7") == (5, 6, 7) and layer_group("6,4") == (4, 6)
    assert layer_group("0.5", 18) == (9,) and layer_group("0.5", 32) == (16,)  # round(f x (L - 1)), halves up
    assert layer_group("0.0", 18) == (0,) and layer_group("1.0", 18) == (17,)
    assert layer_group("0.4-0.6", 18) == (7, 8, 9, 10) and layer_group("0.25,0.75", 9) == (2, 6)


@pytest.mark.parametrize("spec, why", [
    ("0.6-0.4", "a band runs from its lower end"),  # caught before resolving, where both ends could meet
    ("9-7", "a band runs from its lower end"),
    ("0.5,6", "layers and fractions mixed"),
    ("1.5", "fractions of the depth lie in 0.0..1.0"),
    ("six", "an integer is a layer index"),
    ("6,,", "an integer is a layer index"),
])
def test_a_layer_group_that_names_no_layers_says_why(spec, why):
    with pytest.raises(LayerGroupError, match=f"^{re.escape(spec)}: {why}"):
        layer_group(spec, 18)


@pytest.mark.parametrize("spec", ["0.4-6", "1.5", "7-5", "x", "0.5-", "-1", "6,,7", "0.2-0.4-0.6"])
def test_a_bad_layer_group_is_one_clear_error(spec):
    from langloc.studies import steer

    with pytest.raises(LanglocError, match=f"^--residual-layers: {re.escape(spec)}: "):  # then why, as above
        steer._layer_groups((spec,))


def test_the_default_layer_groups_sit_at_the_same_relative_depths_on_models_of_any_depth(tmp_path):
    from langloc.models.loading import load_model
    from langloc.studies import steer
    from tiny import save_tiny_llama

    spec = steer._spec(steer.Config(targets=("fr",)))  # the study's defaults, as a user gets them
    assert spec.residual_layers == GridSpec.residual_layers and spec.alphas == GridSpec.alphas
    assert all("." in g for g in spec.residual_layers)  # fractions, not layers fitted to one model
    depths = {}
    for n in (5, 9):
        lm = load_model(str(save_tiny_llama(tmp_path / f"tiny{n}", layers=n)), device="cpu")
        assert lm.num_layers == n
        depths[n] = {g: [l / (n - 1) for l in layer_group(g, lm.num_layers)] for g in spec.residual_layers}
    for g in spec.residual_layers:  # each group: the same share of the depth, within half a layer
        ends = [float(f) for f in g.split("-")]
        for n, d in depths.items():
            assert abs(d[g][0] - ends[0]) <= 0.5 / (n - 1) and abs(d[g][-1] - ends[-1]) <= 0.5 / (n - 1), (g, n, d[g])
    singles = [g for g in spec.residual_layers if "-" not in g]  # on these depths, exactly the same
    assert [depths[5][g] for g in singles] == [depths[9][g] for g in singles] == [[0.25], [0.5], [0.75]]


# -- a search that cannot silently stop at its edge ----------------------------------------------
def _peak(layer: float, log2_alpha: float):
    """A tuning score with one peak (a stand-in for the strict rate on tuning prompts)."""
    return lambda s: -(sum(s.layers) / len(s.layers) - layer) ** 2 - (math.log2(s.alpha) - log2_alpha) ** 2 \
        - 0.5 * (len(s.layers) - 1)


def test_the_search_goes_past_the_grid_edge_to_an_optimum_outside_it():
    spec = GridSpec()  # on 18 layers: L4, L9, L13, L7-10 x alpha 0.25, 0.5, 1
    grid = spec.residual_grid(18)
    seen = []
    found = edge_search(grid, lambda s: seen.append(s) or _peak(1, -4)(s), replace(spec.bounds, num_layers=18))
    assert found.best == ResidualSetting((1,), 1 / 16)  # outside the first grid on both axes
    assert found.best not in grid and not found.at_grid_edge and found.stops == []
    assert seen[:len(grid)] == grid and len(seen) == len(set(seen)) == len(found.scores)  # each scored once
    assert "alpha down to 0.03125" in found.extension() and "layers down to L0" in found.extension()
    # where the optimum lies past a bound, the search stops there and says so
    found = edge_search(grid, _peak(-3, -9), replace(spec.bounds, num_layers=18))
    assert found.best == ResidualSetting((0,), 1 / 64) and found.at_grid_edge
    assert found.stops == ["alpha down: at its bound (0.015625)", "layers down: at its bound (L0)"]
    # upward too: alpha doubled up to the cap, layers out to the last
    found = edge_search(grid, _peak(30, 5), replace(spec.bounds, num_layers=18))
    assert found.best == ResidualSetting((17,), 8.0) and found.at_grid_edge
    # an optimum inside the first grid: nothing beyond a neighbour on each side is tried
    found = edge_search(grid, _peak(9, -1), replace(spec.bounds, num_layers=18))
    assert found.best == ResidualSetting((9,), 0.5) and not found.at_grid_edge and found.extension() == ""


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([0, 1, 2, 3, 4, 13, 14, 15, 16, 17]), st.integers(-6, 3))
def test_the_search_finds_a_single_peak_anywhere_beyond_the_grid_within_its_bounds(layer, log2_alpha):
    spec = GridSpec()  # on 18 layers: single layers 4, 9, 13 (and the band 7-10) x alpha 1/4, 1/2, 1
    found = edge_search(spec.residual_grid(18), _peak(layer, log2_alpha), replace(spec.bounds, num_layers=18))
    assert found.best == ResidualSetting((layer,), 2.0 ** log2_alpha)
    assert found.at_grid_edge == (layer in (0, 17) or log2_alpha in (-6, 3))  # only a bound leaves it at an edge


def test_a_search_where_every_setting_scores_the_same_is_flat_and_takes_the_first_setting():
    spec = GridSpec()
    grid = spec.residual_grid(18)
    found = edge_search(grid, lambda s: (0.0, 0.0), replace(spec.bounds, num_layers=18))
    assert flat(list(found.scores.values())) and found.best == grid[0] and not found.at_grid_edge  # "no edge"
    assert not flat(list(edge_search(grid, _peak(9, -1), replace(spec.bounds, num_layers=18)).scores.values()))


def test_neuron_strengths_extend_too_and_scale_moves_its_excess_over_one():
    spec = GridSpec(rules={"set": (1.0, 2.0), "scale": (2.0,)})
    grid = spec.neuron_grid("mean_active", with_source=False)
    want = {"set": 8.0, "scale": 1.25}
    score = lambda s: -abs(math.log2(s.strength / want[s.rule])) if s.rule == "set" else -9  # noqa: E731
    found = edge_search(grid, score, spec.bounds)
    assert found.best == SteerSetting("on", 8.0, "mean_active", "all", "set") and not found.at_grid_edge
    found = edge_search(grid, lambda s: -abs(s.strength - 1.25) if s.rule == "scale" else -9, spec.bounds)
    assert found.best.strength == 1.25 and found.best.rule == "scale"  # 2 -> 1.5 -> 1.25: excess halved
    assert axes(SteerSetting("off")) == {}  # zeroing the source's neurons has no strength to move


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.builds(SteerSetting, mode=st.sampled_from(["on", "on+off", "off"]),
              strength=st.sampled_from([0.5, 1.0, 1.5, 2.0, 4.0, 1e-3]),
              value=st.sampled_from(["mean_active", "mean", "median", "p90", "p2.5", "median_response", "auto", "0.5"]),
              positions=st.sampled_from(["all", "prompt", "generated"]), rule=st.sampled_from(["set", "add", "scale"])),
    st.builds(ResidualSetting, layers=st.sampled_from([(6,), (5, 6, 7), (4, 6), (0,), (10, 11)]),
              alpha=st.sampled_from([0.5, 1.0, 4.0, 8.0]), positions=st.sampled_from(["all", "generated"])),
    st.builds(DirectionSetting, layers=st.sampled_from([(6,), (5, 6, 7), (4, 6)]),
              alpha=st.sampled_from([0.25, 1.0]), positions=st.sampled_from(["all", "prompt"]),
              method=st.sampled_from(["probe", "lda", "pca"]))))
def test_a_label_the_study_prints_gives_back_the_same_setting(setting):
    again = parse_setting(setting.label())
    assert again.label() == setting.label()
    if isinstance(setting, ResidualSetting):
        assert again == setting
    elif setting.mode != "off":  # `off` and `scale` labels carry no value: the parsed one is the default
        assert again == (setting if setting.rule != "scale" else replace(setting, value="mean_active"))


@pytest.mark.parametrize("label", ["on(mean_active)", "on()", "on(x)", "dm(L6x4)", "diffmean(6x4)", "on(x2)@middle",
                                   "svm(L6x1)", "probe(6x1)"])
def test_a_label_that_names_no_setting_is_one_clear_error(label):
    with pytest.raises(Exception, match="setting"):
        parse_setting(label)


def test_a_fixed_setting_takes_layers_as_fractions_of_the_depth_as_the_search_does():
    # the default groups' 0.5 is layer 9 of an 18-layer model and 14 of a 28-layer one (f (L - 1), halves up)
    assert parse_setting("diffmean(L0.5x0.25)", num_layers=18) == ResidualSetting((9,), 0.25)
    assert parse_setting("diffmean(L0.5x0.25)", num_layers=28) == ResidualSetting((14,), 0.25)
    assert parse_setting("pca(L0.4-0.6x1)@generated", num_layers=18).layers == (7, 8, 9, 10)
    assert parse_setting("diffmean(L6x4)") == ResidualSetting((6,), 4.0)  # absolute layers need no depth
    with pytest.raises(LanglocError, match="needs the model's number of layers"):
        parse_setting("diffmean(L0.5x1)")
    with pytest.raises(LanglocError, match="layers and fractions mixed"):
        parse_setting("diffmean(L0.5,6x1)", num_layers=18)


def test_steer_resolves_a_fractional_fixed_setting_with_the_run_s_depth(steer_run, tmp_path):
    import csv
    import json

    from parallel import run_cli

    run, prompts = steer_run
    depth = json.loads((run / "run.json").read_text())["model"]["num_layers"]
    run_cli("steer", "-t", "fr", "--run-folder", run, "--prompts", prompts, "--fixed", "diffmean(L1.0x2)",
            "--max-new-tokens", "3", "--no-controls", "--no-relevance", "--device", "cpu", "-o", tmp_path / "out")
    (row,) = csv.DictReader((tmp_path / "out" / "summary.csv").open())
    assert row["setting"] == f"diffmean(L{depth - 1}x2)"  # 1.0: the last layer


def test_a_rate_interval_is_never_degenerate_at_zero_or_one():
    lo, hi = rate_ci(0, 36)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 36))  # 0 of 36: up to 9.7% (Clopper-Pearson)
    lo, hi = rate_ci(36, 36)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 36))


# -- the strict judge --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def identify():
    return LanguageIdentifier()


RULE = StrictRule(native_median={"fr": 10.0, "zh": 10.0, "ru": 10.0}, k=2.0)
TOKENS = list(range(20))  # enough distinct tokens: only the criterion under test can fail
FR = ("Le matin, je prends mon café sur la terrasse et je regarde les enfants qui partent à l'école. "
      "Ensuite je lis le journal avant de commencer ma journée de travail.")
ZH = "今天的天气很好，我们一起去公园散步。公园里有很多人在跑步，还有孩子们在玩游戏。"
RU = "Сегодня утром я пошёл в магазин и купил хлеб, молоко и немного фруктов для всей семьи."


def test_native_outputs_pass(identify):
    for text, lang in ((FR, "fr"), (ZH, "zh"), (RU, "ru")):
        v = RULE.verdict(text, TOKENS, 12.0, lang, identify)
        assert v["strict"], (lang, v)


def test_wrong_language_is_rejected(identify):
    v = RULE.verdict("The weather today is sunny and warm, so we walked along the river to the old bridge.",
                     TOKENS, 12.0, "fr", identify)
    assert not v["strict"] and "language" in v["strict_fails"]


def test_code_mixed_switch_is_rejected_though_the_whole_text_reads_as_the_target(identify):
    mixed = "We went to the market this morning and then nous avons acheté du pain, du fromage et des fruits pour le déjeuner."
    assert identify(mixed)[0] == "fr"  # the lenient judge, labelling the whole output, says French
    share, parts = target_share(mixed, "fr", identify)
    assert len(parts) >= 2 and share < 0.8
    v = RULE.verdict(mixed, TOKENS, 12.0, "fr", identify)
    assert not v["strict"] and v["strict_fails"] == ["language"]


def test_wrong_script_is_rejected(identify):
    # Russian written in Latin letters (translit): not the Cyrillic script
    translit = "Segodnya utrom ya poshyol v magazin i kupil khleb, moloko i nemnogo fruktov dlya vsey semi."
    assert script_share(translit, "ru") == 0.0 and script_share(RU, "ru") == 1.0
    v = RULE.verdict(translit, TOKENS, 12.0, "ru", identify)
    assert not v["strict"] and "script" in v["strict_fails"]
    assert script_share(FR, "fr") is None  # Latin targets: no script criterion


def test_gibberish_is_rejected_by_perplexity_and_loops_by_distinct_tokens(identify):
    # The same French text, at a perplexity above k x the native median, fails on fluency alone.
    v = RULE.verdict(FR, TOKENS, 2.0 * 10.0 + 0.5, "fr", identify)
    assert not v["strict"] and v["strict_fails"] == ["perplexity"]
    v = RULE.verdict(FR, TOKENS, float("inf"), "fr", identify)
    assert "perplexity" in v["strict_fails"]
    v = RULE.verdict(ZH, [5, 6] * 10, 3.0, "zh", identify)  # a loop: low perplexity, few distinct tokens
    assert not v["strict"] and v["strict_fails"] == ["repetitive_or_short"]


def test_chunks_split_sentences_and_long_runs():
    cs = chunks("one two three four five six seven eight nine ten eleven twelve. Short one.", words=8)
    assert cs == ["one two three four five six", "seven eight nine ten eleven twelve.", "Short one."]
    assert all(len(c) <= 16 for c in chunks(ZH, chars=16))
    assert chunks("... 123 !!") == []


def test_k_is_the_95th_percentile_of_native_ratios():
    ratios = [1.0] * 95 + [3.0] * 5
    assert math.isclose(native_k(ratios), 1.0 + (3.0 - 1.0) * 0.05, rel_tol=1e-9)
    assert native_k([1.0, float("inf"), 2.0]) == pytest.approx(1.95)


# -- decoding ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from langloc.models.loading import load_model
    from tiny import save_tiny_llama

    return load_model(str(save_tiny_llama(tmp_path_factory.mktemp("m") / "tiny")), device="cpu")


def test_sampling_is_seeded_and_top_k_is_only_what_was_asked(tiny_lm, monkeypatch):
    from langloc.steer.steering import Generation, generate

    prompts = ["the river flows", "le matin je"]
    texts = lambda **g: [o["text"] for o in generate(tiny_lm, prompts, Generation(max_new_tokens=12, **g))]
    greedy = texts()
    assert texts(do_sample=True, seed=3) == texts(do_sample=True, seed=3)  # deterministic for a seed
    assert texts(do_sample=True, seed=3) != texts(do_sample=True, seed=4)
    assert texts(do_sample=True, top_k=1, seed=5) == greedy  # top-1 sampling is greedy decoding
    # Without --top-k, no top-k filter at all: Hugging Face's own default of 50 must not slip in.
    seen = []
    original = type(tiny_lm.model).generate
    monkeypatch.setattr(type(tiny_lm.model), "generate", lambda self, **kw: seen.append(kw) or original(self, **kw))
    texts(do_sample=True)
    texts()
    assert seen[0]["top_k"] == 0 and seen[0]["temperature"] == 1.0 and seen[1]["top_k"] is None


def test_the_decoding_is_said_in_words_with_every_setting_that_shapes_it():
    from dataclasses import asdict

    from langloc.steer.steering import Generation, describe_decoding

    assert describe_decoding(asdict(Generation())) == "greedy; 32 new tokens"
    assert describe_decoding(asdict(Generation(do_sample=True, top_k=64, top_p=0.95, seed=3))) == \
        "sampled (temperature 1, top-p 0.95, top-k 64; seed 3); 32 new tokens"
    assert describe_decoding(asdict(Generation(repetition_penalty=1.3, no_repeat_ngram_size=3))) == \
        "greedy, repetition penalty 1.3, no repeated 3-gram; 32 new tokens"


def test_alpha_is_in_typical_residual_norms(tiny_lm):
    import torch

    from langloc.steer.diffmean import residual_norms
    from langloc.steer.evaluation import DiffMeanMethod

    prompts = ["the river flows", "le matin je", "In the beginning"]
    norms = residual_norms(tiny_lm, prompts, batch_size=2)  # padded batches: padding is left out
    tok = tiny_lm.tokenizer
    with torch.no_grad():  # the same medians from a plain forward pass per prompt, BOS left out
        states = [tiny_lm.model(**tok(p, return_tensors="pt"), output_hidden_states=True).hidden_states for p in prompts]
    direct = torch.cat([h[1][0, 1:].norm(dim=-1) for h in states]).median()  # layer 0's output (the last is normed)
    assert norms[0] == pytest.approx(float(direct), rel=1e-5)
    v = torch.randn(tiny_lm.num_layers, 32, dtype=torch.float64) * 1e-3  # a mean difference of any raw size
    edit = DiffMeanMethod(None, norms)._edit(tiny_lm, ResidualSetting((0, 1), 0.5), v, {})
    assert [float(e.norm()) for e in edit.vectors] == pytest.approx([0.5 * n for n in norms], rel=1e-5)
    assert float(torch.nn.functional.cosine_similarity(edit.vectors[1].double(), v[1], dim=0)) == pytest.approx(1.0)


def test_relevance_scores_only_the_continuation_and_is_zero_against_its_own_prompt(tiny_lm):
    import torch

    from langloc.steer.relevance import continuation_logprob, pmi

    tok = tiny_lm.tokenizer
    prompts, conts = ["the river flows", "le"], [tok("ing on", add_special_tokens=False)["input_ids"], [70, 71, 72]]
    batched = continuation_logprob(tiny_lm, prompts, conts, batch_size=2)  # right-padded together
    for p, c, got in zip(prompts, conts, batched):
        ids = torch.tensor([tok(p)["input_ids"] + c])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_lm.model(input_ids=ids).logits[0].double(), -1)
        n = ids.shape[1] - len(c)
        assert got == pytest.approx(sum(float(logp[n - 1 + k, t]) for k, t in enumerate(c)), abs=1e-4)
    # compared with copies of its own prompt, no continuation is more or less relevant: PMI 0
    assert pmi(tiny_lm, prompts[:1], conts[:1], others=2, reference=prompts[:1] * 3) == [pytest.approx(0.0, abs=1e-6)]


# -- relevance in the strict judge -------------------------------------------------------------
def test_the_strict_judge_rejects_an_output_copied_from_another_prompt(identify, monkeypatch):
    """The wiring, with the model's scoring replaced by a stand-in whose answer is known: a
    continuation is likely only after the prompt it was written for. (The tiny test model is
    random, so it cannot show relevance; the real scorer has its own test above.)"""
    import langloc.steer.judge as J
    import langloc.steer.relevance as R

    prompts = [f"topic {i}" for i in range(6)]
    monkeypatch.setattr(R, "continuation_logprob", lambda lm, ps, cs, batch_size=8: [
        0.0 if p == f"topic {c[-1]}" else -10.0 for p, c in zip(ps, cs)])
    monkeypatch.setattr(J, "text_perplexities", lambda lm, token_lists: [12.0] * len(token_lists))
    recs = [{"prompt": p, "text": FR, "tokens": TOKENS + [i]} for i, p in enumerate(prompts)]
    recs[3]["tokens"] = TOKENS + [4]  # prompt 3's output is the one written for prompt 4
    recs[5]["tokens"] = TOKENS + [4]  # prompt 5's too: it is compared with prompts 0-3, not with 4
    out = J.judge(recs, None, identify, "fr", J.FluencyRule(), RULE, R.Relevance(others=4))
    assert [r["relevant"] for r in out] == [True, True, True, False, True, False]
    assert [r["strict"] for r in out] == [True, True, True, False, True, False]
    assert out[3]["strict_fails"] == ["relevance"] and out[3]["pmi"] < 0 and out[0]["pmi"] > 0
    assert out[5]["pmi"] == pytest.approx(0.0)  # no better after its prompt than after the others: rejected
    assert J.summarise(out, "fr")["relevance_rate"] == pytest.approx(4 / 6)
    fresh = [{k: v for k, v in r.items() if k not in ("pmi", "relevant")} for r in recs[:1]]  # not yet judged
    off = J.judge(fresh, None, identify, "fr", J.FluencyRule(), RULE,
                  R.Relevance(on=False))
    assert "relevant" not in off[0] and off[0]["strict"] and J.summarise(off, "fr")["relevance_rate"] is None


def test_lazy_relevance_gives_the_same_strict_verdicts_and_scores_only_what_could_pass(identify, monkeypatch):
    """The search judges relevance lazily: only outputs that pass every other strict criterion
    are scored (5 passes each), and no strict verdict changes."""
    import langloc.steer.judge as J
    import langloc.steer.relevance as R

    prompts = [f"topic {i}" for i in range(6)]
    scored = []

    def stand_in(lm, ps, cs, batch_size=8):
        scored.extend(c[-1] for c in cs)
        return [0.0 if p == f"topic {c[-1]}" else -10.0 for p, c in zip(ps, cs)]

    monkeypatch.setattr(R, "continuation_logprob", stand_in)
    monkeypatch.setattr(J, "text_perplexities", lambda lm, token_lists: [1e6 if t[-1] == 1 else 12.0 for t in token_lists])
    recs = [{"prompt": p, "text": FR, "tokens": TOKENS + [i]} for i, p in enumerate(prompts)]
    recs[3]["tokens"] = TOKENS + [4]  # irrelevant: written for prompt 4
    fresh = lambda: [dict(r) for r in recs]
    full = J.judge(fresh(), None, identify, "fr", J.FluencyRule(), RULE, R.Relevance(others=4))
    scored.clear()
    lazy = J.judge(fresh(), None, identify, "fr", J.FluencyRule(), RULE, R.Relevance(others=4), lazy=True)
    assert [r["strict"] for r in lazy] == [r["strict"] for r in full] == [True, False, True, False, True, True]
    assert [r["strict_fails"] for r in lazy] == [r["strict_fails"] for r in full]
    assert 1 not in scored and "relevant" not in lazy[1]  # failed on perplexity: never scored for relevance
    assert lazy[3]["strict_fails"] == ["relevance"]
    assert J.summarise(lazy, "fr")["relevance_rate"] is None  # not measured on every output: no rate
    assert J.summarise(full, "fr")["relevance_rate"] == pytest.approx(5 / 6)


def test_relevance_and_perplexity_are_scored_with_the_steering_intervention_off(tiny_lm):
    import torch

    from langloc.intervene.intervention import Intervention, ResidualEdit
    from langloc.stats.counters import hidden_size
    from langloc.steer.judge import FluencyRule, judge
    from langloc.steer.relevance import Relevance

    tok = tiny_lm.tokenizer
    prompts = ["the river flows", "le matin je", "in the beginning", "and the people", "of the land", "with the word"]
    recs = [{"prompt": p, "text": "went on and on", "tokens": tok(f" went on {p}", add_special_tokens=False)["input_ids"]}
            for p in prompts]
    iv = Intervention([ResidualEdit.at(tiny_lm.num_layers, {0: torch.full((hidden_size(tiny_lm),), 3.0)}, {})])
    ids = tok(prompts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain_logits = tiny_lm.model(input_ids=ids).logits
        with iv.apply(tiny_lm):
            steered_logits = tiny_lm.model(input_ids=ids).logits
    assert not torch.allclose(plain_logits, steered_logits)  # the hook is live and changes the model

    def scores(records):
        out = judge(records, tiny_lm, LanguageIdentifier(), "fr", FluencyRule(), relevance=Relevance(others=4))
        return [(r["pmi"], r["relevant"], r["ppl"]) for r in out]

    plain = scores([dict(r) for r in recs])
    with iv.apply(tiny_lm):
        hooked = scores([dict(r) for r in recs])
    assert hooked == plain and all(p is not None for p, _, _ in plain)


def test_the_clas_score_is_the_harmonic_mean_of_language_control_and_relevance():
    from langloc.steer.judge import clas_score

    assert clas_score(0.8, 0.5) == pytest.approx(2 / (1 / 0.8 + 1 / 0.5))
    assert clas_score(1.0, 1.0) == 1.0 and clas_score(0.0, 0.9) == 0.0 and clas_score(0.0, 0.0) == 0.0
    assert clas_score(0.7, None) is None  # relevance off: no score rather than a wrong one


def test_the_relevance_validation_counts_every_pair_once_and_pools_them(tiny_lm):
    from langloc.steer.relevance import pmi
    from langloc.steer.relevance_validation import validate
    from langloc.steer.steering import Generation, generate
    from langloc.steer.prompts import builtin_prompts

    gen = Generation(max_new_tokens=4)
    rows = validate(tiny_lm, ["fr", "de"], gen)
    assert [r["language"] for r in rows] == ["fr", "de", "all"] and rows[-1]["n"] == rows[0]["n"] + rows[1]["n"]
    prompts = builtin_prompts("fr", "all")
    true = pmi(tiny_lm, prompts, [g["tokens"] for g in generate(tiny_lm, prompts, gen)])
    assert rows[0]["accepted_true"] == sum(v > 0 for v in true)  # the same criterion, the same pairs
    for r in rows:
        assert r["accept_lo"] <= r["accept_rate"] <= r["accept_hi"] and r["reject_lo"] <= r["reject_rate"] <= r["reject_hi"]
    assert rows[-1]["rejected_shuffled"] == rows[0]["rejected_shuffled"] + rows[1]["rejected_shuffled"]


# -- residual directions fitted on samples: probe, LDA, PCA --------------------------------------
def _two_languages(n=500, width=32, gap=4.0, seed=0):
    """Two Gaussian 'languages' (unit noise around an arbitrary common mean) whose means differ
    by ``gap`` along a known unit axis, not a coordinate axis."""
    import torch

    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(width, generator=g, dtype=torch.float64)
    axis /= axis.norm()
    centre = 5 * torch.randn(width, generator=g, dtype=torch.float64)
    source = centre + torch.randn(n, width, generator=g, dtype=torch.float64)
    target = centre + gap * axis + torch.randn(n, width, generator=g, dtype=torch.float64)
    return target, source, axis


@pytest.mark.parametrize("fit", ["probe", "lda", "pca"])
def test_each_fitted_direction_recovers_a_planted_language_axis_pointing_to_the_target(fit):
    from langloc.steer.directions import FIT

    target, source, axis = _two_languages()
    d = FIT[fit](target.float(), source.float())  # the sample is stored in reduced precision
    assert float(d.norm()) == pytest.approx(1.0)
    assert float(d @ axis) > 0.9  # cosine with the planted axis, and the sign: towards the target
    assert float(FIT[fit](source.float(), target.float()) @ axis) < -0.9  # swap the languages: it turns round


@pytest.mark.parametrize("fit", ["probe", "lda"])
def test_probe_and_lda_discount_an_axis_along_which_each_language_varies_widely(fit):
    """The means differ by 2 along e0 and by 2 along e1, but each language spreads with sd 10
    along e1: DiffMean points between them (45 degrees), the discriminants mostly along e0."""
    import torch

    from langloc.steer.directions import FIT

    g = torch.Generator().manual_seed(1)
    noise = lambda: torch.randn(2000, 8, generator=g, dtype=torch.float64) * torch.tensor([1, 10, 1, 1, 1, 1, 1, 1.0])  # noqa: E731
    source, target = noise(), noise() + torch.tensor([2, 2, 0, 0, 0, 0, 0, 0.0])
    diffmean = target.mean(0) - source.mean(0)
    assert float(diffmean[0] / diffmean.norm()) < 0.8
    assert float(FIT[fit](target, source)[0]) > 0.97


def test_lda_is_defined_with_fewer_samples_than_dimensions():
    from langloc.steer.directions import lda_direction

    target, source, axis = _two_languages(n=20, width=64, gap=8.0)
    assert float(lda_direction(target, source) @ axis) > 0.9  # the shrinkage makes Sigma_w invertible


def test_a_direction_method_steers_in_typical_norms_and_its_control_is_a_random_direction(tiny_lm, tmp_path):
    """probe/lda/pca steer as DiffMean does: alpha x n_l x the unit direction at the chosen
    layers; the control is a random direction of the same length, seeded, other for each draw."""
    import torch

    from langloc.stats.residual_sample import ResidualSamples
    from langloc.steer.directions import FIT, DirectionMethod
    from langloc.steer.steering import Steerer, ValueContext

    class Samples(ResidualSamples):  # two planted languages instead of a run folder
        def __init__(self):
            self.data = dict(zip(("fr", "en"), _two_languages(n=100, width=32)[:2]))

        def layer(self, lang, layer):
            return self.data[lang].float()

        def describe(self, languages):
            return {}

    norms = [3.0, 5.0]
    m = DirectionMethod(None, norms, "test", name="lda", samples=Samples())
    steerer = Steerer(tiny_lm, ValueContext())
    setting = m.grid(GridSpec(residual_layers=("1",), alphas=(0.5,)), "en")[0]
    assert setting.label() == "lda(L1x0.5)" and m.setting({"layers": [1], "alpha": 0.5}) == setting
    edit = m.intervention(steerer, setting, "fr", "en").edits[0]
    assert edit.vectors[0] is None and float(edit.vectors[1].norm()) == pytest.approx(2.5, rel=1e-5)
    expect = FIT["lda"](m.samples.data["fr"].float(), m.samples.data["en"].float())
    assert torch.allclose(edit.vectors[1].double() / 2.5, expect, atol=1e-5)
    controls = [m.control(steerer, setting, "fr", "en", seed=0, draw=d).edits[0].vectors[1] for d in (0, 0, 1)]
    assert float(controls[0].norm()) == pytest.approx(2.5, rel=1e-5) and torch.equal(controls[0], controls[1])
    assert not torch.equal(controls[0], controls[2]) and abs(float(controls[0].double() @ expect)) < 2.5 * 0.9


# -- the prompting baseline ----------------------------------------------------------------------
def _seen_inputs(lm, monkeypatch):
    """What the model's generate is given, decoded with its special tokens."""
    seen = []
    original = type(lm.model).generate
    monkeypatch.setattr(type(lm.model), "generate", lambda self, **kw: seen.append(
        [lm.tokenizer.decode(row[row != lm.tokenizer.pad_token_id]) for row in kw["input_ids"]]) or original(self, **kw))
    return seen


def test_prompting_without_a_chat_template_puts_a_plain_instruction_before_the_prompt(tiny_lm, monkeypatch):
    from langloc.steer.prompting import PromptIntervention, PromptingMethod, prompt_format
    from langloc.steer.steering import Generation, generate

    assert prompt_format(tiny_lm.tokenizer) == "plain"
    seen = _seen_inputs(tiny_lm, monkeypatch)
    iv = PromptingMethod(prompt_format(tiny_lm.tokenizer)).intervention(
        type("S", (), {"lm": tiny_lm})(), PromptingMethod().only_setting, "fr", "en")
    recs = generate(tiny_lm, ["The river flows", "In the beginning"], Generation(max_new_tokens=5), iv)
    assert seen[0] == ["<s>Continue the following text in French:\n\nThe river flows",
                       "<s>Continue the following text in French:\n\nIn the beginning"]
    assert isinstance(iv, PromptIntervention)
    # what is judged: the prompt as given, and the new tokens only (not the instruction)
    plain = generate(tiny_lm, ["The river flows"], Generation(max_new_tokens=5))
    assert [r["prompt"] for r in recs] == ["The river flows", "In the beginning"]
    assert len(recs[0]["tokens"]) <= 5 and recs[0]["text"] == tiny_lm.tokenizer.decode(recs[0]["tokens"])
    assert "Continue" not in recs[0]["text"] and plain[0]["prompt"] == recs[0]["prompt"]


def test_prompting_goes_through_the_chat_template_where_the_tokenizer_has_one(tiny_lm, monkeypatch):
    from langloc.steer.prompting import PromptIntervention, prompt_format
    from langloc.steer.steering import Generation, generate

    template = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [end]{% endfor %}"
                "{% if add_generation_prompt %}[model] {% endif %}")
    monkeypatch.setattr(tiny_lm.tokenizer, "chat_template", template, raising=False)
    assert prompt_format(tiny_lm.tokenizer) == "chat"
    seen = _seen_inputs(tiny_lm, monkeypatch)
    recs = generate(tiny_lm, ["The river flows"], Generation(max_new_tokens=4), PromptIntervention("ja", "chat"))
    # the template's own BOS, not a second one from the tokenizer
    assert seen[0] == ["<s>[user] Continue the following text in Japanese:\n\nThe river flows [end][model] "]
    assert recs[0]["prompt"] == "The river flows" and "[model]" not in recs[0]["text"]


def test_the_prompting_control_names_a_random_other_language_the_same_for_a_seed():
    from langloc.steer.prompting import PromptingMethod

    m, candidates = PromptingMethod(), ["en", "fr", "de", "zh", "ru", "ja"]
    drawn = [m.control_language(candidates, "fr", seed=0, draw=d) for d in range(20)]
    assert "fr" not in drawn and set(drawn) <= set(candidates) and len(set(drawn)) > 1
    assert drawn == [m.control_language(candidates, "fr", seed=0, draw=d) for d in range(20)]
    assert drawn != [m.control_language(candidates, "fr", seed=1, draw=d) for d in range(20)]


# -- one steering study with every method ---------------------------------------------------------
@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    from report_run import invoke
    from tiny import save_tiny_llama, write_folder_corpus

    root = tmp_path_factory.mktemp("sampled")
    model, corpus, run = save_tiny_llama(root / "tiny"), write_folder_corpus(root / "corpus"), root / "run"
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en,fr", "--tokens", "256", "--window", "64",
                  "-o", run, "--residual-sample", "64", "--device", "cpu") == 0
    assert invoke("identify", run, "--top-rate", "0.05") == 0
    prompts = root / "prompts.txt"
    prompts.write_text("In the beginning\nThe word was\nAnd the people\nOn the first day\nThe king said\n",
                       encoding="utf-8")
    tune = root / "tune.txt"
    tune.write_text("Of the land\nWith the word\nUnder the sky\n", encoding="utf-8")
    return root, run, prompts, tune


def test_one_steer_run_puts_every_method_and_its_control_in_methods_csv(sampled_run):
    """lape, prompting, diffmean, probe, lda and pca in one run: a row per method in methods.csv
    with its control and intervals, a searched setting for every method but prompting (which has
    one setting, so no grid edge), a saved file per method and target."""
    import csv
    import json

    from report_run import invoke

    root, run, prompts, tune = sampled_run
    out = root / "steer"
    assert invoke("steer", "-n", run / "neurons" / "lape.json", "-t", "fr", "--run", run, "-o", out,
                  "--methods", "prompting,diffmean,probe,lda,pca", "--prompts", prompts, "--tune-prompts", tune,
                  "--rules", "set:1", "--residual-layers", "1", "--alphas", "1", "--max-new-tokens", "4",
                  "--no-relevance", "--device", "cpu") == 0
    names = ["lape", "prompting", "diffmean", "probe", "lda", "pca"]
    methods = list(csv.DictReader((out / "methods.csv").open()))
    assert [m["method"] for m in methods] == names
    for m in methods:
        assert m["control_strict_rate"] != "" and float(m["strict_rate_lo"]) <= float(m["strict_rate"]) <= float(
            m["strict_rate_hi"])
    rows = {r["method"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert rows["prompting"]["setting"] == "prompt(plain)" and rows["prompting"]["at_grid_edge"] == ""
    assert {rows[n]["setting"].split("(")[0] for n in ("diffmean", "probe", "lda", "pca")} == {
        "diffmean", "probe", "lda", "pca"}
    assert all(rows[n]["at_grid_edge"] in ("True", "False") for n in names if n != "prompting")
    from langloc.steer.evaluation import trial_score

    for d in json.loads((out / "steer.json").read_text())["details"]:  # flat: every setting tried scored the same
        scores = [trial_score(t) for t in d["search"]]
        assert rows[d["method"]]["search_flat"] == ("" if not scores else str(len(scores) > 1 and len(set(scores)) == 1))
    for r in rows.values():
        for k in ("target_rate", "control_target_rate"):
            assert float(r[f"{k}_lo"]) <= float(r[k]) <= float(r[f"{k}_hi"])
    assert methods[1]["rules_chosen"] == "instruction" and methods[3]["rules_chosen"] == "residual_add"
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert {g["method"] for g in gens} >= {*names, *(f"random:{n}" for n in names)}
    assert all((out / "interventions" / f"{n}-en-fr.json").is_file() for n in names)
    probe = json.loads((out / "interventions" / "probe-en-fr.json").read_text())
    assert probe["edits"][0]["source"]["method"] == "probe"
    from langloc.intervene import Intervention

    with pytest.raises(LanglocError, match="prompting baseline"):
        Intervention.load(out / "interventions" / "prompting-en-fr.json")


def test_fitted_directions_without_a_residual_sample_are_refused_in_one_line(sampled_run, tmp_path, capsys):
    from report_run import invoke
    from test_cli import error_line

    root, run, prompts, _ = sampled_run
    bare = tmp_path / "bare"
    assert invoke("collect", "-m", root / "tiny", "--corpus", root / "corpus", "-l", "en,fr", "--tokens", "128",
                  "--window", "64", "-o", bare, "--device", "cpu") == 0
    capsys.readouterr()
    assert invoke("steer", "-t", "fr", "--run", bare, "-o", tmp_path / "s", "--methods", "lda", "--prompts", prompts,
                  "--fixed", "lda(L1x1)", "--device", "cpu") == 2
    err = error_line(capsys)
    assert "no residual sample for fr, en" in err and "--residual-sample" in err


def test_prompting_alone_needs_only_the_model(sampled_run):
    import csv

    from report_run import invoke

    root, run, prompts, tune = sampled_run
    out = root / "prompting"
    assert invoke("steer", "-m", root / "tiny", "-t", "fr", "--methods", "prompting", "-o", out, "--prompts", prompts,
                  "--tune-prompts", tune, "--max-new-tokens", "4", "--no-relevance", "--device", "cpu") == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["method"], r["setting"], r["at_grid_edge"]) for r in rows] == [("prompting", "prompt(plain)", "")]


# -- many processes ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def steer_run(tmp_path_factory):
    """A tiny model's run (with residual sums for DiffMean) and its thresholding set."""
    from report_run import invoke
    from tiny import save_tiny_llama, write_folder_corpus

    root = tmp_path_factory.mktemp("steer-ddp")
    model, corpus, run = save_tiny_llama(root / "tiny"), write_folder_corpus(root / "corpus", repeat=20), root / "run"
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en,fr,ru", "--tokens", "256", "--window", "64",
                  "-o", run, "--device", "cpu") == 0
    assert invoke("identify", run, "--method", "thresholding", "--rate", "0.05") == 0
    prompts = root / "prompts.txt"
    prompts.write_text("In the beginning\nThe word was\nAnd the people\nOn the first day\nThe king said\n",
                       encoding="utf-8")
    return run, prompts


def test_two_gloo_processes_write_the_single_process_steering_outputs(steer_run, tmp_path):
    """The native references, the (method, target) cells with their controls and the matrix
    are shared out over two processes; every file is the one process's, written once."""
    import csv

    from parallel import assert_same_outputs, run_cli

    run, prompts = steer_run
    args = ["steer", "-n", run / "neurons" / "thresholding.json", "-t", "fr,ru", "--run-folder", run, "--prompts", prompts,
            "--fixed", "on(autox2)", "--fixed", "diffmean(L1x2)", "--matrix-sources", "fr", "--max-new-tokens", "3",
            "--control-draws", "2", "--device", "cpu"]
    single = run_cli(*args, "-o", tmp_path / "one")
    both = run_cli(*args, "-o", tmp_path / "two", processes=2)
    names = assert_same_outputs(tmp_path / "one", tmp_path / "two")
    assert {"summary.csv", "methods.csv", "matrix.csv", "native.csv", "generations.jsonl", "steer.json",
            "steering.png", "interventions/diffmean-en-ru.json", ".parts/cell-thresholding-en-fr.json"} <= set(names)
    summary = list(csv.DictReader((tmp_path / "two" / "summary.csv").open()))
    assert [(r["method"], r["target"]) for r in summary] == [("thresholding", "fr"), ("thresholding", "ru"),
                                                            ("diffmean", "fr"), ("diffmean", "ru")]
    assert all(r["n"] == "5" and r["control_draws"] == "2" for r in summary)
    matrix = list(csv.DictReader((tmp_path / "two" / "matrix.csv").open()))
    assert [(r["source"], r["target"]) for r in matrix][-1] == ("fr", "ru") and len(matrix) == 4 + 1
    for done in (single, both):  # one process prints the table
        assert done.stdout.count("steering 5 held-out prompts") == 1, done.stdout
    # ... and the work was shared: the first of two processes ran 3 of the 5 cells (the unsteered
    # continuations and 4 method x target cells), one process all 5.
    assert re.search(r"steer: 100%\S* 5/5", single.stderr) and re.search(r"steer: 100%\S* 3/3", both.stderr)


# -- relative to the native ceiling ---------------------------------------------------------------
def test_ratio_to_native_is_strict_success_over_native_success_and_its_interval_contains_it():
    from langloc.steer.evaluation import UNDEFINED_RATIO, mean_native_ratio, native_ratio

    fr = native_ratio({"strict_rate": 18 / 36, "n": 36}, {"strict_rate": 15 / 18, "n": 18})
    assert fr["ratio_to_native"] == pytest.approx(0.5 / (15 / 18)) and fr["native_strict_rate"] == 15 / 18
    assert 0 < fr["ratio_to_native_lo"] < fr["ratio_to_native"] < fr["ratio_to_native_hi"]
    zero = native_ratio({"strict_rate": 0.0, "n": 36}, {"strict_rate": 9 / 18, "n": 18})
    assert zero["ratio_to_native"] == 0 and zero["ratio_to_native_lo"] == 0 < zero["ratio_to_native_hi"] < 1
    # The model's own native writing never passes: no ceiling, so no ratio and no interval, but a note.
    ja = native_ratio({"strict_rate": 0.25, "n": 36}, {"strict_rate": 0.0, "n": 18})
    assert ja["ratio_to_native"] is None and ja["ratio_to_native_lo"] is None and ja["ratio_to_native_hi"] is None
    assert ja["ratio_to_native_note"] == UNDEFINED_RATIO
    # A method's figure: the mean over the targets where it is defined, with the mean of their limits.
    m = mean_native_ratio([{**fr}, {**zero}, {**ja}])
    assert m["ratio_to_native_targets"] == 2
    assert m["ratio_to_native"] == pytest.approx((fr["ratio_to_native"] + 0) / 2)
    assert m["ratio_to_native_lo"] == pytest.approx((fr["ratio_to_native_lo"] + 0) / 2)
    assert m["ratio_to_native_lo"] < m["ratio_to_native"] < m["ratio_to_native_hi"]
    assert mean_native_ratio([ja])["ratio_to_native"] is None


def _svg_text(plot, *args) -> str:
    from langloc.report import html

    return html.svg(plot, *args)  # text kept as text, so labels can be read


def test_the_steering_figure_draws_each_targets_native_ceiling_where_the_rows_carry_it():
    from langloc.plotting import plot_steering

    row = {"method": "diffmean", "target": "fr", "strict_rate": 0.5, "strict_rate_lo": 0.3, "strict_rate_hi": 0.7,
           "control_strict_rate": 0.0, "control_strict_rate_lo": 0.0, "control_strict_rate_hi": 0.1}
    with_native = _svg_text(plot_steering, [{**row, "native_strict_rate": 0.8}, {**row, "target": "ru",
                                                                                 "native_strict_rate": 0.6}])
    assert "native ceiling" in with_native and "its random control" in with_native
    assert "native ceiling" not in _svg_text(plot_steering, [row])  # an older run without native rates


def test_the_native_ratio_figure_takes_methods_csv_rows_and_leaves_an_undefined_ratio_without_a_bar(tmp_path):
    from langloc.plotting import plot_native_ratio

    # As methods.csv reads back: strings, and an empty ratio where no target's native rate is above 0.
    gemma = [{"method": "diffmean", "ratio_to_native": "0.43", "ratio_to_native_lo": "0.25", "ratio_to_native_hi": "0.96"},
             {"method": "pca", "ratio_to_native": "", "ratio_to_native_lo": "", "ratio_to_native_hi": ""}]
    qwen = [{"method": "diffmean", "ratio_to_native": 0.66, "ratio_to_native_lo": 0.44, "ratio_to_native_hi": 1.04}]
    text = _svg_text(plot_native_ratio, {"gemma-3-270m, greedy": gemma, "qwen2.5-coder-1.5b, publisher": qwen})
    assert "gemma-3-270m, greedy" in text and "qwen2.5-coder-1.5b, publisher" in text and "native ceiling" in text
    assert text.count("n/a") == 2  # pca: gemma's ratio undefined, qwen has no pca row
    png = plot_native_ratio({"gemma-3-270m, greedy": gemma}, tmp_path / "native_ratio.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _verdict_by_tokens(self, text, tokens, ppl, target, identify, relevant=None):
    """A stand-in strict judge for the tiny model (whose random bytes never pass the real one):
    an output passes when its tokens sum to a multiple of 3, so both sides have some successes."""
    ok = sum(tokens) % 3 == 0
    return {"strict": ok, "strict_fails": [] if ok else ["language"]}


@pytest.fixture(scope="module")
def relevance_run(sampled_run):
    """LAPE at a fixed setting with the relevance criterion on, a matrix row from ru, and the
    stand-in strict judge."""
    from langloc.steer.judge import StrictRule
    from report_run import invoke

    root, run, prompts, _ = sampled_run
    out = root / "relevance"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StrictRule, "verdict", _verdict_by_tokens)
        assert invoke("steer", "-n", run / "neurons" / "lape.json", "-t", "fr", "--run", run, "-o", out,
                      "--no-diffmean", "--fixed", "on(autox1)", "--relevance", "--matrix-sources", "ru",
                      "--prompts", prompts, "--max-new-tokens", "6", "--device", "cpu") == 0
    return out


def _csv(path):
    import csv

    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_summary_and_methods_csv_give_strict_success_relative_to_the_native_ceiling(relevance_run):
    import json

    native = {r["language"]: r for r in _csv(relevance_run / "native.csv")}
    (row,) = _csv(relevance_run / "summary.csv")
    q = float(native["fr"]["strict_rate"])
    assert 0 < q and float(row["native_strict_rate"]) == pytest.approx(q, abs=1e-4)
    ratio, lo, hi = (float(row[k]) for k in ("ratio_to_native", "ratio_to_native_lo", "ratio_to_native_hi"))
    assert ratio == pytest.approx(float(row["strict_rate"]) / q, abs=1e-3)
    assert lo <= ratio <= hi and lo < hi and row["ratio_to_native_note"] == ""
    (method,) = _csv(relevance_run / "methods.csv")
    assert float(method["ratio_to_native"]) == pytest.approx(ratio, abs=1e-4) and method["ratio_to_native_targets"] == "1"
    assert row["decoding"] == method["decoding"] == "greedy"
    doc = json.loads((relevance_run / "steer.json").read_text())
    assert doc["decoding"]["name"] == "greedy" and doc["decoding"]["settings"]["do_sample"] is False
    assert "Koopman" in doc["native_ratio"]


def test_with_relevance_on_the_matrix_and_every_random_control_have_a_relevance_rate(relevance_run):
    matrix = _csv(relevance_run / "matrix.csv")
    assert {(m["source"], m["target"]) for m in matrix} == {("en", "fr"), ("ru", "fr")}
    for m in matrix:
        assert float(m["relevance_rate_lo"]) <= float(m["relevance_rate"]) <= float(m["relevance_rate_hi"])
    (row,) = _csv(relevance_run / "summary.csv")
    assert float(row["control_relevance_rate_lo"]) <= float(row["control_relevance_rate"]) <= float(
        row["control_relevance_rate_hi"])
    import json

    gens = [json.loads(x) for x in (relevance_run / "generations.jsonl").read_text().splitlines()]
    control = [g for g in gens if g["method"] == "random:lape"]
    assert float(row["control_relevance_rate"]) == pytest.approx(
        sum(g["relevant"] for g in control) / len(control), abs=1e-4)
    (method,) = _csv(relevance_run / "methods.csv")
    assert float(method["control_relevance_rate"]) == pytest.approx(float(row["control_relevance_rate"]), abs=1e-4)


def test_the_ratio_is_empty_with_a_note_where_the_model_never_passes_natively(sampled_run, capsys):
    from report_run import invoke

    root, _, prompts, tune = sampled_run
    out = root / "no-ceiling"
    # 4 new tokens are fewer than the strict judge's 8: no native continuation passes
    assert invoke("steer", "-m", root / "tiny", "-t", "fr", "--methods", "prompting", "-o", out, "--prompts", prompts,
                  "--tune-prompts", tune, "--max-new-tokens", "4", "--no-relevance", "--device", "cpu") == 0
    (row,) = _csv(out / "summary.csv")
    assert float(row["native_strict_rate"]) == 0
    assert row["ratio_to_native"] == row["ratio_to_native_lo"] == row["ratio_to_native_hi"] == ""
    assert "undefined" in row["ratio_to_native_note"]
    (method,) = _csv(out / "methods.csv")
    assert method["ratio_to_native"] == "" and method["ratio_to_native_targets"] == "0"
    assert "/ native is undefined for fr" in " ".join(capsys.readouterr().out.split())


# -- the publisher's decoding ---------------------------------------------------------------------
def test_publisher_decoding_is_recorded_once_per_alias_and_refused_for_one_without(tmp_path):
    import json

    from langloc.models.loading import ALIASES, publisher_decoding

    assert publisher_decoding("gemma-3-270m")[0] == {"do_sample": True, "top_k": 64, "top_p": 0.95}
    assert publisher_decoding("qwen2.5-coder-1.5b")[0] == {"do_sample": True, "temperature": 0.7, "top_p": 0.8,
                                                           "top_k": 20, "repetition_penalty": 1.05}
    assert all(a.decoding_source for a in ALIASES.values() if a.decoding is not None)
    with pytest.raises(LanglocError, match="smollm2-135m .*has no decoding recommended by its publisher"):
        publisher_decoding("smollm2-135m")
    # A folder: what its own generation_config.json sets, and nothing it does not (no top-k 50).
    (tmp_path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "do_sample": True,
                                                                 "temperature": 0.9, "top_p": 0.9}))
    assert publisher_decoding(str(tmp_path)) == ({"do_sample": True, "temperature": 0.9, "top_p": 0.9},
                                                 f"{tmp_path} generation_config.json")
    (tmp_path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    with pytest.raises(LanglocError, match="sets no sampling"):
        publisher_decoding(str(tmp_path))


def test_decoding_publisher_on_an_alias_samples_with_the_recorded_settings(tiny_lm, tmp_path, monkeypatch):
    from dataclasses import replace as copy

    from langloc.studies.steer import Config, run

    prompts = tmp_path / "p.txt"
    prompts.write_text("In the beginning\nThe word was\nAnd the people\n", encoding="utf-8")
    tune = tmp_path / "t.txt"
    tune.write_text("Of the land\n", encoding="utf-8")
    seen = []
    original = type(tiny_lm.model).generate
    monkeypatch.setattr(type(tiny_lm.model), "generate", lambda self, **kw: seen.append(kw) or original(self, **kw))
    gemma = copy(tiny_lm, name="gemma-3-270m")  # the tiny model under the alias's name: nothing is loaded
    m = run(gemma, Config(targets=("fr",), methods=("prompting",), prompts=str(prompts), tune_prompts=str(tune),
                          decoding="publisher", max_new_tokens=4, seed=3, controls=False, relevance=False,
                          progress=False), tmp_path / "out")
    assert m.result["decoding"]["name"] == "publisher" and "google/gemma-3-270m" in m.result["decoding"]["source"]
    assert {k: m.result["generation"][k] for k in ("do_sample", "top_k", "top_p", "temperature", "seed")} == {
        "do_sample": True, "top_k": 64, "top_p": 0.95, "temperature": 1.0, "seed": 3}
    assert seen and all(kw["do_sample"] and kw["top_k"] == 64 and kw["top_p"] == 0.95 for kw in seen)
    assert m.result["config"]["decoding"] == "publisher"
    with pytest.raises(LanglocError, match="sets the sampling itself"):
        run(gemma, Config(targets=("fr",), methods=("prompting",), prompts=str(prompts), tune_prompts=str(tune),
                          decoding="publisher", sample=True, relevance=False, progress=False), tmp_path / "again")


def test_decoding_publisher_refuses_a_model_without_in_one_line_before_loading_it(tmp_path, capsys):
    from report_run import invoke
    from test_cli import error_line

    assert invoke("steer", "-m", "smollm2-135m", "-t", "fr", "--methods", "prompting", "-o", tmp_path / "s",
                  "--decoding", "publisher") == 2
    err = error_line(capsys)
    assert "smollm2-135m" in err and "no decoding recommended by its publisher" in err


def test_sampled_decoding_with_a_seed_gives_the_same_generations_twice(sampled_run):
    from report_run import invoke

    root, run, prompts, _ = sampled_run

    def steer(out, seed):
        assert invoke("steer", "-n", run / "neurons" / "lape.json", "-t", "fr", "--run", run, "-o", root / out,
                      "--no-diffmean", "--fixed", "on(autox1)", "--prompts", prompts, "--sample", "--top-k", "20",
                      "--seed", str(seed), "--max-new-tokens", "6", "--device", "cpu") == 0
        return (root / out / "generations.jsonl").read_bytes()

    first = steer("sampled-a", 3)
    assert steer("sampled-b", 3) == first  # native references, steered, control and unsteered: every line
    assert steer("sampled-c", 4) != first


def test_the_docs_table_script_prints_the_run_s_own_figures(relevance_run, tmp_path):
    """scripts/steer_table.py (docs/results.md's method tables) reads what the run wrote and
    computes nothing: its cells are the CSVs' rates; an unfinished run gives no figures."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("steer_table", Path(__file__).parents[1] / "scripts" / "steer_table.py")
    steer_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steer_table)
    text = steer_table.tables(relevance_run)
    (row,) = _csv(relevance_run / "summary.csv")
    (method,) = _csv(relevance_run / "methods.csv")
    native = {r["language"]: r for r in _csv(relevance_run / "native.csv")}
    n = int(native["fr"]["n"])
    assert f"| native (unsteered, same judge) | {round(float(native['fr']['strict_rate']) * n)}/{n} |" in text
    assert f"| LAPE neurons | {100 * float(row['strict_rate']):.0f}% [{100 * float(row['strict_rate_lo']):.0f}–" in text
    assert f"| {row['setting']} |" in text
    assert f"{float(method['ratio_to_native']):.2f} [{float(method['ratio_to_native_lo']):.2f}–" in text
    # why outputs fail: the judge's own labels on the held-out outputs, counted per criterion
    gens = [json.loads(line) for line in (relevance_run / "generations.jsonl").open()]
    held_out = [g for g in gens if g["method"] == "lape" and g["target"] == "fr" and g["source"] == "en"]
    for key, name in steer_table.CRITERIA.items():
        fails = sum(key in g["strict_fails"] for g in held_out)
        assert f"| LAPE neurons: {name} | {fails}/{len(held_out)} |" in text
    assert len(held_out) == int(row["n"]) and any(g["strict_fails"] for g in held_out)
    (tmp_path / ".parts").mkdir()
    (tmp_path / ".parts" / "cell-lape-en-fr.json").write_text("{}")
    assert steer_table.tables(tmp_path).endswith("not finished (1 cells kept in .parts); rerun its steer command to complete it")
