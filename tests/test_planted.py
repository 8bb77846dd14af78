"""End to end on a planted ground truth (langloc.planted): every identification method finds
the planted neurons, zeroing them hurts only their language, and validate calls each planted
neuron what it is: specific, shared between two languages, or always on."""

from __future__ import annotations

import pytest
import torch

from langloc.data import load_corpus
from langloc.errors import LanglocError
from langloc.identify import NeuronSet
from langloc.planted import LANGUAGES, as_pairs, planted_run, read_truth, truth_sets
from langloc.stats import ActivationStats
from langloc.validate.conditions import matched_control, probability_bins, split_set
from langloc.validate.shards import shard_bounds


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    run = planted_run(folder)
    return folder, run, read_truth(folder)


@pytest.fixture(scope="module")
def lm(planted):
    from langloc.models import load_model

    return load_model(str(planted[0] / "model"), device="cpu")


def _set(truth, pairs_by_lang, method="truth"):
    L, I = truth["num_layers"], truth["intermediate_size"]
    neurons = {lang: [torch.tensor(sorted(j for layer, j in pairs if layer == li), dtype=torch.long)
                      for li in range(L)] for lang, pairs in pairs_by_lang.items()}
    return NeuronSet(neurons, L, I, method=method)


def test_lape_finds_the_specific_neurons_and_the_shared_one(planted):
    folder, run, truth = planted
    ns = NeuronSet.load(run / "neurons" / "lape.json")  # identified by planted_run, as `langloc identify`
    want = truth_sets(truth)["lape"]
    assert {lang: as_pairs(ns, lang) for lang in LANGUAGES} == want
    shared = tuple(truth["shared"]["neuron"])
    assert [lang for lang in LANGUAGES if shared in as_pairs(ns, lang)] == truth["shared"]["languages"]


def test_thresholding_finds_the_specific_neurons_and_without_its_filter_the_always_on_one(planted):
    from langloc.identify.thresholding import threshold_from_stats

    folder, run, truth = planted
    stats = ActivationStats.load(run)
    s = truth["settings"]
    ns = threshold_from_stats(stats, rate=s["thresholding_rate"], other_max=s["thresholding_other_max"])
    assert {lang: as_pairs(ns, lang) for lang in LANGUAGES} == truth_sets(truth)["specific"]
    # Without the other-language filter the most active neuron of every language is the always-on one.
    plain = threshold_from_stats(stats, rate=1 / (truth["num_layers"] * truth["intermediate_size"]))
    assert {lang: as_pairs(plain, lang) for lang in LANGUAGES} == {lang: {tuple(truth["always_on"])} for lang in LANGUAGES}


def test_expert_units_rank_the_specific_neurons_first(planted, lm):
    from langloc.identify.expert_units import expert_units
    from langloc.workflows import collect_responses_run
    from langloc.stats.responses import load_responses

    folder, run, truth = planted
    collect_responses_run(lm, load_corpus(str(folder / "corpus")), list(LANGUAGES), run, segments=12,
                          segment_tokens=16, progress=False)
    L = truth["num_layers"]
    ns, _ = expert_units({lang: load_responses(run, lang) for lang in LANGUAGES}, n=2 * L)
    for lang in LANGUAGES:
        found = as_pairs(ns, lang)
        planted_here = {tuple(x) for x in truth["specific"][lang]}
        assert planted_here <= found  # the L strong responders ...
        ap = ns.params["ap"][lang]
        assert ap["top_min_ap"] == 1.0 and ap["bottom_max_ap"] < 0.5  # ... are perfect detectors, the rest are not


def test_zeroing_the_planted_sets_is_diagonal(planted, lm):
    from langloc.evaluate.ablation import ablate

    folder, run, truth = planted
    ns = _set(truth, truth_sets(truth)["specific"])
    ns.meta = {"model": lm.meta}
    rows = ablate(lm, ns, load_corpus(str(folder / "corpus")), eval_tokens=512, window=64, batch_size=8,
                  controls=False, progress=False)
    for r in rows:
        if r.deactivated == r.evaluated:
            assert r.ratio_lo > 1.2, r  # two specific neurons: about x1.3
        else:
            assert abs(r.ratio - 1) < 0.005, r


