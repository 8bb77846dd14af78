"""The CLI end to end on a tiny local model, and bad input: one clear line, no partial output."""

import csv
import importlib.util
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from langloc.cli import app
from langloc.errors import LanglocError
from langloc.identify import NeuronSet
from tiny import save_tiny_llama, write_folder_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = save_tiny_llama(root / "tiny")
    corpus = write_folder_corpus(root / "corpus")
    run = root / "run"
    args = ["collect", "-m", str(model), "--corpus", str(corpus), "-l", "en,fr,ru", "--tokens", "512",
            "--window", "64", "-o", str(run), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root, model, corpus, run


from report_run import invoke  # noqa: E402  (runs main(): LanglocError -> one line, exit 2)


def test_identify_ablate_export_import_roundtrip(setup, capsys):
    root, model, corpus, run = setup
    assert invoke("identify", run, "--top-rate", "0.05") == 0
    ns = NeuronSet.load(run / "neurons" / "lape.json")
    assert ns.languages == ["en", "fr", "ru"] and ns.unique_count() > 0
    assert (run / "plots" / "neurons_per_layer.png").stat().st_size > 0
    assert (run / "plots" / "overlap.png").stat().st_size > 0

    assert invoke("ablate", run, "--eval-tokens", "128", "--device", "cpu") == 0
    lines = (run / "ablation.csv").read_text().splitlines()
    assert lines[0] == "deactivated,evaluated,base_ppl,ppl,ratio,ratio_lo,ratio_hi,ratio_min,ratio_max,draws,windows"
    assert len(lines) == 1 + 2 * 3 * 3  # (3 sets + 3 random controls) x 3 evaluated languages
    assert any(line.startswith("random:fr,") and line.split(",")[9] == "3" for line in lines)  # 3 draws by default
    assert all(line.split(",")[7:10] == ["", "", ""] for line in lines[1:] if not line.startswith("random:"))
    assert (run / "plots" / "ablation.png").stat().st_size > 0

    assert invoke("export-lape", run, root / "ref") == 0
    d = torch.load(root / "ref" / "activation.fr.pt", weights_only=True)
    assert set(d) == {"n", "over_zero"} and isinstance(d["n"], int) and d["over_zero"].shape == (2, 64)
    mask = torch.load(root / "ref" / "language_mask.pt", weights_only=True)
    assert len(mask) == 3 and len(mask[0]) == 2 and mask[1][0].dtype == torch.long
    assert (root / "ref" / "languages.txt").read_text() == "en\nfr\nru\n"

    assert invoke("import-lape", root / "ref", "-o", root / "imported", "-m", model) == 0
    assert NeuronSet.load(root / "imported" / "neurons" / "lape.json").neurons.keys() == ns.neurons.keys()
    # An imported run has no corpus of its own: ablate evaluates on the one it is given.
    assert invoke("ablate", root / "imported", "--corpus", corpus, "--eval-tokens", "128", "--window", "64",
                  "--no-controls", "--device", "cpu") == 0
    assert len((root / "imported" / "ablation.csv").read_text().splitlines()) == 1 + 3 * 3
    # Identifying again from the imported counts gives the same neurons.
    assert invoke("identify", root / "imported", "--top-rate", "0.05", "--output", root / "again.json") == 0
    again = NeuronSet.load(root / "again.json")
    assert all(torch.equal(a, b) for lang in ns.languages for a, b in zip(ns.layers(lang), again.layers(lang)))


def test_ablation_table_fits_an_80_column_terminal_without_cutting_labels_or_figures(monkeypatch):
    """The demo prints 10 sets + 10 random controls x 10 languages; every label and ratio
    must be readable in a plain 80-column terminal (rich squeezes columns that do not fit)."""
    from types import SimpleNamespace

    from rich.console import Console

    import langloc.cli as cli

    langs = ["en", "zh", "fr", "es", "ru", "ja", "ar", "hi", "vi", "id"]

    def row(d, e):
        hit = d == e == "hi"
        control = d.startswith("random:")
        return SimpleNamespace(deactivated=d, evaluated=e, ratio=222.04 if hit else 1.0234,
                               ratio_lo=201.5 if hit else 0.9912, ratio_hi=240.7 if hit else 1.0571,
                               ratio_min=1.0011 if control else None, ratio_max=1.0456 if control else None,
                               draws=3 if control else None)

    rows = [row(d, e) for d in langs + [f"random:{x}" for x in langs] for e in langs]
    console = Console(width=80, record=True, force_terminal=False)
    monkeypatch.setattr(cli, "out", console)
    cli._print_ablation(rows)
    text = console.export_text()
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= 80
    lines = text.splitlines()
    # Ratios whose interval includes 1 carry the no-effect mark; the own-language "hi" does not.
    assert any(line.split()[:2] == ["random:id", "1.02~"] for line in lines)
    assert "222 " in text and "222~" not in text
    assert "interval includes 1" in text
    # The second table: own-language ratio, interval and a control's range over its draws.
    assert any(line.split()[:3] == ["hi", "hi", "222"] and "[202, 241]" in line for line in lines)
    assert any(line.split()[:2] == ["random:fr", "fr"] and "[0.99, 1.06]" in line and "1.00-1.05 (3 draws)" in line
               for line in lines)


def error_line(capsys):
    # Progress bars may come first; the error itself is exactly one line, the last.
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1]
    assert err.startswith("error:") and sum(line.startswith("error:") for line in lines) == 1, lines
    assert "Traceback" not in err
    return err


