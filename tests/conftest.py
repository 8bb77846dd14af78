"""Shared test helpers: a character tokenizer and tiny random-weight models, all offline.

Import the helpers directly (``from conftest import CharTokenizer, tiny_model``) or use the
fixtures ``char_tokenizer`` and ``tiny_llama``.
"""

from __future__ import annotations

import pytest

VOCAB = 128
HIDDEN = 32
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
MAX_POSITIONS = 256


class CharTokenizer:
    """A tokenizer with one id per character: ``ord(c) % vocab_size``.

    It has the parts of a Hugging Face tokenizer that langloc uses: ``__call__`` (returns a dict
    with ``input_ids``; prepends BOS unless ``add_special_tokens=False``), ``len()``,
    ``bos_token_id``, ``eos_token_id``, ``pad_token_id`` and ``decode``.
    """

    def __init__(self, vocab_size: int = VOCAB, bos_token_id: int | None = 1, eos_token_id: int | None = 2,
                 pad_token_id: int | None = 0):
        self.vocab_size = vocab_size
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [ord(c) % self.vocab_size for c in text]
        if add_special_tokens and self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        return ids

    def __call__(self, text, add_special_tokens: bool = True, **_ignored) -> dict:
        if isinstance(text, (list, tuple)):
            return {"input_ids": [self.encode(t, add_special_tokens) for t in text]}
        return {"input_ids": self.encode(text, add_special_tokens)}

    @property
    def all_special_ids(self) -> list[int]:
        return [i for i in (self.bos_token_id, self.eos_token_id, self.pad_token_id) if i is not None]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return "".join(chr(int(i)) for i in ids if int(i) not in special)


def _special() -> dict:
    return {"vocab_size": VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def _gated(cls_name: str, layers: int, width: int, **extra):
    import transformers

    cls = getattr(transformers, cls_name)
    return cls(hidden_size=HIDDEN, intermediate_size=width, num_hidden_layers=layers,
               num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
               max_position_embeddings=MAX_POSITIONS, **_special(), **extra)


def _config(model_type: str, layers: int, width: int):
    import transformers as t

    builders = {
        # BLOOM's MLP width is fixed at 4 * hidden_size; `width` cannot change it.
        "bloom": lambda: t.BloomConfig(hidden_size=HIDDEN, n_layer=layers, n_head=HEADS, **_special()),
        "gemma": lambda: _gated("GemmaConfig", layers, width),
        "gemma2": lambda: _gated("Gemma2Config", layers, width),
        "gemma3_text": lambda: _gated("Gemma3TextConfig", layers, width),
        "gpt2": lambda: t.GPT2Config(n_embd=HIDDEN, n_layer=layers, n_head=HEADS, n_inner=width,
                                     n_positions=MAX_POSITIONS, **_special()),
        "gpt_neox": lambda: t.GPTNeoXConfig(hidden_size=HIDDEN, intermediate_size=width, num_hidden_layers=layers,
                                            num_attention_heads=HEADS, max_position_embeddings=MAX_POSITIONS,
                                            **_special()),
        "llama": lambda: _gated("LlamaConfig", layers, width),
        "mistral": lambda: _gated("MistralConfig", layers, width),
        "olmo2": lambda: _gated("Olmo2Config", layers, width),
        "opt": lambda: t.OPTConfig(hidden_size=HIDDEN, ffn_dim=width, num_hidden_layers=layers,
                                   num_attention_heads=HEADS, word_embed_proj_dim=HIDDEN,
                                   max_position_embeddings=MAX_POSITIONS, **_special()),
        "phi": lambda: t.PhiConfig(hidden_size=HIDDEN, intermediate_size=width, num_hidden_layers=layers,
                                   num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                                   max_position_embeddings=MAX_POSITIONS, **_special()),
        "phi3": lambda: t.Phi3Config(hidden_size=HIDDEN, intermediate_size=width, num_hidden_layers=layers,
                                     num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                                     max_position_embeddings=MAX_POSITIONS, original_max_position_embeddings=MAX_POSITIONS,
                                     **_special()),
        "qwen2": lambda: _gated("Qwen2Config", layers, width),
        "qwen3": lambda: _gated("Qwen3Config", layers, width),
    }
    if model_type not in builders:
        raise LookupError(
            f"no tiny config for model_type {model_type!r}; add one to tests/conftest.py "
            f"(known: {', '.join(sorted(builders))})"
        )
    return builders[model_type]()


def expected_width(model_type: str, width: int = 48) -> int:
    """The MLP width (number of neurons per layer) that ``tiny_model(model_type, width=width)`` has."""
    return 4 * HIDDEN if model_type == "bloom" else width


def tiny_model(model_type: str, layers: int = 3, width: int = 48, seed: int = 0):
    """A tiny random-weight causal LM of ``model_type`` in eval mode (float32, CPU, no download).

    Hidden size 32, 4 heads (2 KV heads where the architecture has them), vocabulary 128 (so
    ``CharTokenizer()`` fits), ``layers`` decoder layers, MLP width ``width`` (BLOOM: 4 * 32).
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = _config(model_type, layers, width)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model.eval()


@pytest.fixture
def char_tokenizer() -> CharTokenizer:
    return CharTokenizer()


@pytest.fixture
def tiny_llama():
    return tiny_model("llama")