def _validate(run, out, **kw):
    from langloc.studies import validate

    config = validate.Config(run=run, **{"eval_tokens": 512, "window": 32, "resamples": 20, "control_draws": 2,
                                         "progress": False, **kw})
    return validate.run(None, config, out)


def test_validate_calls_specific_and_shared_neurons_what_they_are(planted):
    folder, run, truth = planted
    s = truth["settings"]
    m = _validate(run, folder / "validate", domain=str(folder / "domain"), methods=("lape", "thresholding"),
                  identify={"top_rate": s["lape_top_rate"], "rate": s["thresholding_rate"],
                            "other_max": s["thresholding_other_max"]})
    rows = {r["language"]: r for r in m.result}
    a, b = truth["shared"]["languages"]
    for lang, r in rows.items():
        assert r["selective"] and r["stable"] and r["domain_selective"], r["verdict"]
        assert r["stable_core"] == 1.0 and r["shard_jaccard"] == 1.0
        assert r["beats_random"] and r["always_on"] == 0
        if lang in (a, b):  # the shared neuron: spill-over onto the partner, from the shared part
            assert r["spill_language"] == (b if lang == a else a) and r["spill_from"] == "shared", r["verdict"]
            assert r["exclusive_size"] == truth["num_layers"] and r["shared_size"] == 1
        else:
            assert r["spill_language"] == "" and "no spill-over" in r["verdict"], r["verdict"]
    # The shards are the run's windows: their counters add up to the run's exactly.
    doc = __import__("json").loads((folder / "validate" / "validation.manifest.json").read_text())
    assert doc["shard_check"]["over_zero_equal"] and doc["shard_check"]["act_sum_max_abs_difference"] == 0.0
    # Each kept step's compute time is recorded, so a resumed validation still says what it cost.
    steps = doc["compute_seconds_of_kept_steps"]
    assert set(steps) == {"main", "domain", *(f"controls-{lang}" for lang in rows)} and min(steps.values()) >= 0
    assert (folder / "validate" / "plots" / "validation.png").stat().st_size > 0
    assert (folder / "validate" / "verdicts.txt").read_text().count("\n") == len(LANGUAGES)
    # The HTML report shows each language's verdict in words, with the table behind it.
    from langloc.report.sections import build

    page = build([folder / "validate"])
    assert 'data-kind="langloc.validation"' in page and "Validation: are the neurons real?" in page
    for r in rows.values():
        assert __import__("html").escape(r["verdict"], quote=True) in page


def test_validate_reports_an_always_on_neuron_as_not_selective(planted, lm, tmp_path):
    folder, run, truth = planted
    ns = _set(truth, {lang: {tuple(truth["always_on"])} for lang in LANGUAGES}, method="thresholding")
    ns.meta = {"model": lm.meta}
    path = ns.save(tmp_path / "always_on.json")
    m = _validate(run, tmp_path / "v", neurons=path, methods=("thresholding",),
                  identify={"rate": 1 / (truth["num_layers"] * truth["intermediate_size"])})
    for r in m.result:
        assert not r["selective"] and r["always_on"] == 1, r["verdict"]
        assert r["exclusive_size"] == 0 and r["spill_from"] == "shared", r["verdict"]
        assert "always-on" in r["verdict"] and r["stable"]  # stable, and still not language-specific