def test_unknown_model(setup, capsys, tmp_path):
    root, model, corpus, run = setup
    assert invoke("collect", "-m", tmp_path / "no-such-model", "--corpus", corpus, "-l", "en", "-o", tmp_path / "r") == 2
    assert "unknown model" in error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_unsupported_architecture(setup, capsys, tmp_path):
    root, model, corpus, run = setup
    other = tmp_path / "weird"
    other.mkdir()
    cfg = json.loads((model / "config.json").read_text())
    cfg["model_type"] = "gpt_bigcode"
    cfg["architectures"] = ["GPTBigCodeForCausalLM"]
    (other / "config.json").write_text(json.dumps(cfg))
    assert invoke("collect", "-m", other, "--corpus", corpus, "-l", "en", "-o", tmp_path / "r") == 2
    err = error_line(capsys)
    assert "unsupported architecture 'gpt_bigcode'" in err and "llama" in err and "--neuron-site" in err
    assert not (tmp_path / "r").exists()


def test_unknown_and_empty_language(setup, capsys, tmp_path):
    root, model, corpus, run = setup
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en,xx", "-o", tmp_path / "r") == 2
    assert "unknown language(s) xx" in error_line(capsys)
    (corpus / "de.txt").write_text("\n\n", encoding="utf-8")
    try:
        assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "de", "-o", tmp_path / "r2",
                      "--device", "cpu") == 2
        assert "'de' has no text" in error_line(capsys)
    finally:
        (corpus / "de.txt").unlink()
    assert not (tmp_path / "r2" / "stats").exists()


def test_non_utf8_lines_are_skipped_and_counted(setup, capsys, tmp_path):
    root, model, corpus, run = setup
    bad = tmp_path / "bad"
    write_folder_corpus(bad, langs=("en",))
    good = (bad / "en.txt").read_bytes()
    (bad / "en.txt").write_bytes(b"\xff\xfe broken latin-1 \xe9\xe8\n" * 3 + good)
    assert invoke("collect", "-m", model, "--corpus", bad, "-l", "en", "--tokens", "256", "--window", "64",
                  "-o", tmp_path / "r", "--device", "cpu") == 0
    assert "skipped 3 line(s) of en.txt" in capsys.readouterr().err


def test_neuron_set_made_for_another_model_is_refused(setup, capsys, tmp_path):
    root, model, corpus, run = setup
    if not (run / "neurons" / "lape.json").exists():
        assert invoke("identify", run, "--top-rate", "0.05") == 0
    other = save_tiny_llama(tmp_path / "other", seed=1)
    assert invoke("ablate", run, "-m", other, "--eval-tokens", "128", "--device", "cpu") == 2
    assert "was made for model" in error_line(capsys)


@pytest.mark.parametrize("args, message", [
    (["--top-rate", "0"], "top_rate must be in (0.0, 1.0]"),
    (["--filter-rate", "1.5"], "filter_rate must be in [0.0, 1.0]"),
])
def test_out_of_range_parameters(setup, capsys, tmp_path, args, message):
    root, model, corpus, run = setup
    out = tmp_path / "ns.json"
    assert invoke("identify", run, *args, "--output", out) == 2
    assert message in error_line(capsys)
    assert not out.exists()


