"""A planted ground truth: a tiny Llama whose language neurons are known by construction.

``build_planted(out)`` writes

    OUT/model/     a random-weight LlamaForCausalLM (transformers folder, word-level tokenizer)
    OUT/corpus/    a folder corpus of K synthetic "languages" (<lang>.txt), each a disjoint
                   block of the vocabulary
    OUT/truth.json which neuron was planted for what (kind ``langloc.planted``)

and every langloc command takes the folders as they take a real model and corpus
(``--model OUT/model --corpus OUT/corpus``).

How the truth is planted (hidden size 32; dimensions by role):

* ``lang[k]`` (one per language): every token of language k's block carries ``+S`` there and
  0 on the other languages' dimensions; ``const`` is ``+S`` for every token (EOS included);
  the remaining *noise* dimensions are random, so that the ordinary random neurons respond to
  tokens, not to languages.
* Attention is switched off (``o_proj = 0``) and the ordinary neurons neither read nor write
  the dedicated dimensions, so the residual stream's sign pattern reaches every layer intact.
* A **specific** neuron of language k reads ``W·(lang[k] - const/2)``: its gate is ``+W·S/2``
  on k's tokens and ``-W·S/2`` on every other token, so SiLU is positive exactly on k's text.
  It writes ``out[k]``, which the LM head adds to the logits of k's block: zeroing it lowers
  the probability of k's words on k's text and leaves the other languages' text alone.
* The **shared** neuron reads ``W·(lang[a] + lang[b] - const/2)`` (active on a and b); its
  up projection is ``+1`` on a's tokens and ``-1`` on b's, and it writes ``out[a] - out[b]``,
  so it raises the words of whichever of the two it reads.
* The **always-on** neuron reads ``W·const`` (active on every token) and writes ``out[all]``,
  which pushes down the logits of pad and BOS (they read ``+const`` otherwise, and are never
  the next token): zeroing it raises every language's loss.

Each language has one specific neuron in every layer; the shared neuron (first two languages)
and the always-on neuron are in the last layer. With ``top_rate = (K·L + 1) / (L·I)`` LAPE
returns exactly the specific neurons and the shared one (entropy 0 and log 2, the ordinary
neurons' is close to log K); thresholding with ``other_max`` returns the specific neurons
(``rate = L / (L·I)``); expert units rank the specific neurons first (average precision 1).
``tests/test_planted.py`` checks all of it end to end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from langloc import kinds
from langloc.artefacts import write_json, write_text
from langloc.errors import LanglocError
from langloc.manifest import make_manifest, read_manifest, stamp

KIND = kinds.PLANTED
LANGUAGES = ("aa", "bb", "cc", "dd")
SPECIALS = ("<pad>", "<s>", "</s>")
HIDDEN = 32
S = 4.0  # the sign pattern's size on the dedicated dimensions
W = 4.0  # planted gates' weight: gate = ±W·S/2 before RMSNorm's rescaling
OUT_LOGIT = 1.2  # LM head weight of out[k] for k's block: zeroing a language's neurons costs ~0.8 nat
LANG_LOGIT = 0.15  # LM head weight of lang[k] for k's block (a weak prior that survives zeroing)
JUNK = 1.5  # pad and BOS logits read +JUNK·const - 2·JUNK·out[all]: the always-on neuron keeps them down


@dataclass(frozen=True)
class PlantedConfig:
    languages: tuple[str, ...] = LANGUAGES
    layers: int = 2
    intermediate_size: int = 64
    words: int = 48  # vocabulary block per language
    documents: int = 240  # documents per language (every 10th is held out by the folder corpus)
    words_per_document: tuple[int, int] = (20, 40)
    seed: int = 0


def layout(k: int) -> dict[str, list[int]]:
    """The dedicated residual dimensions for ``k`` languages; the rest are noise."""
    lang = list(range(k))
    const = [k]
    out = list(range(k + 1, 2 * k + 1))
    out_all = [2 * k + 1]
    if 2 * k + 2 > HIDDEN - 8:
        raise LanglocError(f"a planted model holds at most {(HIDDEN - 10) // 2} languages, got {k}")
    return {"lang": lang, "const": const, "out": out, "out_all": out_all,
            "noise": list(range(2 * k + 2, HIDDEN))}


def planted_neurons(config: PlantedConfig) -> dict:
    """Where each planted neuron is: ``{"specific": {lang: [[layer, index], ...]}, "shared":
    {"languages": [a, b], "neuron": [layer, index]}, "always_on": [layer, index]}``.

    Indices are spread over the layer (specific neuron of language k in layer l at
    ``(7 + 13 k + 5 l) mod I``) so that nothing depends on planted neurons being first."""
    K, L, I = len(config.languages), config.layers, config.intermediate_size
    if K < 3 or L < 1 or I < 4 * K:
        raise LanglocError(f"a planted model needs at least 3 languages, 1 layer and 4 neurons per language "
                           f"per layer (got {K}, {L}, {I})")
    taken: set[tuple[int, int]] = set()

    def place(layer: int, start: int) -> list[int]:
        j = start % I
        while (layer, j) in taken:
            j = (j + 1) % I
        taken.add((layer, j))
        return [layer, j]

    specific = {lang: [place(layer, 7 + 13 * k + 5 * layer) for layer in range(L)]
                for k, lang in enumerate(config.languages)}
    shared = {"languages": list(config.languages[:2]), "neuron": place(L - 1, 3)}
    always_on = place(L - 1, I - 2)
    return {"specific": specific, "shared": shared, "always_on": always_on}


def _tokenizer(config: PlantedConfig):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for lang in config.languages:
        for w in range(config.words):
            vocab[f"{lang}{w}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<pad>")


def block(config: PlantedConfig, k: int) -> slice:
    """Token ids of language k's vocabulary block."""
    start = len(SPECIALS) + k * config.words
    return slice(start, start + config.words)