def test_matched_control_matches_layers_and_probability_bins_and_avoids_the_set():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(3, 200, generator=g)
    layers = [torch.tensor([1, 5, 9]), torch.tensor([], dtype=torch.long), torch.tensor([0, 199])]
    drawn, off = matched_control(layers, p, seed=0, condition="matched:fr", draw=0)
    assert off == 0
    for li, (want, got) in enumerate(zip(layers, drawn)):
        assert len(got) == len(want) and not set(got.tolist()) & set(want.tolist())
        assert sorted(probability_bins(p[li, got]).tolist()) == sorted(probability_bins(p[li, want]).tolist())
    again, _ = matched_control(layers, p, seed=0, condition="matched:fr", draw=0)
    other, _ = matched_control(layers, p, seed=0, condition="matched:fr", draw=1)
    assert all(torch.equal(x, y) for x, y in zip(drawn, again))
    assert not all(torch.equal(x, y) for x, y in zip(drawn, other))
    # A bin with too few neurons outside the set borrows from the nearest bin, and says so.
    p1 = torch.zeros(1, 10)
    p1[0, :2] = 0.95
    _, off = matched_control([torch.tensor([0, 1])], p1, seed=0, condition="c")
    assert off == 2


def test_exclusive_and_shared_parts_partition_a_set():
    ns = NeuronSet({"a": [torch.tensor([1, 2, 3])], "b": [torch.tensor([3, 4])], "c": [torch.tensor([2])]}, 1, 8)
    excl, shared = split_set(ns, "a")
    assert excl[0].tolist() == [1] and shared[0].tolist() == [2, 3]


def test_shards_must_be_between_two_and_the_number_of_batches():
    assert shard_bounds(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert shard_bounds(7, 3) == [(0, 2), (2, 4), (4, 7)]
    for bad in (1, 9):
        with pytest.raises(LanglocError, match="--shards"):
            shard_bounds(8, bad)


# -- validate checks the set it was given -------------------------------------------------------
def test_the_validate_command_planted_prints_works_as_printed(tmp_path, capsys):
    """`langloc planted` ends with a validate command; run exactly as printed it calls every
    planted language stable and selective, with stability measured on the validated sets."""
    import csv
    import shlex

    from report_run import invoke

    assert invoke("planted", "-o", tmp_path / "p") == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("then: ")]
    assert len(hint) == 1
    argv = shlex.split(hint[0].removeprefix("then: "))
    assert argv[:2] == ["langloc", "validate"]
    assert invoke(*argv[1:]) == 0
    out = tmp_path / "p" / "run" / "validate"
    ns = NeuronSet.load(tmp_path / "p" / "run" / "neurons" / "lape.json")
    rows = {r["language"]: r for r in csv.DictReader((out / "validation.csv").open())}
    assert set(rows) == set(LANGUAGES)
    for lang, r in rows.items():
        assert r["selective"] == "True" and r["stable"] == "True", r["verdict"]
        assert r["verdict"].startswith(f"{lang}: selective") and "; stable (core 100%" in r["verdict"]
    stab = list(csv.DictReader((out / "stability.csv").open()))
    assert [r["method"] for r in stab] == ["lape"] * len(LANGUAGES)
    for r in stab:  # the validated sets (3/3/2/2), found with the settings recorded in them
        size = ns.count(r["language"])
        assert int(r["set_size"]) == size and r["shard_sizes"] == "/".join([str(size)] * 4)
        assert r["settings"] == f"top_rate={ns.params['top_rate']} filter_rate=0.95 activation_bar_ratio=0.95"


