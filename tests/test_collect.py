"""Activation statistics: exact counts, int64, decoder body only, incremental runs."""

import json

import pytest
import torch

from langloc.data import FolderCorpus, corpus_windows
from langloc.errors import LanglocError
from langloc.models import load_model
from langloc.stats import ActivationStats, CollectConfig, collect
from tiny import save_tiny_llama, write_folder_corpus


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_model(str(save_tiny_llama(tmp_path_factory.mktemp("m") / "tiny")), device="cpu")


@pytest.fixture()
def corpus(tmp_path):
    return FolderCorpus(write_folder_corpus(tmp_path / "corpus"))


@pytest.mark.parametrize("block_values", [2**20, 1], ids=["one block per batch", "blocks of 16 rows"])
def test_counts_equal_brute_force_over_stored_activations(lm, corpus, tmp_path, monkeypatch, block_values):
    # On CPU the counters sum blocks of rows; with 1 value per block a batch of 3 x 63 tokens
    # splits into 12 blocks of 16 rows (the minimum) and must count the same.
    monkeypatch.setattr("langloc.stats.counters._BLOCK_VALUES", block_values)
    stats = collect(lm, corpus, CollectConfig(out=tmp_path / "run", languages=["en", "ru"], tokens=640, window=64,
                                              batch_size=3), progress=False)
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
        collect(lm, corpus, CollectConfig(out=tmp_path / "run", languages=["en"], tokens=256, window=64),
                progress=False)
    finally:
        h.remove()
    assert calls == []


def test_adding_a_language_does_not_recompute_the_others(lm, corpus, tmp_path):
    run = tmp_path / "run"
    collect(lm, corpus, CollectConfig(out=run, languages=["en"], tokens=256, window=64), progress=False)
    before = (run / "stats" / "en.safetensors").stat().st_mtime_ns
    stats = collect(lm, corpus, CollectConfig(out=run, languages=["en", "fr"], tokens=256, window=64), progress=False)
    assert (run / "stats" / "en.safetensors").stat().st_mtime_ns == before
    assert stats.languages == ["en", "fr"]
    assert json.loads((run / "run.json").read_text())["languages"] == ["en", "fr"]


def test_a_run_refuses_other_settings(lm, corpus, tmp_path):
    run = tmp_path / "run"
    collect(lm, corpus, CollectConfig(out=run, languages=["en"], tokens=256, window=64), progress=False)
    with pytest.raises(LanglocError, match="window"):
        collect(lm, corpus, CollectConfig(out=run, languages=["fr"], tokens=256, window=32), progress=False)


def test_same_seed_same_counts(lm, corpus, tmp_path):
    a = collect(lm, corpus, CollectConfig(out=tmp_path / "a", languages=["en"], tokens=256, window=64), progress=False)
    b = collect(lm, corpus, CollectConfig(out=tmp_path / "b", languages=["en"], tokens=256, window=64), progress=False)
    assert torch.equal(a.over_zero, b.over_zero)


def test_statistics_carry_metadata(lm, corpus, tmp_path):
    collect(lm, corpus, CollectConfig(out=tmp_path / "run", languages=["en"], tokens=256, window=64, seed=3),
            progress=False)
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

    stats = collect(lm, corpus, CollectConfig(out=tmp_path / "run", languages=["en", "ru"], tokens=640, window=64,
                                              batch_size=3), progress=False)
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


# -- the residual sample (collect --residual-sample N) -----------------------------------------

def _states(lm, ids):
    """[L, windows, T, H]: every decoder layer's output on the windows, from one direct forward pass."""
    states = []
    hooks = [layer.register_forward_hook(
        lambda mod, a, out: states.append((out[0] if isinstance(out, tuple) else out).detach()))
        for layer in lm.layers]
    with torch.no_grad():
        lm.body(input_ids=ids)
    for h in hooks:
        h.remove()
    return torch.stack(states)


def _sample(run, lang):
    from safetensors.torch import load_file

    return load_file(run / "residual_sample" / f"{lang}.safetensors")


def test_the_residual_sample_holds_exactly_n_tokens_states_at_every_layer(lm, corpus, tmp_path):
    """N tokens per language (of the 10 x 63 counted, BOS never), each with its state after every
    decoder layer as a direct forward pass gives it (in bfloat16), ordered by window and position;
    the statistics are those of a run without a sample."""
    from langloc.manifest import read_safetensors_manifest

    stats = collect(lm, corpus, CollectConfig(out=tmp_path / "run", languages=["en", "ru"], tokens=640, window=64,
                                              batch_size=3, residual_sample=40), progress=False)
    plain = collect(lm, corpus, CollectConfig(out=tmp_path / "plain", languages=["en", "ru"], tokens=640, window=64,
                                              batch_size=3), progress=False)
    assert torch.equal(stats.over_zero, plain.over_zero) and torch.equal(stats.resid_sum, plain.resid_sum)
    for lang in ("en", "ru"):
        s = _sample(tmp_path / "run", lang)
        assert s["vectors"].shape == (lm.num_layers, 40, lm.model.config.hidden_size)
        assert s["vectors"].dtype == torch.bfloat16
        keys = list(zip(s["window"].tolist(), s["position"].tolist()))
        assert keys == sorted(set(keys)) and all(0 <= w < 10 and 1 <= p < 64 for w, p in keys)
        ids = corpus_windows(lm, corpus, lang, "stats", window=64, max_tokens=640)
        direct = _states(lm, ids)[:, s["window"], s["position"]]  # [L, 40, H]
        torch.testing.assert_close(s["vectors"].float(), direct.to(torch.bfloat16).float(), rtol=0.02, atol=1e-2)
        doc = read_safetensors_manifest(tmp_path / "run" / "residual_sample" / f"{lang}.safetensors",
                                        "langloc.residual_sample", model_meta=lm.meta)
        assert doc["kept"] == 40 and doc["config"]["size"] == 40 and doc["seeds"] == {"sample": 0}
    meta = json.loads((tmp_path / "run" / "run.json").read_text())["residual_sample"]
    assert meta["size"] == 40 and meta["bytes_per_language"] == 40 * lm.num_layers * lm.model.config.hidden_size * 2
    assert "residual_sample" not in json.loads((tmp_path / "plain" / "run.json").read_text())