def test_too_few_held_out_windows_give_no_interval_and_say_so(setup, capsys, tmp_path):
    root, model, corpus, run = setup
    few = tmp_path / "few"
    shutil.copytree(run, few)
    # 192 held-out tokens in windows of 64 make 3 windows per language, too few for 95%
    assert invoke("ablate", few, "--eval-tokens", "192", "--window", "64", "--device", "cpu") == 0
    assert "interval not reported: 3 windows (< 8)" in capsys.readouterr().err
    rows = list(csv.DictReader((few / "ablation.csv").open()))
    assert rows and all(r["windows"] == "3" and r["ratio_lo"] == r["ratio_hi"] == "" for r in rows)


def test_truncated_artefacts_are_refused(setup, capsys, tmp_path):
    root, model, corpus, run = setup
    bad_run = tmp_path / "badrun"
    (bad_run / "stats").mkdir(parents=True)
    (bad_run / "run.json").write_text((run / "run.json").read_text())
    data = (run / "stats" / "en.safetensors").read_bytes()
    (bad_run / "stats" / "en.safetensors").write_bytes(data[: len(data) // 2])
    assert invoke("identify", bad_run) == 2
    assert "unreadable" in error_line(capsys)
    (tmp_path / "ns.json").write_text('{"kind": "langloc.neuron_set", "neurons": ')
    with pytest.raises(LanglocError, match="not valid JSON"):
        NeuronSet.load(tmp_path / "ns.json")


def test_methods_compare_and_steer_end_to_end(setup, tmp_path, monkeypatch):
    root, model, corpus, _ = setup
    run = tmp_path / "run"
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en,fr,ru", "--tokens", "256", "--window", "64",
                  "-o", run, "--device", "cpu", "--segments", "8", "--segment-tokens", "16") == 0
    assert (run / "responses" / "fr.safetensors").is_file()
    assert invoke("identify", run, "--method", "thresholding", "--rate", "0.05", "--other-max", "0.9") == 0
    assert invoke("identify", run, "--method", "expert_units", "--units", "10") == 0
    assert invoke("identify", run) == 0
    sets = [run / "neurons" / f"{m}.json" for m in ("lape", "thresholding", "expert_units")]
    assert NeuronSet.load(sets[2]).count("fr") == 10
    assert invoke("compare", *sets, "-o", tmp_path / "cmp") == 0
    lines = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert lines[0] == "a,b,language,layer,size_a,size_b,shared,jaccard"
    assert len(lines) == 1 + 3 * 3 * (2 + 1)  # 3 pairs x 3 languages x (2 layers + all)
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0

    prompts = tmp_path / "prompts.txt"  # more than the 4 prompts each output's relevance is compared with
    prompts.write_text("In the beginning\nThe word was\nAnd the people\nOn the first day\nThe king said\n", encoding="utf-8")
    tune = tmp_path / "tune.txt"
    tune.write_text("Of the land\nWith the word\nUnder the sky\nBy the river\nAt the gate\n", encoding="utf-8")
    out = tmp_path / "steer"
    steer_args = ("steer", "-n", sets[1], "-n", sets[2], "-t", "fr,ru", "--run", run, "-o", out,
                  "--prompts", prompts, "--tune-prompts", tune, "--rules", "set:1,add:1,scale:2",
                  "--residual-layers", "0.0,0-1", "--alphas", "2", "--matrix-sources", "fr", "--max-new-tokens", "6",
                  "--device", "cpu", "--relevance")
    assert invoke(*steer_args) == 0
    result = json.loads((out / "steer.json").read_text())
    assert [(r["method"], r["target"]) for r in result["rows"]] == [
        ("thresholding", "fr"), ("thresholding", "ru"), ("expert_units", "fr"), ("expert_units", "ru"),
        ("diffmean", "fr"), ("diffmean", "ru")]
    assert all(r["n"] == 5 and r["control_strict_rate"] is not None for r in result["rows"])
    first = lambda d: [t["label"] for t in d["search"] if not t["extended"]]  # noqa: E731
    assert first(result["details"][0]) == ["on(mean_activex1)", "on(+mean_activex1)", "on(x2)"]
    assert first(result["details"][4]) == ["diffmean(L0x2)", "diffmean(L0-1x2)"]  # 0.0: the first layer
    assert result["grid"]["layer_groups"] == {"0.0": [0], "0-1": [0, 1]} and result["grid"]["num_layers"] == 2
    assert len(result["grid"]["diffmean_unit"]["norms"]) == 2 and result["grid"]["diffmean_unit"]["measured_on"]
    for d, row in zip(result["details"], result["rows"]):  # one grid of one setting per line: never left at
        # the first grid's edge unless a bound stopped it, and then the row says so
        assert len(d["search"]) > len(first(d)) and row["at_grid_edge"] == bool(d["edge"]["stops"])
        assert row["grid_extension"].startswith(f"{len(d['search']) - len(first(d))} more:")
        assert all("at its bound" in why for why in d["edge"]["stops"])
    assert result["details"][2]["chosen"]["value"] == "median_response"  # expert units' own value
    assert result["k"] > 0 and {r["language"] for r in result["native"]} == {"fr", "ru"}
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert all("strict" in g and "success" in g and isinstance(g["relevant"], bool) for g in gens)
    assert all(("relevance" in g["strict_fails"]) == (not g["relevant"]) for g in gens if "strict_fails" in g)
    assert result["relevance"]["on"] and result["relevance"]["others"] == 4
    assert {g["method"] for g in gens} == {"native", "unsteered", "thresholding", "expert_units", "diffmean",
                                           "random:thresholding", "random:expert_units", "random:diffmean"}
    matrix = list(csv.DictReader((out / "matrix.csv").open()))
    assert {(r["source"], r["target"]) for r in matrix} == {("en", "fr"), ("en", "ru"), ("fr", "ru")}
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["at_grid_edge"] for r in summary] == [str(r["at_grid_edge"]) for r in result["rows"]]
    for r in summary:  # rates with 95% intervals over prompts
        for k in ("strict_rate", "fluent_target_rate", "target_rate", "relevance_rate", "control_strict_rate"):
            assert float(r[f"{k}_lo"]) <= float(r[k]) <= float(r[f"{k}_hi"])
        mine = [g for g in gens if g["method"] == r["method"] and g["target"] == r["target"]]
        assert float(r["relevance_rate"]) == pytest.approx(sum(g["relevant"] for g in mine) / len(mine), abs=1e-4)
        t, rel = float(r["target_rate"]), float(r["relevance_rate"])  # CLaS: their harmonic mean
        assert float(r["clas"]) == pytest.approx(0.0 if t + rel == 0 else 2 * t * rel / (t + rel), abs=1e-4)
    methods = list(csv.DictReader((out / "methods.csv").open()))
    assert [m["method"] for m in methods] == ["thresholding", "expert_units", "diffmean"]
    for m in methods:  # the method's CLaS-style score: the mean of its cells'
        cells = [float(r["clas"]) for r in summary if r["method"] == m["method"]]
        assert float(m["clas"]) == pytest.approx(sum(cells) / len(cells), abs=1e-3)
    assert (out / "interventions" / "diffmean-en-ru.json").is_file() and (out / "steering.png").is_file()
    from langloc.intervene import Intervention

    assert Intervention.load(out / "interventions" / "diffmean-en-ru.json").edits[0].rule == "residual_add"

    # Killed after every cell but one, the same command continues: it generates only the
    # missing cell (its search, held-out prompts and control) and writes the same tables.
    import langloc.steer.steering as steering

    first = {f: (out / f).read_text() for f in ("summary.csv", "methods.csv", "matrix.csv", "generations.jsonl")}
    (out / ".parts" / "cell-diffmean-en-ru.json").unlink()
    calls, generate = [], steering.generate
    monkeypatch.setattr(steering, "generate", lambda lm, prompts, *a, **k: calls.append(len(prompts)) or generate(
        lm, prompts, *a, **k))
    assert invoke(*steer_args) == 0
    tried = len(result["details"][5]["search"])  # the first grid's 2 settings and the extension's
    assert calls == [5] * tried + [5, 5]  # tuning prompts x settings tried, held-out prompts, control
    assert {f: (out / f).read_text() for f in first} == first
    resumed = json.loads((out / "steer.json").read_text())  # wall time: this invocation; compute: every step
    assert resumed["compute_seconds"] is not None and resumed["compute_seconds"] >= 0

    # A fixed setting without search, a quantile value, generated positions only.
    assert invoke("steer", "-n", sets[1], "-t", "fr", "--run", run, "-o", tmp_path / "fixed", "--prompts", prompts,
                  "--fixed", "on(p90x2)+off@generated", "--no-diffmean", "--max-new-tokens", "4", "--no-controls",
                  "--device", "cpu") == 0
    fixed = json.loads((tmp_path / "fixed" / "steer.json").read_text())
    assert fixed["rows"][0]["setting"] == "on(p90x2)+off@generated" and fixed["rows"][0].get("control_strict_rate") is None