def test_a_set_is_re_identified_with_its_own_settings_or_refused(planted, lm, tmp_path, capsys):
    from langloc.identify.lape import lape_from_stats
    from langloc.validate.stability import identification_settings
    from report_run import invoke

    folder, run, truth = planted
    stats = ActivationStats.load(run)
    none = dict.fromkeys(("top_rate", "filter_rate", "activation_bar_ratio", "rate", "other_max"))
    # Made with non-default settings: re-identified with them, whatever the options' defaults.
    odd = lape_from_stats(stats, top_rate=truth["settings"]["lape_top_rate"], filter_rate=0.9,
                          activation_bar_ratio=0.9)
    got = identification_settings(("lape", "thresholding"), odd, none, stats)
    assert got["lape"] == {"top_rate": truth["settings"]["lape_top_rate"], "filter_rate": 0.9,
                           "activation_bar_ratio": 0.9}
    assert got["thresholding"] == {"rate": 0.00125, "other_max": None}  # another method: identify's defaults
    from langloc.identify.methods import METHODS, defaults

    # identify's defaults are the methods' settings classes' (one source, no copy)
    assert defaults() == {f: getattr(m.Settings(), f) for m in METHODS.values() for f in m.settings}
    # An option that contradicts the recorded settings is refused, not silently used.
    with pytest.raises(LanglocError, match="was made with lape top_rate=0.0703125; --top-rate 0.01"):
        identification_settings(("lape",), odd, {**none, "top_rate": 0.01}, stats)
    # A set that records no settings (imported, hand-made) and that identify's defaults do not
    # find again: refused, saying why; given the settings that find it, measured.
    bare = NeuronSet(odd.neurons, odd.num_layers, odd.intermediate_size, method="lape",
                     params={"imported_from": "elsewhere"}, meta={"model": lm.meta})
    with pytest.raises(LanglocError, match=r"top_rate=0.01 \(identify's default\).*cannot be measured here"):
        identification_settings(("lape",), bare, none, stats, what="bare.json")
    given = {**none, "top_rate": truth["settings"]["lape_top_rate"], "filter_rate": 0.9, "activation_bar_ratio": 0.9}
    assert identification_settings(("lape",), bare, given, stats)["lape"] == got["lape"]
    # Through the CLI: one error line, before anything is computed or written.
    path = bare.save(tmp_path / "bare.json")
    capsys.readouterr()
    assert invoke("validate", run, "--neurons", path, "--methods", "lape", "-o", tmp_path / "v") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: lape with top_rate=0.01") and str(path) in err[0]
    assert not (tmp_path / "v").exists()


def test_empty_sets_have_no_jaccard_and_no_stable_core():
    from langloc.validate.stability import jaccard, stability

    assert jaccard(torch.zeros(1, 4, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.bool)) != 0.0  # NaN, not 1
    # Language b's only active neuron is as active in a: thresholding with other_max finds nothing for b.
    over = torch.tensor([[[8, 8, 0, 0]], [[0, 8, 0, 0]]])

    def stats(scale):
        return ActivationStats(["a", "b"], torch.tensor([10, 10]) * scale, over * scale,
                               torch.zeros(2, 1, 4, dtype=torch.float64), torch.zeros(2, 1, 4, dtype=torch.float64))

    rows, core = stability("thresholding", stats(4), [stats(1)] * 4, {"rate": 0.25, "other_max": 0.5}, resamples=5)
    a, b = rows
    assert (a["set_size"], a["shard_jaccard"], a["stable_core"]) == (1, 1.0, 1.0)
    assert b["set_size"] == 0 and b["shard_sizes"] == "0/0/0/0"
    for key in ("shard_jaccard", "shard_jaccard_min", "shard_vs_full_jaccard", "stable_core"):
        assert b[key] != b[key], key  # NaN: reported as n/a


def test_selective_compares_with_the_largest_upper_bound_over_all_other_languages():
    """The largest other *ratio* (bb) has a narrow interval; cc's is lower but wider and reaches
    above the own interval: not selective, though own_lo clears bb's upper bound."""
    from langloc.evaluate.ablation import AblationRow
    from langloc.validate.verdicts import by_condition, language_row

    def row(evaluated, ratio, lo, hi):
        return AblationRow("aa", evaluated, 10.0, 10.0 * ratio, lo, hi)

    table = by_condition([row("aa", 2.0, 1.5, 2.5), row("bb", 1.3, 1.28, 1.32), row("cc", 1.2, 1.0, 1.6),
                          AblationRow("exclusive:aa", "bb", 10.0, 13.0, 1.28, 1.32)])  # the set is all exclusive
    r = language_row("aa", ["aa", "bb", "cc"], table, {}, None, None,
                     {"set_size": 2, "exclusive_size": 2, "shared_size": 0}, 0)
    assert r["other_language"] == "bb" and r["own_lo"] > r["other_hi"]  # the old rule would say selective
    assert r["other_hi_max_language"] == "cc" and r["other_hi_max"] == 1.6
    assert not r["selective"] and "not selective" in r["verdict"] and "upper bound 1.60 on cc" in r["verdict"]
    table[("aa", "cc")] = row("cc", 1.2, 1.0, 1.4)  # now every other interval lies below 1.5
    assert language_row("aa", ["aa", "bb", "cc"], table, {}, None, None,
                        {"set_size": 2, "exclusive_size": 2, "shared_size": 0}, 0)["selective"]


