"""One manifest: every artefact kind is written on a tiny model, loaded back through the one
loader and its manifest fields checked; foreign, older-format, newer-format and other-model
artefacts are refused with one line that says what to do; no module imports the top-level
package; only the CLI and the demo import the report, and the report imports no study."""

import ast
import datetime
import json
import shutil
from pathlib import Path

import pytest

import langloc
from langloc.errors import LanglocError
from langloc.identify import NeuronSet
from langloc.manifest import FIELDS, FORMAT_VERSION, KINDS, read_manifest, read_safetensors_manifest
from langloc.models import load_model
from test_cli import error_line, invoke
from tiny import save_tiny_llama, write_folder_corpus

DEV = ("--device", "cpu")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every CLI command that writes an artefact, once, on a tiny model."""
    root = tmp_path_factory.mktemp("manifest")
    model = save_tiny_llama(root / "tiny")
    corpus = write_folder_corpus(root / "corpus")
    run, cmp_, steer, reg, forget = (root / n for n in ("run", "cmp", "steer", "regions", "forget"))
    prompts = root / "prompts.txt"
    prompts.write_text("In the beginning\nThe word was\n", encoding="utf-8")
    commands = [
        ["collect", "-m", model, "--corpus", corpus, "-l", "en,fr", "--tokens", "256", "--window", "64", "-o", run,
         "--segments", "4", "--segment-tokens", "16", "--seed", "3", "--residual-sample", "8", *DEV],
        ["identify", run, "--top-rate", "0.05"],
        ["identify", run, "--method", "thresholding", "--rate", "0.05"],
        ["ablate", run, "--eval-tokens", "128", "--seed", "5", *DEV],
        ["compare", run / "neurons" / "lape.json", run / "neurons" / "thresholding.json", "-o", cmp_],
        ["steer", "-n", run / "neurons" / "thresholding.json", "-t", "fr", "--run", run, "-o", steer,
         "--prompts", prompts, "--fixed", "on(autox1)", "--fixed", "diffmean(L1x4)", "--max-new-tokens", "3",
         "--no-controls", "--no-relevance", *DEV],
        ["transfer", "-n", run / "neurons" / "lape.json", "--language", "fr", "-l", "ru", "-o", root / "transfer.csv",
         "--modes", "none", "--train-items", "2", "--eval-items", "2", "--batch-size", "2",
         "--save-adapters", root / "adapters", *DEV],
        ["importance", "-m", model, "--corpus", corpus, "-l", "en,fr", "--tokens", "64", "--window", "64", "-o", reg,
         *DEV],
        ["regions", reg, "--rate", "0.05", "--probe-tokens", "64", *DEV],
        ["region-ablate", reg, "-l", "en", "--regions", "top", "--eval-tokens", "128", *DEV],
        ["perturb", reg, "-l", "en", "--eval-tokens", "128", *DEV],
        ["train", reg, "--language", "fr", "-l", "en", "-o", forget, "--modes", "none", "--steps", "1",
         "--batch-size", "1", "--eval-every", "1", "--eval-tokens", "64", "--warmup", "0", "--no-train-embeddings",
         *DEV],
        ["share", "-m", model, "--tasks", "bible-lm", "-l", "en,fr", "--items", "2", "--max-chars", "40",
         "-o", root / "share", *DEV],
        ["validate", run, "--shards", "2", "--stats-batch-size", "1", "--resamples", "2", "--control-draws", "1",
         "--methods", "lape", "--top-rate", "0.05", "--eval-tokens", "64", "--window", "32", *DEV],
        ["export", run, "--diffmean", "en-fr", "-o", root / "export"],
        ["spread", model, "--corpus", corpus, "--tokens", "64", "--window", "32", "-o", root / "spread.csv", *DEV],
    ]
    for args in commands:
        assert invoke(*args) == 0, args
    return root, model


def _harness(tmp_path, lm, monkeypatch):
    """results.json of the harness study, with the harness itself replaced (no lm_eval needed)."""
    import langloc.evaluate.harness as h

    from langloc.studies import harness

    monkeypatch.setattr(h, "harness_evaluate", lambda lm, tasks, **kw: {
        "results": {t: {"acc,none": 0.5} for t in tasks}, "n-samples": {}})
    harness.run(lm, harness.Config(tasks=("xnli_fr",), seed=4), tmp_path / "harness")
    return tmp_path / "harness" / "results.json"


# kind -> (file under the fixture's root, the subcommand that wrote it, whether it names a corpus)
WRITTEN = {
    "langloc.run": ("run/run.json", "collect", True),
    "langloc.stats": ("run/stats/fr.safetensors", "collect", True),
    "langloc.responses": ("run/responses/en.safetensors", "collect", True),
    "langloc.residual_sample": ("run/residual_sample/fr.safetensors", "collect", True),
    "langloc.neuron_set": ("run/neurons/lape.json", "identify", True),
    "langloc.ablation": ("run/ablation.manifest.json", "ablate", True),
    "langloc.compare": ("cmp/compare.manifest.json", "compare", True),
    "langloc.intervention": ("steer/interventions/thresholding-en-fr.json", "steer", False),
    "langloc.steer": ("steer/steer.json", "steer", False),
    "langloc.transfer": ("transfer.manifest.json", "transfer", True),
    "langloc.adapter": ("adapters/none/langloc_adapter.json", "transfer", False),
    "langloc.importance": ("regions/importance.json", "importance", True),
    "langloc.importance_scores": ("regions/importance/en.safetensors", "importance", True),
    "langloc.regions": ("regions/regions.safetensors", "regions", True),
    "langloc.regions_summary": ("regions/regions.json", "regions", True),
    "langloc.region_ablation": ("regions/region_ablation.manifest.json", "region-ablate", True),
    "langloc.perturb": ("regions/perturb.manifest.json", "perturb", True),
    "langloc.train": ("forget/none/train.json", "train", True),
    "langloc.forgetting": ("forget/forgetting.manifest.json", "train", True),
    "langloc.share": ("share/share.json", "share", True),
    "langloc.harness": (None, None, True),
    "langloc.validation": ("run/validate/validation.manifest.json", "validate", True),
    "langloc.spread": ("spread.manifest.json", "spread", True),
    "langloc.export": ("export/langloc.json", "export", True),
    "langloc.planted": (None, None, False),  # made for its own model: checked against that one
}


def test_every_kind_is_covered():
    assert set(WRITTEN) == set(KINDS)


@pytest.mark.parametrize("kind", list(WRITTEN))
def test_every_artefact_kind_carries_the_manifest(made, kind, tmp_path, monkeypatch):
    root, model = made
    lm = load_model(str(model), device="cpu")
    rel, command, has_corpus = WRITTEN[kind]
    if kind == "langloc.planted":
        from langloc.planted import build_planted

        path = build_planted(tmp_path / "planted") / "truth.json"
        lm = load_model(str(tmp_path / "planted" / "model"), device="cpu")
    else:
        path = _harness(tmp_path, lm, monkeypatch) if rel is None else root / rel
    if path.suffix == ".safetensors":
        doc = read_safetensors_manifest(path, kind, model_meta=lm.meta)
    else:
        doc = read_manifest(path, kind, model_meta=lm.meta)
    assert list(doc)[:len(FIELDS)] == list(FIELDS)  # the manifest first, in one order
    assert doc["kind"] == kind and doc["format_version"] == FORMAT_VERSION
    assert doc["langloc_version"] == langloc.__version__
    for key in ("name", "revision", "weights_fingerprint", "tokenizer_fingerprint", "neuron_site", "num_layers"):
        assert doc["model"][key] == lm.meta[key], key
    assert (doc["corpus"] is not None) == has_corpus
    assert isinstance(doc["config"], dict) and doc["config"]
    assert isinstance(doc["seeds"], dict)
    if command is not None:
        assert doc["command"][:2] == ["langloc", command]
    assert datetime.datetime.fromisoformat(doc["created"]).tzinfo is not None
    if kind != "langloc.intervention":  # written inside the steering study, no time of its own
        assert isinstance(doc["wall_seconds"], float) and doc["wall_seconds"] >= 0
    assert {"cpu", "cpu_class", "threads", "torch", "transformers"} <= set(doc["machine"])
    if path.name.endswith(".manifest.json"):  # a study's CSV outputs, listed beside them
        assert doc["outputs"] and all((path.parent / p).is_file() for p in doc["outputs"])


def test_seeds_and_config_are_those_given(made):
    root, _ = made
    run = json.loads((root / "run" / "run.json").read_text())
    assert run["seeds"] == {"data": 3} and run["config"] == {"window": 64, "tokens": 256} and run["split"] == "stats"
    assert run["languages"] == ["en", "fr"] and run["seed"] == 3  # the run's own fields stay
    ablation = json.loads((root / "run" / "ablation.manifest.json").read_text())
    assert ablation["seeds"] == {"controls": 5} and ablation["split"] == "eval"
    assert ablation["outputs"] == ["ablation.csv", "plots/ablation.png"]
    ns = NeuronSet.load(root / "run" / "neurons" / "lape.json")
    assert ns.meta["model"]["name"] == str(root / "tiny") and "command" not in ns.meta


# -- refusals: one line that says what to do ---------------------------------------------------

def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def test_a_foreign_file_is_refused(tmp_path, made):
    root, _ = made
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(LanglocError) as e:
        NeuronSet.load(tmp_path / "x.json")
    msg = _one_line(e)
    assert "is not a langloc neuron set (it has no langloc manifest)" in msg and "`langloc identify`" in msg
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(LanglocError, match="not a JSON object"):
        NeuronSet.load(tmp_path / "list.json")
    # Another kind of langloc artefact is named for what it is.
    with pytest.raises(LanglocError) as e:
        NeuronSet.load(root / "run" / "run.json")
    assert "is not a langloc neuron set (it is a langloc run file)" in _one_line(e)


def _as_format_1(doc: dict, kind) -> dict:
    """What the same artefact looked like before the manifest."""
    old = {k: v for k, v in doc.items() if k not in ("format_version", "split", "config", "seeds", "command",
                                                     "created", "wall_seconds", "machine")}
    if kind is None:
        old.pop("kind")
    else:
        old["kind"] = kind
    return old


@pytest.mark.parametrize("rel, old_kind, load, remake", [
    ("run/neurons/lape.json", "langloc.neuron_set", lambda p: NeuronSet.load(p), "langloc identify"),
    ("run/run.json", None, lambda p: read_manifest(p, "langloc.run"), "langloc collect"),  # run.json had no kind
    ("forget/none/train.json", "training", lambda p: read_manifest(p, "langloc.train"), "langloc train"),
    ("steer/steer.json", None, lambda p: read_manifest(p, "langloc.steer"), "langloc steer"),
])
def test_an_older_format_artefact_is_refused(made, tmp_path, rel, old_kind, load, remake):
    root, _ = made
    path = tmp_path / Path(rel).name
    path.write_text(json.dumps(_as_format_1(json.loads((root / rel).read_text()), old_kind)))
    with pytest.raises(LanglocError) as e:
        load(path)
    msg = _one_line(e)
    assert "was written by an older langloc (format 1, this langloc reads 2)" in msg
    assert f"remake it with `{remake}`" in msg


def test_an_older_run_folder_is_refused_by_the_cli(made, tmp_path, capsys):
    root, _ = made
    run = tmp_path / "old"
    shutil.copytree(root / "run", run)
    (run / "run.json").write_text(json.dumps(_as_format_1(json.loads((run / "run.json").read_text()), None)))
    assert invoke("identify", run) == 2
    assert "older langloc" in error_line(capsys)


def test_a_newer_format_artefact_is_refused(made, tmp_path):
    root, _ = made
    doc = json.loads((root / "run" / "neurons" / "lape.json").read_text())
    (tmp_path / "new.json").write_text(json.dumps({**doc, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(LanglocError) as e:
        NeuronSet.load(tmp_path / "new.json")
    assert "written by a newer langloc" in _one_line(e) and "upgrade langloc" in str(e.value)


def test_an_artefact_of_another_model_is_refused(made, tmp_path, capsys):
    root, _ = made
    other = load_model(str(save_tiny_llama(tmp_path / "other", seed=7)), device="cpu")
    for rel, kind in [("run/run.json", "langloc.run"), ("run/neurons/lape.json", "langloc.neuron_set"),
                      ("steer/steer.json", "langloc.steer"), ("forget/none/train.json", "langloc.train")]:
        with pytest.raises(LanglocError) as e:
            read_manifest(root / rel, kind, model_meta=other.meta)
        msg = _one_line(e)
        assert "was made for model" in msg and "weights_fingerprint" in msg and "remake it" in msg
    with pytest.raises(LanglocError) as e:
        read_safetensors_manifest(root / "regions" / "regions.safetensors", "langloc.regions", model_meta=other.meta)
    assert "was made for model" in _one_line(e)
    # Through the CLI: one line, exit status 2, nothing written.
    run = shutil.copytree(root / "run", tmp_path / "run", ignore=shutil.ignore_patterns("ablation*"))
    assert invoke("ablate", run, "--model", tmp_path / "other", "--eval-tokens", "64", *DEV) == 2
    assert "was made for model" in error_line(capsys)
    assert not list(run.glob("ablation*"))


# -- no back-imports -------------------------------------------------------------------------

def test_no_module_imports_the_top_level_package():
    pkg = Path(langloc.__file__).parent
    submodules = {p.stem for p in pkg.glob("*.py")} | {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    offenders = []
    for path in pkg.rglob("*.py"):
        if path == pkg / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and any(a.name == "langloc" for a in node.names):
                offenders.append(f"{path.relative_to(pkg)}:{node.lineno} import langloc")
            if isinstance(node, ast.ImportFrom) and node.module == "langloc" and node.level == 0:
                names = [a.name for a in node.names if a.name not in submodules]
                if names:  # `from langloc import distributed` (a submodule) is fine; a package name is not
                    offenders.append(f"{path.relative_to(pkg)}:{node.lineno} from langloc import {', '.join(names)}")
    assert not offenders, offenders


# The report sits on top: it reads manifests and results, and only the CLI and the demo import it.
# Domain code draws with langloc.plotting; the CLI's console tables are langloc.console.
REPORT_USERS = {"cli.py", "demo.py"}
STUDY_CORES = ("langloc.steer.evaluation", "langloc.validate.validation", "langloc.share.analysis",
               "langloc.adapters.transfer", "langloc.train.trainer")
ABOVE_THE_REPORT = STUDY_CORES + ("langloc.studies", "langloc.workflows", "langloc.console", "langloc.cli",
                                  "langloc.demo")


def _imports(path: Path, pkg: Path):
    """(line, modules) for every import statement in a file, also those inside functions;
    ``from a import b, c`` gives a, a.b and a.c (b may be a submodule); relative imports resolved."""
    package = list(path.relative_to(pkg.parent).with_suffix("").parts[:-1])  # of an __init__.py: its own
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield node.lineno, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            yield node.lineno, [base] + [f"{base}.{a.name}" for a in node.names]


def _within(modules: list[str], names) -> str | None:
    """The first of ``modules`` that is one of ``names`` or inside one, else None."""
    return next((m for m in modules for n in names if m == n or m.startswith(n + ".")), None)


def test_only_the_cli_and_the_demo_import_the_report_and_the_report_runs_no_study():
    pkg = Path(langloc.__file__).parent
    users, upward, down = set(), [], []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        in_report = rel.startswith("report/")
        for line, modules in _imports(path, pkg):
            if report := _within(modules, ["langloc.report"]):
                users.add(rel)
                if not in_report and rel not in REPORT_USERS:
                    upward.append(f"{rel}:{line} {report}")
            if in_report and (above := _within(modules, ABOVE_THE_REPORT)):
                down.append(f"{rel}:{line} {above}")
    assert "cli.py" in users  # the walk sees imports (the CLI's report import is inside a function)
    assert upward == [], f"only cli.py, demo.py and report/ import langloc.report: {upward}"
    assert down == [], f"report/ reads outputs; it imports no study, workflow or CLI module: {down}"
    # Nor through another module: importing langloc.share.categories runs langloc/share/__init__.py,
    # which imports langloc.share.analysis. Every import counts, those inside functions too.
    modules = {".".join(p.relative_to(pkg.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in pkg.rglob("*.py")}
    via = {m: None for m in modules if m.startswith("langloc.report")}  # module -> the module importing it
    todo = list(via)
    while todo:  # breadth first: the chains found are the shortest
        m = todo.pop(0)
        if _within([m], ABOVE_THE_REPORT):
            continue  # reported below; what it imports in turn is not the report's doing
        parents = [m.rsplit(".", k)[0] for k in range(1, m.count(".") + 1)]  # its packages' __init__.py run first
        for dep in parents + [d for _, ds in _imports(modules[m], pkg) for d in ds if d in modules]:
            if dep not in via:
                via[dep] = m
                todo.append(dep)

    def chain(m):
        return chain(via[m]) + [m] if via[m] else [m]

    reached = [" -> ".join(chain(m)) for m in via if _within([m], ABOVE_THE_REPORT)]
    assert reached == [], f"report/ runs a study through other modules: {reached}"


def test_a_kept_step_is_reused_only_with_the_settings_that_made_it(tmp_path):
    from langloc.artefacts import cached_step

    calls = []

    def compute(value):
        return lambda: calls.append(value) or {"value": value}

    assert cached_step(tmp_path, "step", {"k": 1}, compute(1)) == {"value": 1}
    assert cached_step(tmp_path, "step", {"k": 1}, compute(2)) == {"value": 1}  # kept: not computed again
    assert cached_step(tmp_path, "step", {"k": 2}, compute(3)) == {"value": 3}  # other settings: recomputed
    (tmp_path / "step.json").write_bytes(b"\xff{ damaged")
    assert cached_step(tmp_path, "step", {"k": 2}, compute(4)) == {"value": 4}  # damaged: recomputed, not a traceback
    assert calls == [1, 3, 4]
    assert cached_step(None, "step", {"k": 2}, compute(5)) == {"value": 5} and calls[-1] == 5  # no folder: nothing kept


def test_a_resumed_study_still_knows_what_its_steps_cost(tmp_path):
    import time

    from langloc.artefacts import cached_step, step_seconds

    first = {}
    cached_step(tmp_path, "slow", {}, lambda: time.sleep(0.2) or 1, seconds=first)
    assert first["slow"] >= 0.2
    again = {}  # the next invocation reuses the step and is handed the time it took when computed
    cached_step(tmp_path, "slow", {}, lambda: 2, seconds=again)
    cached_step(tmp_path, "fresh", {}, lambda: 3, seconds=again)
    assert again["slow"] == first["slow"] and step_seconds(again) == round(first["slow"] + again["fresh"], 1)
    doc = json.loads((tmp_path / "slow.json").read_text())
    del doc["seconds"]  # a step kept before timings were: the total is unknown, not understated
    (tmp_path / "slow.json").write_text(json.dumps(doc))
    late = {}
    cached_step(tmp_path, "slow", {}, lambda: 4, seconds=late)
    assert late == {"slow": None} and step_seconds(late) is None


def test_every_manifest_kind_is_written_once_in_langloc_kinds():
    """A kind string ("langloc.steer", ...) appears as a string constant only in langloc/kinds.py;
    writers and readers use the constant (docstrings may name a kind in prose)."""
    import ast
    from pathlib import Path

    from langloc import kinds
    from langloc.manifest import KINDS

    values = {v for k, v in vars(kinds).items() if k.isupper()}
    assert values == set(KINDS), "kinds.py and the table of kinds in manifest.py list the same kinds"
    root = Path(__file__).resolve().parents[1] / "langloc"
    found = []
    for path in root.rglob("*.py"):
        if path.name == "kinds.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        found += [f"{path.relative_to(root.parent)}:{n.lineno} {n.value}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and n.value in values and id(n) not in docs]
    assert not found, found