@torch.no_grad()
def planted_model(config: PlantedConfig):
    """The LlamaForCausalLM with the planted neurons (see the module docstring)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    K, L, I = len(config.languages), config.layers, config.intermediate_size
    dims = layout(K)
    truth = planted_neurons(config)
    vocab = len(SPECIALS) + K * config.words
    torch.manual_seed(config.seed)
    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=I, num_hidden_layers=L, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=512, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0, tie_word_embeddings=False, hidden_act="silu")
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(config.seed)
    noise, dedicated = dims["noise"], [d for d in range(HIDDEN) if d not in dims["noise"]]

    emb = torch.zeros(vocab, HIDDEN)
    emb[:, noise] = torch.randn(vocab, len(noise), generator=g)
    emb[2:, dims["const"][0]] = S  # every token but pad and BOS (EOS included) carries const
    for k in range(K):
        emb[block(config, k), dims["lang"][k]] = S
    model.model.embed_tokens.weight.copy_(emb)

    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.zero_()  # no mixing between positions
        mlp = layer.mlp
        for m in (mlp.gate_proj, mlp.up_proj):  # ordinary neurons read noise only
            m.weight.copy_(torch.randn(I, HIDDEN, generator=g) / HIDDEN ** 0.5)
            m.weight[:, dedicated] = 0
        mlp.down_proj.weight.copy_(torch.randn(HIDDEN, I, generator=g) * 0.05)
        mlp.down_proj.weight[dedicated, :] = 0  # ... and write noise only

    def plant(where, reads: dict[int, float], writes: dict[int, float], up: dict[int, float] | None = None):
        layer, j = where
        mlp = model.model.layers[layer].mlp
        mlp.gate_proj.weight[j] = 0
        for d, w in reads.items():
            mlp.gate_proj.weight[j, d] = w
        mlp.up_proj.weight[j] = 0
        for d, w in (up or {dims["const"][0]: 1.0}).items():
            mlp.up_proj.weight[j, d] = w / S  # default: up = const / S, a positive constant
        mlp.down_proj.weight[:, j] = 0
        for d, w in writes.items():
            mlp.down_proj.weight[d, j] = w / 4  # an active planted neuron writes about ±1 to each out dim

    c = dims["const"][0]
    for k, lang in enumerate(config.languages):
        for where in truth["specific"][lang]:
            plant(where, {dims["lang"][k]: W, c: -W / 2}, {dims["out"][k]: 1.0})
    a, b = (config.languages.index(x) for x in truth["shared"]["languages"])
    # up = (lang[a] - lang[b]) / S is +1 on a's text and -1 on b's, so writing out[a] - out[b]
    # helps whichever of the two is being read (a plain out[a] + out[b] would favour a's words
    # on b's text, and zeroing the neuron would then *help* b).
    plant(truth["shared"]["neuron"], {dims["lang"][a]: W, dims["lang"][b]: W, c: -W / 2},
          {dims["out"][a]: 1.0, dims["out"][b]: -1.0}, up={dims["lang"][a]: 1.0, dims["lang"][b]: -1.0})
    plant(truth["always_on"], {c: W}, {dims["out_all"][0]: 1.0})

    model.model.norm.weight.fill_(1.0)
    head = torch.zeros(vocab, HIDDEN)
    for k in range(K):
        head[block(config, k), dims["lang"][k]] = LANG_LOGIT
        head[block(config, k), dims["out"][k]] = OUT_LOGIT
    # pad and BOS are never the next token; the always-on neuron is what keeps their logits
    # low, so zeroing it raises every language's loss by about as much.
    for junk in (0, 1):
        head[junk, dims["const"][0]] = JUNK
        head[junk, dims["out_all"][0]] = -2 * JUNK
    model.lm_head.weight.copy_(head)
    return model


def planted_corpus(config: PlantedConfig) -> dict[str, list[str]]:
    """Per language, documents of words drawn uniformly from its block."""
    g = torch.Generator().manual_seed(config.seed + 1)
    lo, hi = config.words_per_document
    docs = {}
    for lang in config.languages:
        docs[lang] = []
        for _ in range(config.documents):
            n = int(torch.randint(lo, hi + 1, (1,), generator=g))
            ids = torch.randint(config.words, (n,), generator=g).tolist()
            docs[lang].append(" ".join(f"{lang}{w}" for w in ids))
    return docs


def build_planted(out: str | Path, config: PlantedConfig = PlantedConfig()) -> Path:
    """Write the planted model, corpus and truth into ``out`` (see the module docstring)."""
    started = time.time()
    out = Path(out)
    if (out / "truth.json").exists():
        raise LanglocError(f"{out} already holds a planted model; choose another -o")
    truth = planted_neurons(config)
    model = planted_model(config)
    model.save_pretrained(out / "model")
    _tokenizer(config).save_pretrained(out / "model")
    for lang, docs in planted_corpus(config).items():
        write_text(out / "corpus" / f"{lang}.txt", "\n".join(docs) + "\n")
    from langloc.models import load_model

    made = load_model(str(out / "model"), device="cpu").meta  # the fingerprints the truth is for
    doc = {"languages": list(config.languages), "num_layers": config.layers,
           "intermediate_size": config.intermediate_size, "words_per_language": config.words, **truth,
           "settings": {"lape_top_rate": (len(config.languages) * config.layers + 1)
                        / (config.layers * config.intermediate_size),
                        "thresholding_rate": config.layers / (config.layers * config.intermediate_size),
                        "thresholding_other_max": 0.5}}
    manifest = make_manifest(KIND, model=made, config={k: list(v) if isinstance(v, tuple) else v
                                           for k, v in config.__dict__.items()},
                             seeds={"weights": config.seed, "corpus": config.seed + 1}, started=started)
    write_json(out / "truth.json", stamp(doc, manifest))
    return out


def read_truth(folder: str | Path) -> dict:
    return read_manifest(Path(folder) / "truth.json", KIND)


def truth_sets(truth: dict) -> dict[str, dict[str, set[tuple[int, int]]]]:
    """The sets each method should find, per language, as ``{(layer, index)}``: ``specific``
    (the specific neurons), ``lape`` (specific + the shared neuron for its two languages)."""
    spec = {lang: {tuple(x) for x in where} for lang, where in truth["specific"].items()}
    shared = tuple(truth["shared"]["neuron"])
    lape = {lang: s | ({shared} if lang in truth["shared"]["languages"] else set()) for lang, s in spec.items()}
    return {"specific": spec, "lape": lape}


def as_pairs(neuron_set, lang: str) -> set[tuple[int, int]]:
    """A NeuronSet's neurons of ``lang`` as ``{(layer, index)}``."""
    return {(layer, int(j)) for layer, idx in enumerate(neuron_set.layers(lang)) for j in idx}