def test_validate_rerun_with_another_dtype_recomputes_every_step(planted, tmp_path):
    """Every kept step (.parts tables and the shards) names the dtype it was computed in: a
    rerun into the same folder with another --dtype makes each again; the same rerun reuses it."""
    import json

    from langloc.manifest import content, read_safetensors_manifest
    from langloc.validate.shards import language_file, shard_folder

    folder, run, truth = planted
    out = tmp_path / "v"

    def kept():
        parts = {p.name: json.loads(p.read_text())["settings"]["model"] for p in (out / ".parts").glob("*.json")}
        shards = {(j, lang): content(read_safetensors_manifest(language_file(shard_folder(out / "shards", j), lang),
                                                               "langloc.stats"))["key"]["model"]
                  for j in range(4) for lang in LANGUAGES}
        return parts, shards

    def validate(dtype):
        return _validate(run, out, methods=("lape",), dtype=dtype, resamples=5, control_draws=1)

    validate("float32")
    parts, shards = kept()
    assert set(parts) == {"main.json", *(f"controls-{lang}.json" for lang in LANGUAGES)}
    assert {m["dtype"] for m in [*parts.values(), *shards.values()]} == {"float32"}
    m = validate("bfloat16")
    again, again_shards = kept()
    assert set(again) == set(parts) and set(again_shards) == set(shards)
    assert {m["dtype"] for m in [*again.values(), *again_shards.values()]} == {"bfloat16"}  # none reused
    assert m["model"]["dtype"] == "bfloat16"
    stamps = {p: p.stat().st_mtime_ns for p in [*(out / ".parts").glob("*.json"), *(out / "shards").rglob("*.safetensors")]}
    validate("bfloat16")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


# -- the budget curve (validate --budget-curve) -----------------------------------------------
def test_the_budget_curve_ends_at_the_run_and_the_full_set(planted, tmp_path):
    """Prefix sums of the shards at k = K are the run's statistics exactly; there the set found is
    the full set (Jaccard 1), holds the whole stable core, and has validation.csv's own ratio."""
    import csv
    import json

    from langloc.report.sections import build
    from langloc.validate.budget import prefix_stats
    from langloc.validate.shards import load_shard

    folder, run, truth = planted
    out = tmp_path / "v"
    m = _validate(run, out, methods=("lape",), resamples=5, control_draws=1, budget_curve=True)
    stats = ActivationStats.load(run)
    whole = prefix_stats([load_shard(out / "shards", j, list(LANGUAGES)) for j in range(4)])[-1]
    for name in ("n", "over_zero", "active_sum", "act_sum"):
        assert torch.equal(getattr(whole, name), getattr(stats, name)), name
    rows = list(csv.DictReader((out / "budget_curve.csv").open()))
    assert len(rows) == 4 * len(LANGUAGES)
    own = {r["language"]: r for r in m.result}
    for r in rows:
        assert int(r["tokens"]) == stats.meta["tokens"] * int(r["k"]) // 4
        if r["k"] == "4":
            assert float(r["jaccard"]) == 1.0 and float(r["core_share"]) == 1.0 and float(r["full_share"]) == 1.0
            assert float(r["own_ratio"]) == pytest.approx(own[r["language"]]["own_ratio"], rel=1e-5)
    # One sentence per language, on the console (the manifest) and in budget_curve.txt.
    doc = json.loads((out / "validation.manifest.json").read_text())
    lines = (out / "budget_curve.txt").read_text().splitlines()
    assert lines == doc["budget_curve"] and [s.split(":")[0] for s in lines] == list(LANGUAGES)
    assert all(": 90% of the full set (" in s for s in lines)
    assert "budget_curve.csv" in doc["outputs"] and (out / "plots" / "budget_curve.png").stat().st_size > 0
    page = build([out])
    assert "The budget curve: how many statistics tokens" in page and __import__("html").escape(lines[0]) in page


