"""One rule for study files (docs/studies.md, "Who writes what"): the study module
langloc/studies/<name>.py writes every output file of its study and its manifest; the core
computes and returns results and writes nothing, except a resumable cache under a folder it is
given (langloc.artefacts' cache helpers) and per-item artefacts that are their own kind
(interventions, adapters, per-mode train.json).

Checked with ``ast``: no core module of a study calls a manifest writer or an output writer
(below), except the calls this table allows, each with its reason. And: no function in
langloc/ outside cli.py has more than 12 parameters."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import langloc
from langloc.studies import STUDIES

PKG = Path(langloc.__file__).parent

# What writes a study's output or manifest: called by name (f(...)) or as an attribute (x.f(...)).
WRITERS = {"make_manifest", "stamp", "write_manifest", "write_json", "write_csv", "write_text", "write_ablation_csv",
           "savefig", "save_file", "to_csv"}
# and every plot (plot_*, from langloc.plotting or a study's plots module)
WRITER_PREFIXES = ("plot_",)

# study -> (its core modules, {(module, writer): why it is allowed})
CORES = {
    "ablate": (["evaluate/ablation.py"], {}),
    "compare": (["identify/compare.py"], {}),
    # (regions/regions.py's Regions.save writes regions.safetensors: the regions step's artefact, not this study's)
    "region-ablate": (["regions/ablation.py"], {}),
    "perturb": (["regions/dimensions.py"], {}),
    "spread": (["regions/spread.py"], {}),
    "validate": (["validate/validation.py", "validate/stability.py", "validate/shards.py", "validate/budget.py",
                  "validate/conditions.py", "validate/verdicts.py"], {}),
    "steer": (["steer/evaluation.py"], {}),
    "share": (["share/analysis.py"], {}),
    "transfer": (["adapters/transfer.py"], {}),
    "train": (["train/trainer.py"], {("train/trainer.py", w): "one mode's own folder (train.json, its CSVs and plot): an artefact of its own kind that resume reads"
                                      for w in ("write_csv", "make_manifest", "stamp", "plot_training", "write_json")}),
    "harness": (["evaluate/harness.py"], {
        ("evaluate/harness.py", w): "the task files lm-evaluation-harness reads (inputs of the run, not its outputs)"
        for w in ("write_text", "write_json")}),
}


def _writer_calls(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every call of a writer in a module, except inside a writer's own
    definition (e.g. write_ablation_csv, which the study modules call)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside_writers = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in WRITERS
                      for n in ast.walk(f)}
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and id(node) not in inside_writers:
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in WRITERS or name.startswith(WRITER_PREFIXES):
                calls.append((node.lineno, name))
    return calls


def violations(study: str) -> list[str]:
    modules, allowed = CORES[study]
    bad = []
    for rel in modules:
        for line, name in _writer_calls(PKG / rel):
            if (rel, name) not in allowed:
                bad.append(f"langloc/{rel}:{line} calls {name}: {study}'s core writes an output; return it and let "
                           f"langloc/studies/{study.replace('-', '_')}.py write it")
    return bad


def test_every_study_has_its_cores_listed():
    assert set(CORES) == set(STUDIES)
    for study, (modules, allowed) in CORES.items():
        assert {m for m, _ in allowed} <= set(modules), study


@pytest.mark.parametrize("study", sorted(CORES))
def test_a_study_core_writes_no_output_and_no_manifest(study):
    modules, _ = CORES[study]
    missing = [m for m in modules if not (PKG / m).is_file()]
    assert not missing, missing
    assert violations(study) == []


def test_the_check_names_a_core_that_writes(tmp_path, monkeypatch):
    """A core module that writes a CSV or stamps a manifest is named, with the line."""
    (tmp_path / "core.py").write_text("from langloc.artefacts import write_csv\n\ndef f(rows, out):\n"
                                      "    write_csv(out, rows, ['a'])\n    return m.stamp(rows, 1)\n\n"
                                      "def write_json(path, obj):\n    write_text(path, str(obj))\n")
    monkeypatch.setattr(__import__(__name__), "PKG", tmp_path)
    monkeypatch.setitem(CORES, "compare", (["core.py"], {}))
    assert [v.split(": ")[0] for v in violations("compare")] == ["langloc/core.py:4 calls write_csv",
                                                                 "langloc/core.py:5 calls stamp"]


# -- no long parameter lists ---------------------------------------------------------------------
MAX_PARAMS = 12


def _parameters(f: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = f.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + bool(a.vararg) + bool(a.kwarg)


def long_functions(root: Path = PKG) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "cli.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _parameters(node) > MAX_PARAMS:
                out.append(f"{path.relative_to(root).as_posix()}:{node.name} ({_parameters(node)})")
    return out


def test_no_function_outside_the_cli_has_more_than_12_parameters():
    """Settings travel as configs (docs/studies.md), not as long keyword lists."""
    assert long_functions() == []


def test_the_parameter_check_counts_self_out(tmp_path):
    args = ", ".join(f"a{i}" for i in range(12))
    (tmp_path / "m.py").write_text(f"def ok(self, {args}): pass\ndef over({args}, *, b): pass\n"
                                   f"def star({args}, **kw): pass\n")
    assert long_functions(tmp_path) == ["m.py:over (13)", "m.py:star (13)"]
