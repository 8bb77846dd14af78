"""The region commands end to end on a tiny local model: importance -> regions ->
region-ablate -> perturb, and their bad input (one clear line, nothing half-written)."""

import csv
import json

import pytest

from langloc.regions.regions import Regions
from test_cli import error_line, invoke
from tiny import save_tiny_llama, write_folder_corpus


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("regions")
    model = save_tiny_llama(root / "tiny")
    corpus = write_folder_corpus(root / "corpus")
    out = root / "regions"
    assert invoke("importance", "-m", model, "--corpus", corpus, "-l", "en,fr,ru", "--tokens", "128",
                  "--window", "64", "-o", out, "--device", "cpu") == 0
    assert invoke("regions", out, "--rate", "0.05", "--probe-tokens", "128", "--device", "cpu") == 0
    return root, model, corpus, out


def test_regions_ablation_and_perturbation_end_to_end(folder, capsys):
    root, model, corpus, out = folder
    assert sorted(p.name for p in (out / "importance").glob("*.safetensors")) == ["en.safetensors", "fr.safetensors",
                                                                                  "ru.safetensors"]
    regions = Regions.load(out / "regions.safetensors")
    assert regions.names == ["top", "bottom", "random", "mono:en", "mono:fr", "mono:ru", "mono-bottom:en", "mono-bottom:fr", "mono-bottom:ru"]
    assert regions.meta["rounding"] == "floor"
    # Sizes round down as the reference code's int(rate * numel): 0.05 of a 64 x 32 matrix is 102.4 -> 102.
    sizes = {p: len(i) for p, i in regions["top"].items()}
    assert all(len(i) == max(1, int(0.05 * regions.meta["shapes"][p][0] * (regions.meta["shapes"][p] + [1])[1]))
               for p, i in regions["top"].items()), sizes
    assert invoke("regions", out, "--rounding", "ceil", "--device", "cpu") == 2
    summary = json.loads((out / "regions.json").read_text())
    assert len(summary["densest_dimensions"]) == 5 and summary["rate"] == 0.05
    dims = list(csv.DictReader((out / "dimensions.csv").open()))
    assert len(dims) == 32 and int(dims[0]["top_entries"]) >= int(dims[-1]["top_entries"])
    assert (out / "plots" / "regions.png").stat().st_size > 0

    assert invoke("region-ablate", out, "-l", "en,fr", "--eval-tokens", "128", "--device", "cpu") == 0
    rows = list(csv.DictReader((out / "region_ablation.csv").open()))
    assert [(r["deactivated"], r["evaluated"]) for r in rows[:2]] == [("top", "en"), ("top", "fr")]
    assert len(rows) == 6 * 2
    assert all(float(r["ratio_lo"]) <= float(r["ratio"]) <= float(r["ratio_hi"]) for r in rows)
    assert (out / "plots" / "region_ablation.png").stat().st_size > 0

    assert invoke("perturb", out, "-l", "en", "--eval-tokens", "128", "--device", "cpu") == 0
    rows = list(csv.DictReader((out / "perturb.csv").open()))
    assert [r["kind"] for r in rows] == ["densest", "ordinary"] and rows[0]["operation"] == "x4"
    # A second case goes to its own CSV (-o), beside the first, which it leaves as it was.
    first = (out / "perturb.csv").read_bytes()
    assert invoke("perturb", out, "-l", "en", "--matrix", "1.mlp.down_proj", "--dims", "3", "--whole",
                  "--value", "0", "--eval-tokens", "128", "--device", "cpu", "-o", out / "whole.csv") == 0
    rows = list(csv.DictReader((out / "whole.csv").open()))
    assert rows[0]["parameter"] == "model.layers.1.mlp.down_proj.weight" and rows[0]["operation"] == "=0"
    assert (out / "perturb.csv").read_bytes() == first and (out / "whole.manifest.json").exists()


@pytest.mark.parametrize("args, message", [
    (["regions", "{out}", "--rate", "0.7"], "rate must be in"),
    (["perturb", "{out}", "-l", "en", "--matrix", "9.mlp.nothing"], "no single decoder matrix"),
    (["perturb", "{out}", "-l", "en", "--dims", "a,b"], "--dims must be"),
    (["perturb", "{out}", "-l", "en", "--scale", "2", "--value", "1"], "not both"),
    (["regions", "{root}"], "importance folder description"),
    (["importance", "-m", "{model}", "--corpus", "{corpus}", "-l", "en", "--tokens", "128", "--window", "64",
      "--precision", "float8", "-o", "{root}/x"], "precision must be"),
])
def test_region_commands_bad_input(folder, capsys, args, message):
    root, model, corpus, out = folder
    args = [a.format(out=out, root=root, model=model, corpus=corpus) for a in args]
    assert invoke(*args, "--device", "cpu") == 2
    assert message in error_line(capsys)


def test_train_with_each_freezing_mode(folder, tmp_path):
    root, model, corpus, out = folder
    dest = tmp_path / "forget"
    assert invoke("train", out, "--language", "fr", "-l", "en,ru", "-o", dest, "--steps", "2", "--batch-size", "1",
                  "--eval-every", "1", "--eval-tokens", "64", "--warmup", "0", "--lr", "1e-3",
                  "--no-train-embeddings", "--device", "cpu") == 0
    rows = list(csv.DictReader((dest / "forgetting.csv").open()))
    assert {r["mode"] for r in rows} == {"core", "random", "none"}
    assert {r["language"] for r in rows} == {"fr", "en", "ru"} and {r["step"] for r in rows} == {"0", "1", "2"}
    assert (dest / "plots" / "forgetting.png").stat().st_size > 0 and (dest / "summary.csv").stat().st_size > 0
    # The step-0 perplexities are the same model's in every mode.
    start = {(r["language"], r["ppl"]) for r in rows if r["step"] == "0"}
    assert len(start) == 3


def test_train_refuses_an_unknown_mode(folder, capsys, tmp_path):
    root, model, corpus, out = folder
    assert invoke("train", out, "--language", "fr", "-l", "en", "-o", tmp_path / "x", "--modes", "core,all") == 2
    assert "unknown mode(s) all" in error_line(capsys)