def _steer_tiny(setup, tmp_path, out, *extra, relevance=False):
    root, model, corpus, run = setup
    assert invoke("identify", run, "--method", "thresholding", "--rate", "0.05") == 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("In the beginning\nThe word was\nAnd the people\nOn the first day\nThe king said\n",
                       encoding="utf-8")
    return invoke("steer", "-n", run / "neurons" / "thresholding.json", "-t", "fr", "--run", run, "-o", out,
                  "--prompts", prompts, "--fixed", "on(mean_activex2)", "--no-diffmean", "--no-controls",
                  "--max-new-tokens", "4", "--device", "cpu", "--relevance" if relevance else "--no-relevance", *extra)


def test_the_reported_k_is_the_95th_percentile_of_the_native_outputs_written(setup, tmp_path):
    """k in steer.json, recomputed (numpy's percentile, statistics' median) from the native
    continuations in generations.jsonl: the figure is tied to the outputs it was measured on."""
    import statistics

    import numpy as np

    out = tmp_path / "steer"
    assert _steer_tiny(setup, tmp_path, out) == 0
    result = json.loads((out / "steer.json").read_text())
    native = [g for g in map(json.loads, (out / "generations.jsonl").read_text().splitlines())
              if g["method"] == "native"]
    assert native and {g["target"] for g in native} == {"fr"} and result["k_rule"].startswith("95th percentile")
    ratios, medians = [], {}
    for lang in {g["target"] for g in native}:
        ppls = [g["ppl"] for g in native if g["target"] == lang and np.isfinite(g["ppl"])]
        medians[lang] = statistics.median(ppls)
        ratios += [p / medians[lang] for p in ppls]
    assert result["k"] == pytest.approx(float(np.percentile(ratios, 95)), rel=1e-12)
    assert result["strict"]["k"] == result["k"] and result["strict"]["native_median"] == pytest.approx(medians)
    rows = {r["language"]: r for r in csv.DictReader((out / "native.csv").open())}
    assert {lang: float(r["median_ppl"]) for lang, r in rows.items()} == pytest.approx(medians, abs=1e-4)
    assert all(int(rows[lang]["n"]) == sum(g["target"] == lang for g in native) for lang in rows)


