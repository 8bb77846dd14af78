"""Judge generations: which language (py3langid), and whether the text is fluent.

A steered generation counts as a success only if it is *fluent* and in the target language,
so that gibberish or a loop in the target script does not count. Fluent means all of

* at least ``min_tokens`` generated tokens;
* a distinct-token share (distinct tokens / tokens) of at least ``min_distinct``: catches
  loops such as "天气天气天气…";
* a perplexity under the *unsteered* model of at most ``max_ppl``, scoring the generated text
  on its own (BOS + text, not conditioned on the prompt, so a switch of language after an
  English prompt is not penalised). For scale: gemma-3-270m scores held-out Bible text at
  14–73 in the ten demo languages.

Language identification restricts py3langid to a candidate set (by default the 22
languages of the built-in Bible corpus): the full model also answers with close relatives
such as ``wuu``/``yue`` for Mandarin text, which would count a Chinese output as a miss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from langloc.errors import LanglocError, check_range

DEFAULT_CANDIDATES = ("en", "zh", "fr", "es", "ru", "ja", "ar", "hi", "vi", "id", "de", "pt", "it", "ko", "tr",
                      "bn", "fa", "sw", "uk", "pl", "ro", "tl")


@dataclass
class FluencyRule:
    min_tokens: int = 8
    min_distinct: float = 0.5
    max_ppl: float = 200.0

    def __post_init__(self):
        check_range("min_distinct", self.min_distinct, 0.0, 1.0)
        if self.max_ppl <= 0 or self.min_tokens < 0:
            raise LanglocError("max_ppl must be positive and min_tokens not negative")


class LanguageIdentifier:
    """py3langid restricted to ``candidates`` (ISO 639-1 codes)."""

    def __init__(self, candidates=DEFAULT_CANDIDATES):
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier as _LI
        except ModuleNotFoundError:
            raise LanglocError("language identification needs py3langid: pip install 'langloc[langid]'") from None
        self._id = _LI.from_model_file(MODEL_FILE, norm_probs=True)
        unknown = sorted(set(candidates) - set(self._id.nb_classes))
        if unknown:
            raise LanglocError(f"py3langid does not know {', '.join(unknown)}")
        self.candidates = list(dict.fromkeys(candidates))
        self._id.set_languages(self.candidates)

    def __call__(self, text: str) -> tuple[str, float]:
        if not text.strip():
            return "none", 0.0
        lang, prob = self._id.classify(text)
        return lang, float(prob)


@torch.inference_mode()
def text_perplexities(lm, token_lists: list[list[int]], batch_size: int = 8) -> list[float]:
    """Perplexity of each token list under ``lm`` as it is (call outside any intervention),
    scoring every token after a BOS (or, without BOS, every token after the first)."""
    out = [float("inf")] * len(token_lists)
    bos = [lm.meta["bos_token_id"]] if lm.add_bos else []
    items = [(i, bos + t) for i, t in enumerate(token_lists) if len(bos + t) >= 2]
    pad = lm.tokenizer.pad_token_id if getattr(lm.tokenizer, "pad_token_id", None) is not None else 0
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        T = max(len(t) for _, t in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.long)
        for r, (_, t) in enumerate(chunk):
            ids[r, :len(t)] = torch.tensor(t)
            mask[r, :len(t)] = 1
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False).logits
        nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].to(lm.device).flatten(),
                              reduction="none").view(len(chunk), -1).cpu()
        m = mask[:, 1:].double()
        mean = (nll.double() * m).sum(1) / m.sum(1)
        for r, (i, _) in enumerate(chunk):
            out[i] = float(torch.exp(mean[r]))
    return out


def distinct_share(tokens: list[int]) -> float:
    return len(set(tokens)) / len(tokens) if tokens else 0.0


def judge(records: list[dict], lm, identify: LanguageIdentifier, target: str, rule: FluencyRule) -> list[dict]:
    """Add ``lang``, ``lang_prob``, ``ppl``, ``distinct``, ``fluent`` and ``success`` to each
    record (a dict with ``text`` and ``tokens``)."""
    ppls = text_perplexities(lm, [r["tokens"] for r in records])
    for r, ppl in zip(records, ppls):
        lang, prob = identify(r["text"])
        d = distinct_share(r["tokens"])
        fluent = len(r["tokens"]) >= rule.min_tokens and d >= rule.min_distinct and ppl <= rule.max_ppl
        r.update(lang=lang, lang_prob=round(prob, 4), ppl=round(ppl, 3), distinct=round(d, 4),
                 fluent=bool(fluent), success=bool(fluent and lang == target))
    return records


def summarise(records: list[dict], target: str) -> dict:
    n = len(records)
    if n == 0:
        return {"n": 0}
    ppl = sorted(r["ppl"] for r in records)
    langs: dict[str, int] = {}
    for r in records:
        langs[r["lang"]] = langs.get(r["lang"], 0) + 1
    return {
        "n": n,
        "target_rate": sum(r["lang"] == target for r in records) / n,
        "fluent_target_rate": sum(r["success"] for r in records) / n,
        "fluent_rate": sum(r["fluent"] for r in records) / n,
        "median_ppl": ppl[n // 2] if n % 2 else (ppl[n // 2 - 1] + ppl[n // 2]) / 2,
        "mean_distinct": sum(r["distinct"] for r in records) / n,
        "languages": dict(sorted(langs.items(), key=lambda kv: -kv[1])),
    }
