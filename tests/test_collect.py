"""Activation statistics: exact counts, int64, decoder body only, incremental runs."""

import json

import pytest
import torch

from langloc.data import FolderCorpus, corpus_windows
from langloc.errors import LanglocError
from langloc.models import load_model
from langloc.stats import ActivationStats, collect
from tiny import save_tiny_llama, write_folder_corpus


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_model(str(save_tiny_llama(tmp_path_factory.mktemp("m") / "tiny")), device="cpu")


@pytest.fixture()
def corpus(tmp_path):
    return FolderCorpus(write_folder_corpus(tmp_path / "corpus"))


def test_counts_equal_brute_force_over_stored_activations(lm, corpus, tmp_path):
    stats = collect(lm, corpus, ["en", "ru"], out=tmp_path / "run", tokens=640, window=64, batch_size=3, progress=False)
    for k, lang in enumerate(["en", "ru"]):
        ids = corpus_windows(lm, corpus, lang, "stats", window=64, max_tokens=640)
        acts = []
        hooks = [m.register_forward_hook(lambda mod, a, out: acts.append(out[:, 1:].detach())) for m in lm.neuron_modules]
        with torch.no_grad():
            lm.body(input_ids=ids)
        for h in hooks:
            h.remove()
        per_layer = torch.stack([a.reshape(-1, a.shape[-1]) for a in acts])  # [L, tokens, I]
        assert stats.over_zero.dtype == torch.int64
        assert int(stats.n[k]) == ids.shape[0] * 63  # BOS position skipped
        assert torch.equal(stats.over_zero[k], (per_layer > 0).sum(1))
        expect_mean = torch.where(per_layer > 0, per_layer, 0).sum(1) / (per_layer > 0).sum(1).clamp(min=1)
        torch.testing.assert_close(stats.mean_active_value()[k].float(), expect_mean.float(), rtol=1e-4, atol=1e-6)


def test_collection_never_calls_the_lm_head(lm, corpus, tmp_path):
    calls = []
    h = lm.model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        collect(lm, corpus, ["en"], out=tmp_path / "run", tokens=256, window=64, progress=False)
    finally:
        h.remove()
    assert calls == []


def test_adding_a_language_does_not_recompute_the_others(lm, corpus, tmp_path):
    run = tmp_path / "run"
    collect(lm, corpus, ["en"], out=run, tokens=256, window=64, progress=False)
    before = (run / "stats" / "en.safetensors").stat().st_mtime_ns
    stats = collect(lm, corpus, ["en", "fr"], out=run, tokens=256, window=64, progress=False)
    assert (run / "stats" / "en.safetensors").stat().st_mtime_ns == before
    assert stats.languages == ["en", "fr"]
    assert json.loads((run / "run.json").read_text())["languages"] == ["en", "fr"]


def test_a_run_refuses_other_settings(lm, corpus, tmp_path):
    run = tmp_path / "run"
    collect(lm, corpus, ["en"], out=run, tokens=256, window=64, progress=False)
    with pytest.raises(LanglocError, match="window"):
        collect(lm, corpus, ["fr"], out=run, tokens=256, window=32, progress=False)


def test_same_seed_same_counts(lm, corpus, tmp_path):
    a = collect(lm, corpus, ["en"], out=tmp_path / "a", tokens=256, window=64, progress=False)
    b = collect(lm, corpus, ["en"], out=tmp_path / "b", tokens=256, window=64, progress=False)
    assert torch.equal(a.over_zero, b.over_zero)


def test_statistics_carry_metadata(lm, corpus, tmp_path):
    collect(lm, corpus, ["en"], out=tmp_path / "run", tokens=256, window=64, seed=3, progress=False)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["model"]["weights_fingerprint"] == lm.meta["weights_fingerprint"]
    assert meta["model"]["neuron_site"] == "layers:mlp.act_fn:mlp.down_proj"
    assert {"langloc_version", "corpus", "window", "tokens", "seed", "languages"} <= set(meta)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "stats" / "en.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["langloc"])["language"] == "en"
    assert ActivationStats.load(tmp_path / "run").meta["seed"] == 3


def test_residual_means_and_diffmean_equal_a_direct_computation(lm, corpus, tmp_path):
    """collect's per-layer residual sums give the mean decoder-layer output per language, and
    DiffMean vectors (mean[target] - mean[source]) equal the same computed from stored states."""
    from langloc.steer.diffmean import diffmean_vectors

    stats = collect(lm, corpus, ["en", "ru"], out=tmp_path / "run", tokens=640, window=64, batch_size=3, progress=False)
    means = {}
    for lang in ("en", "ru"):
        ids = corpus_windows(lm, corpus, lang, "stats", window=64, max_tokens=640)
        states = []
        hooks = [layer.register_forward_hook(
            lambda mod, a, out: states.append((out[0] if isinstance(out, tuple) else out)[:, 1:].detach().double()))
            for layer in lm.layers]
        with torch.no_grad():
            lm.body(input_ids=ids)
        for h in hooks:
            h.remove()
        means[lang] = torch.stack([s.reshape(-1, s.shape[-1]).mean(0) for s in states])  # [L, H]
        torch.testing.assert_close(stats.mean_residual(lang), means[lang], rtol=1e-5, atol=1e-6)
    assert stats.resid_sum.shape == (2, lm.num_layers, lm.model.config.hidden_size)
    v = diffmean_vectors(stats, "ru", "en")
    torch.testing.assert_close(v, means["ru"] - means["en"], rtol=1e-5, atol=1e-6)
    # reloaded from the run folder: the same vectors, and a resumed/added language keeps them
    again = ActivationStats.load(tmp_path / "run")
    assert torch.equal(diffmean_vectors(again, "ru", "en"), v)
