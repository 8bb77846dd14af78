"""How far one perturbed weight moves the residual stream, with and without a block output norm."""
from __future__ import annotations

import pytest
import torch
from conftest import CharTokenizer, tiny_model

from langloc.errors import LanglocError
from langloc.models.loading import bind
from langloc.regions.dimensions import entry_on_dimension
from langloc.regions.spread import SITES, perturbation_spread

DOWN = "model.layers.1.mlp.down_proj.weight"
WINDOWS = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(0))


def _lm(arch):
    return bind(tiny_model(arch, layers=3, width=32), CharTokenizer(), f"tiny-{arch}")


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_an_unchanged_weight_moves_nothing_and_the_model_is_restored(arch):
    lm = _lm(arch)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    got = perturbation_spread(lm, DOWN, WINDOWS, index=entry_on_dimension(lm, DOWN, 5), scale=1.0)
    assert all(got[s] == 0.0 for s in SITES if got[s] is not None)
    got = perturbation_spread(lm, DOWN, WINDOWS, dim=5, scale=4.0)
    assert got["block_output"] > 0 and got["residual"] > 0 and got["final_hidden"] > 0
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_a_block_output_norm_bounds_what_one_blown_up_weight_writes():
    llama, gemma = _lm("llama"), _lm("gemma3_text")
    got = {lm.name: perturbation_spread(lm, DOWN, WINDOWS, index=entry_on_dimension(lm, DOWN, 5), scale=1e4)
           for lm in (llama, gemma)}
    ll, ge = got["tiny-llama"], got["tiny-gemma3_text"]
    assert ll["has_output_norm"] is False and ll["after_output_norm"] is None
    assert ge["has_output_norm"] is True and ge["after_output_norm"] is not None
    assert ll["block_output"] > 10 and ge["block_output"] > 10  # the MLP output itself blows up in both
    # RMSNorm rescales each token to a fixed size (times its per-dimension weight): the change stays of that size.
    assert ge["after_output_norm"] < 3
    assert ll["residual"] > 10 * ge["residual"]


def test_a_parameter_outside_the_decoder_layers_is_refused():
    lm = _lm("llama")
    with pytest.raises(LanglocError, match="decoder-layer"):
        perturbation_spread(lm, "model.embed_tokens.weight", WINDOWS, index=0, scale=4.0)


def test_the_spread_command_measures_each_model_on_the_same_cases_and_signs_its_csv(tmp_path, capsys):
    import csv

    from langloc.manifest import manifest_file, read_manifest
    from report_run import invoke
    from test_cli import error_line
    from tiny import save_tiny_llama, write_folder_corpus

    models = [save_tiny_llama(tmp_path / "a", seed=0), save_tiny_llama(tmp_path / "b", seed=1)]
    corpus = write_folder_corpus(tmp_path / "corpus")
    out = tmp_path / "spread.csv"
    assert invoke("spread", *models, "--corpus", corpus, "--tokens", "128", "--window", "32", "--layer", "1",
                  "-o", out, "--device", "cpu") == 0
    rows = list(csv.DictReader(out.open()))
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    assert len(by_model) == 2 and len(rows) == 24  # 2 matrices x 2 dimensions x 3 operations, per model
    assert [r["operation"] for r in rows[:3]] == ["x4", "=100", "column=0"]
    assert all(float(r["ppl_ratio"]) > 0 and float(r["residual"]) >= 0 for r in rows)
    doc = read_manifest(manifest_file(out), "langloc.spread")
    assert [m["weights_fingerprint"] for m in doc["models"]] != [None, None] and len(doc["models"]) == 2
    assert doc["outputs"] == ["spread.csv"] and doc["config"]["layer"] == 1
    capsys.readouterr()
    assert invoke("spread", models[0], "--corpus", corpus, "--layer", "9", "-o", tmp_path / "x.csv",
                  "--device", "cpu") == 2
    assert "--layer 9" in error_line(capsys) and not (tmp_path / "x.csv").exists()