def describe(truth: dict) -> str:
    return json.dumps({k: truth[k] for k in ("specific", "shared", "always_on")})


def validate_hint(out: str | Path) -> str:
    """The ``langloc validate`` command ``langloc planted`` suggests for ``out``: validate's
    defaults, the planted second domain, LAPE's stability (measured with the settings recorded
    in the identified set; tests/test_planted.py runs it as printed)."""
    import shlex

    out = Path(out)
    return (f"langloc validate {shlex.quote(str(out / 'run'))} --domain {shlex.quote(str(out / 'domain'))} "
            "--methods lape")


def planted_run(out: str | Path, config: PlantedConfig = PlantedConfig(), *, tokens: int = 2048, window: int = 64,
                progress: bool = False) -> Path:
    """``langloc planted``: build the planted folder, a second-domain corpus (``OUT/domain``:
    other documents, shorter, drawn from another seed), collect the statistics into
    ``OUT/run`` and identify LAPE neurons with the settings that recover the planted sets
    (truth.json's ``settings``). Returns the run folder."""
    from langloc.data import load_corpus
    from langloc.models import load_model
    from langloc.stats import CollectConfig, collect
    from langloc.workflows import IdentifyConfig, identify_run

    out = Path(out)
    build_planted(out, config)
    other = PlantedConfig(**{**config.__dict__, "seed": config.seed + 100, "words_per_document": (8, 16)})
    for lang, docs in planted_corpus(other).items():
        write_text(out / "domain" / f"{lang}.txt", "\n".join(docs) + "\n")
    lm = load_model(str(out / "model"), device="cpu")
    counting = CollectConfig(out=out / "run", languages=list(config.languages), tokens=tokens, window=window,
                             batch_size=4, seed=config.seed)
    collect(lm, load_corpus(str(out / "corpus")), counting, progress=progress)
    truth = read_truth(out)
    identify_run(out / "run", IdentifyConfig(plots=False), top_rate=truth["settings"]["lape_top_rate"])
    return out / "run"
