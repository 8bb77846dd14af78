"""The study shape: every study's config round-trips through JSON, the registry covers every
study, and the CLI stays thin (short command functions, no private imports)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from langloc.errors import LanglocError
from langloc.manifest import KINDS
from langloc.studies import STUDIES

CLI = Path(__file__).resolve().parents[1] / "langloc" / "cli.py"
ALL_STUDIES = {"ablate", "steer", "compare", "region-ablate", "perturb", "train", "transfer", "share", "harness",
               "validate", "spread"}

# The fewest settings each Config needs (its required fields), plus a few non-defaults.
EXAMPLES = {
    "ablate": {"run": "runs/x", "languages": "en,fr", "neurons": "runs/x/neurons/lape.json", "window": 64},
    "steer": {"neurons": ["a.json", "b.json"], "targets": "fr,zh", "alphas": "1,1.5", "positions": "all",
              "candidates": ["en", "fr", "zh"]},
    "compare": {"neurons": ["a.json", "b.json"], "names": ["a", "b"]},
    "region-ablate": {"folder": "runs/r", "languages": ("en", "fr"), "regions": "top,mono:fr"},
    "perturb": {"folder": "runs/r", "languages": "en", "dims": "3,7", "value": 0.0},
    "train": {"folder": "runs/r", "language": "fr", "eval_languages": "en,es", "modes": "core,none"},
    "transfer": {"neurons": "a.json", "language": "fr", "eval_languages": ["es"], "r": 4},
    "share": {"languages": "en,fr", "boost": "1.5,2", "causal": True},
    "harness": {"bible_choice": "fr", "intervention": ["iv/half.json"], "limit": 0.5, "include_path": None},
    "validate": {"run": "runs/x", "domain": "gsm-symbolic", "methods": "lape,thresholding", "identify": {"other_max": 0.5}},
    "spread": {"models": "smollm2-135m,gemma-3-270m", "layer": 2, "big": 50.0},
}


def test_the_registry_covers_every_study_each_of_the_same_shape():
    assert set(STUDIES) == ALL_STUDIES == set(EXAMPLES)
    for name, study in STUDIES.items():
        assert dataclasses.is_dataclass(study.Config), name
        assert study.KIND in KINDS, name
        assert callable(study.run) and list(study.run.__code__.co_varnames[:3]) == ["lm", "config", "out"], name
        assert study.Config.__doc__ and study.__doc__, name


@pytest.mark.parametrize("name", sorted(ALL_STUDIES))
def test_config_round_trips_through_json(name):
    Config = STUDIES[name].Config
    config = Config.from_dict(EXAMPLES[name])
    text = config.to_json()
    assert json.loads(text) == config.to_dict()
    again = Config.from_json(text)
    assert again == config
    assert again.to_json() == text
    for f in dataclasses.fields(config):  # list options arrive as tuples, paths as Paths
        value = getattr(config, f.name)
        assert not isinstance(value, list), (name, f.name)


def test_config_types_from_strings_and_json():
    from langloc.studies import perturb, steer

    c = steer.Config(neurons=["a.json"], targets="fr, zh", alphas="1,2.5", residual_layers="6,5-7")
    assert c.neurons == (Path("a.json"),) and c.targets == ("fr", "zh") and c.alphas == (1.0, 2.5)
    assert steer._layer_groups(c.residual_layers) == ("6", "5-7")
    assert perturb.Config(folder="f", languages="en", dims="3,7").dims == (3, 7)
    with pytest.raises(LanglocError, match="unknown setting"):
        steer.Config.from_dict({"neurons": [], "targets": [], "no_such_field": 1})


def _commands():
    for node in ast.parse(CLI.read_text()).body:
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command" for d in node.decorator_list):
            yield node


def test_no_command_function_is_longer_than_40_lines():
    lengths = {f.name: f.end_lineno - f.lineno + 1 for f in _commands()}
    assert len(lengths) >= 16
    assert {k: v for k, v in lengths.items() if v > 40} == {}


def test_the_cli_imports_no_private_name():
    private = []
    for node in ast.walk(ast.parse(CLI.read_text())):
        if isinstance(node, ast.ImportFrom):
            private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_") \
                and node.value.id not in ("self", "cls"):
            private.append(f"{node.value.id}.{node.attr}")
    assert private == []


def test_every_study_command_runs_its_study():
    """Every study command builds its config and calls its run (through _run)."""
    calls = {}
    for f in _commands():
        for node in ast.walk(f):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_run":
                calls[f.name] = node.args[0].value
    assert set(calls.values()) == ALL_STUDIES


def test_identification_methods_are_one_table():
    from langloc.identify.methods import METHODS

    assert {"lape", "thresholding", "expert_units"} <= set(METHODS)
    from typer.testing import CliRunner

    from langloc.cli import app

    help_text = CliRunner().invoke(app, ["identify", "--help"], env={"COLUMNS": "200"}).output
    assert all(name in help_text for name in METHODS)


# -- many processes ------------------------------------------------------------------------------
def test_two_gloo_processes_write_the_single_process_validation(tmp_path):
    """The shards' batches, the bootstrap resamples and every perplexity table's evaluations
    are shared out over two processes; every file (the shards' statistics and the kept steps
    included) is the one process's, written once."""
    import csv

    from langloc.identify import NeuronSet
    from parallel import assert_same_outputs, run_cli
    from report_run import invoke
    from tiny import save_tiny_llama, write_folder_corpus

    model, corpus, run = save_tiny_llama(tmp_path / "tiny"), write_folder_corpus(tmp_path / "corpus"), tmp_path / "run"
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en,fr,ru", "--tokens", "512", "--window", "64",
                  "--batch-size", "2", "-o", run, "--device", "cpu") == 0
    assert invoke("identify", run, "--top-rate", "0.05") == 0
    args = ["validate", run, "--domain", corpus, "--methods", "lape", "--top-rate", "0.05", "--shards", "2",
            "--stats-batch-size", "2", "--resamples", "5", "--control-draws", "2", "--eval-tokens", "128",
            "--window", "16", "--budget-curve", "--device", "cpu"]
    single = run_cli(*args, "-o", tmp_path / "one")
    both = run_cli(*args, "-o", tmp_path / "two", processes=2)
    names = assert_same_outputs(tmp_path / "one", tmp_path / "two")
    assert {"validation.csv", "verdicts.txt", "stability.csv", "conditions.csv", "controls.csv", "domain.csv",
            "budget_curve.csv", "stable_core_lape.json", "validation.manifest.json", "shards/shard1/stats/ru.safetensors",
            ".parts/main.json", ".parts/controls-fr.json"} <= set(names)
    rows = list(csv.DictReader((tmp_path / "two" / "validation.csv").open()))
    assert [r["language"] for r in rows] == ["en", "fr", "ru"]
    controls = list(csv.DictReader((tmp_path / "two" / "controls.csv").open()))
    ns = NeuronSet.load(run / "neurons" / "lape.json")
    assert len(controls) >= 4 and [(r["deactivated"], r["draws"]) for r in controls] == [
        (f"{kind}:{lang}", "2") for lang in ns.languages if ns.count(lang) for kind in ("matched", "random")]
    doc = json.loads((tmp_path / "two" / "validation.manifest.json").read_text())
    assert doc["shard_check"]["over_zero_equal"]  # the shards counted by two processes add up to the run
    for done in (single, both):  # one process prints the table
        assert done.stdout.count("validate (perplexity ratios") == 1, done.stdout
    # ... and the work was shared: the first of two processes ran half the evaluations (rounded up).
    runs = [int(re.search(r"validate: sets: 100%\S* (\d+)/", d.stderr).group(1)) for d in (single, both)]
    assert runs[0] >= 4 and runs[1] == -(-runs[0] // 2)