@pytest.mark.parametrize("command, where, route", [
    ("steer", "langloc.steer.evaluation.native_reference", "rerun the same command into the same folder"),
    ("validate", "langloc.validate.validation.collect_shards", "rerun the same command into the same folder"),
    ("ablate", "langloc.evaluate.ablation.perplexity_table", "ablate does not resume: rerun it to start again"),
])
def test_ctrl_c_names_the_resume_route_of_the_interrupted_command(setup, tmp_path, monkeypatch, capsys,
                                                                  command, where, route):
    """Ctrl-C (the SIGINT handler raises cli.Interrupted) inside each command: one line naming
    how *that* command continues; only collect, importance and train take --resume."""
    import importlib

    from langloc.cli import Interrupted, interrupted_message

    root, model, corpus, run = setup

    def stop(*a, **k):
        raise Interrupted()

    assert invoke("identify", run, "--top-rate", "0.05") == 0
    module, name = where.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, stop)
    capsys.readouterr()
    if command == "steer":
        status = _steer_tiny(setup, tmp_path, tmp_path / "s")
    elif command == "validate":
        status = invoke("validate", run, "-o", tmp_path / "v", "--methods", "lape", "--device", "cpu")
    else:
        status = invoke("ablate", run, "--eval-tokens", "128", "--device", "cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 130 and err[-1].startswith("interrupted: finished artefacts are kept; ") and route in err[-1]
    assert "--resume" not in err[-1] and "Traceback" not in "".join(err)
    for resumable in ("collect", "importance"):
        assert "with --resume" in interrupted_message(["langloc", resumable, "-o", "x"])
    assert "--resume" not in interrupted_message(["langloc", "train", "x"])  # it resumes by default


def _kept_steps(out):
    return {p.name: json.loads(p.read_text()) for p in (out / ".parts").glob("*.json")}


def test_steer_rerun_with_another_dtype_recomputes_every_step(setup, tmp_path):
    out = tmp_path / "steer"
    assert _steer_tiny(setup, tmp_path, out, "--dtype", "float32") == 0
    first = _kept_steps(out)
    assert first and all(d["settings"]["compute"]["dtype"] == "float32" for d in first.values())
    assert _steer_tiny(setup, tmp_path, out, "--dtype", "bfloat16") == 0
    second = _kept_steps(out)
    assert set(second) == set(first)
    for name, doc in second.items():  # every kept step was made again, in bfloat16, none reused
        assert doc["settings"]["compute"] == {**first[name]["settings"]["compute"], "dtype": "bfloat16"}, name
    # ... and the same command once more reuses every step (the key is not always new).
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / ".parts").glob("*.json")}
    assert _steer_tiny(setup, tmp_path, out, "--dtype", "bfloat16") == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / ".parts").glob("*.json")} == stamps