def test_a_prefix_set_unlike_the_full_set_is_zeroed_on_its_own_language(planted, lm):
    """A prefix set other than the full set gets its own evaluation on its own language; one
    equal to the full set takes the full set's ratio."""
    from langloc.evaluate.ablation import perplexity_table
    from langloc.intervene.hooks import deactivate
    from langloc.data.packing import corpus_windows
    from langloc.validate.budget import add_ratios

    folder, run, truth = planted
    full = NeuronSet.load(run / "neurons" / "lape.json")
    specific = _set(truth, truth_sets(truth)["specific"])  # the full set less the shared neuron
    a = truth["shared"]["languages"][0]
    corpus = load_corpus(str(folder / "corpus"))
    evals = {lang: corpus_windows(lm, corpus, lang, "eval", window=32, max_tokens=256) for lang in LANGUAGES}
    main = perplexity_table(lm, evals, [(lang, lambda ls=full.layers(lang): deactivate(lm, ls)) for lang in LANGUAGES],
                            batch_size=8, progress=False)
    rows = [{"language": lang, "k": k, "set_size": 1} for lang in LANGUAGES for k in (1, 2)]
    add_ratios(lm, rows, [specific, full], full, evals, main, cached=lambda name, key, compute: compute(),
               batch_size=8, progress=False)
    alone = perplexity_table(lm, {a: evals[a]}, [("x", lambda: deactivate(lm, specific.layers(a)))], batch_size=8,
                             progress=False)[-1]
    got = {(r["language"], r["k"]): r["own_ratio"] for r in rows}
    assert got[(a, 1)] == alone.ratio and got[(a, 1)] != got[(a, 2)]
    by = {(r.deactivated, r.evaluated): r.ratio for r in main}
    for lang in LANGUAGES:
        assert got[(lang, 2)] == by[(lang, lang)]
    c = next(lang for lang in LANGUAGES if lang not in truth["shared"]["languages"])
    assert got[(c, 1)] == by[(c, c)]  # there the specific set is the full set: no evaluation


def test_the_budget_sentence_names_the_budget_from_which_on_the_share_holds():
    """The curve need not be monotone: the sentence names the smallest prefix from which every
    larger prefix holds the target share, not the first one that happens to."""
    from langloc.validate.budget import sentence

    shares = [0.95, 0.5, 0.9, 1.0]
    rows = [{"language": "fr", "k": k + 1, "shards": 4, "tokens": 8192 * (k + 1), "full_size": 20, "full_share": s,
             "jaccard": s, "core_share": 1.0} for k, s in enumerate(shares)]
    text = sentence(rows, "fr", 0.9)
    assert text.startswith("fr: 90% of the full set (20 neurons) from 24,576 tokens on (3/4 of the budget)"), text
    assert "at 8,192 tokens: 95% of it" in text


def test_a_bad_curve_target_or_method_is_one_error_line(planted, tmp_path, capsys):
    from report_run import invoke

    folder, run, truth = planted
    capsys.readouterr()
    assert invoke("validate", run, "--budget-curve", "--curve-target", "1.5", "-o", tmp_path / "v") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --curve-target must be a share in (0, 1], got 1.5"]
    assert invoke("validate", run, "--budget-curve", "--methods", "thresholding", "-o", tmp_path / "v") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --budget-curve finds the set again with its own method (lape)")
    assert not (tmp_path / "v").exists()