def test_the_residual_sample_is_the_same_for_any_batch_size_and_changes_with_the_seed(lm, corpus, tmp_path):
    def run(name, batch_size, seed=0):
        collect(lm, corpus, CollectConfig(out=tmp_path / name, languages=["fr"], tokens=640, window=64,
                                          batch_size=batch_size, seed=seed, residual_sample=25), progress=False)
        return _sample(tmp_path / name, "fr")

    one, four, again = run("b1", 1), run("b4", 4), run("again", 4)
    assert torch.equal(one["window"], four["window"]) and torch.equal(one["position"], four["position"])
    # the same tokens; their states agree to bfloat16 rounding (a batch of 1 and one of 4 may
    # round a float32 matmul differently), and bit for bit when the batch size is the same
    torch.testing.assert_close(one["vectors"].float(), four["vectors"].float(), rtol=0.02, atol=1e-2)
    assert all(torch.equal(again[k], four[k]) for k in four)
    other = run("seed1", 4, seed=1)
    assert not torch.equal(other["position"], four["position"])


def test_with_fewer_tokens_than_n_the_sample_keeps_every_token(lm, corpus, tmp_path):
    collect(lm, corpus, CollectConfig(out=tmp_path / "run", languages=["en"], tokens=128, window=64,
                                      residual_sample=500), progress=False)
    s = _sample(tmp_path / "run", "en")
    assert s["window"].tolist() == [0] * 63 + [1] * 63 and s["position"].tolist() == list(range(1, 64)) * 2


def test_an_interrupted_collection_resumes_to_the_same_sample(lm, corpus, tmp_path):
    class Kill(Exception):
        pass

    def kill_at(n):
        seen = []

        def on_batch(tokens):
            seen.append(tokens)
            if len(seen) == n:
                raise Kill()
        return on_batch

    kw = dict(tokens=640, window=64, batch_size=2, residual_sample=30, checkpoint_every=1)
    with pytest.raises(Kill):
        collect(lm, corpus, CollectConfig(out=tmp_path / "run", languages=["ru"], **kw), progress=False,
                on_batch=kill_at(3))
    assert list((tmp_path / "run" / "stats" / ".partial").glob("ru.*"))
    collect(lm, corpus, CollectConfig(out=tmp_path / "run", languages=["ru"], resume=True, **kw), progress=False)
    collect(lm, corpus, CollectConfig(out=tmp_path / "ref", languages=["ru"], **kw), progress=False)
    a, b = _sample(tmp_path / "run", "ru"), _sample(tmp_path / "ref", "ru")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_processes_that_split_the_batches_merge_to_the_one_process_sample(lm, monkeypatch):
    """Under torchrun rank r runs batches r, r + W, ...; each keeps the N lowest of its own
    tokens, and the merge (all_gather, the N lowest of the union) is the one-process sample."""
    import torch.distributed as dist

    from langloc import distributed
    from langloc.stats.residual_sample import ResidualSampler

    batches = [torch.randint(3, 250, (2, 16)) for _ in range(7)]

    def sampler_over(mine):
        s = ResidualSampler(lm, 20, seed=5, skip_first_position=True)
        s.reset("fr")
        with s, torch.no_grad():
            for b in mine:
                s.plan(2 * b, batches[b])
                lm.body(input_ids=batches[b])
        return s

    alone = sampler_over(range(7)).result()
    ranks = [sampler_over(range(r, 7, 2)) for r in (0, 1)]
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(dist, "all_gather_object", lambda parts, mine: parts.__setitem__(
        slice(None), [r.state() for r in ranks]))
    merged = ranks[0].result()
    assert all(torch.equal(merged[k], alone[k]) for k in alone)


def test_a_run_refuses_another_residual_sample_size(lm, corpus, tmp_path):
    run = tmp_path / "run"
    collect(lm, corpus, CollectConfig(out=run, languages=["en"], tokens=256, window=64, residual_sample=10),
            progress=False)
    with pytest.raises(LanglocError, match="residual_sample=10, not 0"):
        collect(lm, corpus, CollectConfig(out=run, languages=["fr"], tokens=256, window=64), progress=False)
    collect(lm, corpus, CollectConfig(out=run, languages=["fr"], tokens=256, window=64, residual_sample=10),
            progress=False)
    assert (run / "residual_sample" / "fr.safetensors").is_file()