def test_steer_records_relevance_off_and_a_rerun_with_it_on_recomputes_every_step(setup, tmp_path):
    out = tmp_path / "steer"
    assert _steer_tiny(setup, tmp_path, out) == 0
    result = json.loads((out / "steer.json").read_text())
    assert result["relevance"]["on"] is False and "PMI" in result["relevance"]["criterion"]
    row = next(csv.DictReader((out / "summary.csv").open()))
    assert row["relevance_rate"] == row["relevance_rate_lo"] == row["clas"] == ""  # not judged: no figure
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert not any("relevant" in g or "relevance" in g.get("strict_fails", []) for g in gens)
    first = _kept_steps(out)
    assert first and all(d["settings"]["relevance"]["on"] is False for d in first.values())
    assert _steer_tiny(setup, tmp_path, out, relevance=True) == 0
    second = _kept_steps(out)
    assert set(second) == set(first)
    for name, doc in second.items():  # every kept step made again with relevance judged
        assert doc["settings"]["relevance"] == {"on": True, "others": 4}, name
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert all(isinstance(g["relevant"], bool) for g in gens)
    row = next(csv.DictReader((out / "summary.csv").open()))
    assert 0 <= float(row["relevance_rate_lo"]) <= float(row["relevance_rate"]) <= float(row["relevance_rate_hi"]) <= 1


