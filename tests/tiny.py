"""Tiny real models saved as local folders, and small corpora, for tests (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

LANG_TEXT = {
    # Short, distinct-alphabet texts so that a byte-level tokenizer sees different bytes.
    "en": "In the beginning was the word, and the word was with the people of the land.",
    "fr": "Au commencement était la parole, et la parole était avec le peuple du pays.",
    "ru": "В начале было слово, и слово было с народом этой земли и его детьми.",
    "zh": "太初有道，道与人同在，道就是这片土地上的人民的话语和生命。",
}


def byte_tokenizer():
    """A real byte-level BPE tokenizer (256 bytes + specials), as transformers loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_llama(seed: int = 0, layers: int = 2, width: int = 64):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=width, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=260, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def save_tiny_llama(path: Path, seed: int = 0, layers: int = 2) -> Path:
    tiny_llama(seed, layers).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def write_folder_corpus(path: Path, langs=("en", "fr", "ru"), repeat: int = 60) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        lines = [f"{i} {LANG_TEXT[lang]}" for i in range(repeat)]
        (path / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