def test_steer_refuses_relevance_with_too_few_prompts_to_compare_with(setup, capsys, tmp_path):
    root, model, corpus, run = setup
    assert invoke("identify", run, "--method", "thresholding", "--rate", "0.05") == 0
    few = tmp_path / "few.txt"
    few.write_text("In the beginning\nThe word was\nAnd the people\n", encoding="utf-8")
    capsys.readouterr()
    assert invoke("steer", "-n", run / "neurons" / "thresholding.json", "-t", "fr", "--run", run, "-o", tmp_path / "s",
                  "--prompts", few, "--fixed", "on(x2)", "--no-diffmean", "--device", "cpu", "--relevance") == 2
    err = capsys.readouterr().err
    assert "more than 4 distinct held-out prompts, or --no-relevance" in err and err.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--fixed", "on(loudx1)", "--no-diffmean"], "unknown value source"),
    (["--fixed", "on(autox1)@middle", "--no-diffmean"], "positions must be one of"),
    (["--fixed", "on(mean_active)"], "as the study labels it"),
    (["--fixed", "on(x2)"], "give a diffmean(L6x4) setting too"),
    (["--fixed", "diffmean(L1x2)"], "give a neuron setting too"),
    (["--positions", "middle"], "--positions must be one or more of"),
    (["--prompts", "no-such-file.txt"], "prompt file not found"),
    (["-t", "xx"], "has no neurons for xx"),
    (["--max-new-tokens", "0"], "max_new_tokens and batch_size must be positive"),
    (["--min-distinct", "2"], "min_distinct must be in [0.0, 1.0]"),
    (["--target", "fr", "--residual-layers", "x"], "--residual-layers: x: an integer is a layer index"),
    (["--target", "fr", "--residual-layers", "0.6-0.4"], "--residual-layers: 0.6-0.4: a band runs from its lower end"),
    (["--rules", "flip:2"], "--rules"),
    (["--temperature", "0.7"], "add --sample"),
    (["--sample", "--top-k", "-1"], "top_k not negative"),
    (["--methods", "diffmean,svm"], "--methods: unknown svm"),
    (["--methods", "prompting,prompting"], "each method once"),
    (["--methods", "probe"], "no residual sample for fr, en"),
])
def test_steer_bad_input(setup, capsys, tmp_path, args, message):
    root, model, corpus, run = setup
    assert invoke("identify", run, "--method", "thresholding", "--rate", "0.05") == 0
    base = ["steer", "-n", run / "neurons" / "thresholding.json", "-t", "fr", "--run", run, "-o", tmp_path / "s",
            "--device", "cpu"]
    capsys.readouterr()
    assert invoke(*base, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s" / "steer.json").exists()


def test_transfer_with_a_neuron_masked_adapter(setup, tmp_path):
    root, model, corpus, run = setup
    if not (run / "neurons" / "lape.json").exists():
        assert invoke("identify", run, "--top-rate", "0.05") == 0
    out = tmp_path / "transfer.csv"
    assert invoke("transfer", "-n", run / "neurons" / "lape.json", "--language", "fr", "-l", "ru", "-o", out,
                  "--modes", "neurons,none", "--train-items", "4", "--eval-items", "4", "--batch-size", "2",
                  "--save-adapters", tmp_path / "adapters", "--device", "cpu") == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["condition"], r["lang"]) for r in rows] == [("base", "fr"), ("base", "ru"), ("neurons", "fr"),
                                                            ("neurons", "ru"), ("none", "fr"), ("none", "ru")]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    for r in rows:  # paired gains over the unadapted model on the same items; 4 items: too few for an interval
        assert float(r["accuracy_lo"]) <= float(r["accuracy"]) <= float(r["accuracy_hi"])  # Clopper-Pearson: any n
        if r["condition"] == "base":
            assert r["gain_base"] == ""
        else:
            for key in ("gain_base", "margin_gain_base"):
                assert r[f"{key}_lo"] in ("", "nan") and r[f"{key}_hi"] in ("", "nan")
            assert float(r["margin_gain_base"]) != 0.0  # the adapter was trained: the scores moved
    # The saved adapter through the harness, on the same items: the same accuracy as transfer's own.
    harness_out = tmp_path / "harness"
    if importlib.util.find_spec("lm_eval") is not None:
        assert invoke("harness", "-m", model, "--bible-choice", "fr", "--items", "4", "--max-chars", "300",
                      "--adapter", tmp_path / "adapters" / "neurons", "--no-base", "-o", harness_out,
                      "--dtype", "float32", "--device", "cpu") == 0
        acc = {(r["condition"], r["metric"]): float(r["value"]) for r in csv.DictReader((harness_out / "metrics.csv").open())}
        ours = [r for r in rows if (r["condition"], r["lang"]) == ("neurons", "fr")][0]
        assert acc[("adapter:neurons", "acc")] == pytest.approx(float(ours["accuracy"]))
    assert float([r for r in rows if r["condition"] == "neurons"][0]["mask_leak"]) == 0.0
    neurons = [r for r in rows if r["condition"] == "neurons"][0]
    assert (neurons["lora_r"], neurons["lora_alpha"], neurons["gate_only"], neurons["weight_decay"]) == ("8", "16", "False", "0.0")
    # The reference code's preset: the gate projection only, weight decay 0.1; --r overrides it.
    out2 = tmp_path / "mondal.csv"
    assert invoke("transfer", "-n", run / "neurons" / "lape.json", "--language", "fr", "-l", "ru", "-o", out2,
                  "--modes", "neurons", "--preset", "mondal", "--r", "4", "--train-items", "4", "--eval-items", "4",
                  "--batch-size", "2", "--device", "cpu") == 0
    m = [r for r in csv.DictReader(out2.open()) if r["condition"] == "neurons"][0]
    assert (m["lora_r"], m["lora_alpha"], m["gate_only"], m["weight_decay"]) == ("4", "16", "True", "0.1")
    assert invoke("transfer", "-n", run / "neurons" / "lape.json", "--language", "fr", "-l", "ru", "-o", out2,
                  "--preset", "qlora", "--device", "cpu") == 2
