"""Judge generations: which language (py3langid), and whether the text is fluent.

Two judges score every output. The *strict* judge (:class:`StrictRule`, the headline) is
described in its docstring. The *lenient* judge is the earlier one, kept for comparison:
A steered generation counts as a success only if it is *fluent* and in the target language,
so that gibberish or a loop in the target script does not count. Fluent means all of

* at least ``min_tokens`` generated tokens;
* a distinct-token share (distinct tokens / tokens) of at least ``min_distinct``: catches
  loops such as "天气天气天气…";
* a perplexity under the *unsteered* model of at most ``max_ppl``, scoring the generated text
  on its own (BOS + text, not conditioned on the prompt, so a switch of language after an
  English prompt is not penalised). For scale: gemma-3-270m scores held-out Bible text at
  14–73 in the ten demo languages.

Language identification is :class:`langloc.data.langid.LanguageIdentifier` (py3langid
restricted to a candidate set, by default the 22 languages of the built-in Bible corpus).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from langloc.data.langid import DEFAULT_CANDIDATES, LanguageIdentifier  # noqa: F401  (re-exported)
from langloc.errors import LanglocError, check_range


@dataclass
class FluencyRule:
    min_tokens: int = 8
    min_distinct: float = 0.5
    max_ppl: float = 200.0

    def __post_init__(self):
        check_range("min_distinct", self.min_distinct, 0.0, 1.0)
        if self.max_ppl <= 0 or self.min_tokens < 0:
            raise LanglocError("max_ppl must be positive and min_tokens not negative")


@torch.inference_mode()
def text_perplexities(lm, token_lists: list[list[int]], batch_size: int = 8) -> list[float]:
    """Perplexity of each token list under the unsteered ``lm`` (any intervention still hooked
    into it is passed through), scoring every token after a BOS (or, without BOS, every token
    after the first)."""
    from langloc.intervene.intervention import unsteered

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
        with unsteered(lm):
            logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False).logits
        nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].to(lm.device).flatten(),
                              reduction="none").view(len(chunk), -1).cpu()
        m = mask[:, 1:].double()
        mean = (nll.double() * m).sum(1) / m.sum(1)
        for r, (i, _) in enumerate(chunk):
            out[i] = float(torch.exp(mean[r]))
    return out


# Unicode character-name prefixes of each non-Latin target's script; Latin-script targets
# have no script criterion (the chunk identification covers them).
SCRIPTS = {"zh": ("CJK",), "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL", "CJK"), "ru": ("CYRILLIC",),
           "uk": ("CYRILLIC",), "ar": ("ARABIC",), "fa": ("ARABIC",), "hi": ("DEVANAGARI",), "bn": ("BENGALI",)}
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；؟।])|\n+")


def letters(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c).startswith("L")]


def script_share(text: str, target: str) -> float | None:
    """Share of the letters of ``text`` in ``target``'s script (None for Latin-script targets)."""
    prefixes = SCRIPTS.get(target)
    if prefixes is None:
        return None
    ls = letters(text)
    if not ls:
        return 0.0
    return sum(unicodedata.name(c, "").startswith(prefixes) for c in ls) / len(ls)


def chunks(text: str, words: int = 8, chars: int = 16, min_letters: int = 4) -> list[str]:
    """Split ``text`` into sentences, and each sentence into near-equal pieces of at most
    ``words`` words (or, where the text has no spaces, such as Chinese or Japanese, at most
    ``chars`` characters). A piece with fewer than ``min_letters`` letters is merged into the
    previous one (a lone "Yes." cannot be identified on its own)."""
    out: list[str] = []
    for sent in (x.strip() for x in _SENTENCE_END.split(text) if x and x.strip()):
        toks = sent.split()
        if len(toks) > 1:
            n = math.ceil(len(toks) / words)
            size = math.ceil(len(toks) / n)
            pieces = [" ".join(toks[i:i + size]) for i in range(0, len(toks), size)]
        else:
            n = math.ceil(len(sent) / chars)
            size = math.ceil(len(sent) / n)
            pieces = [sent[i:i + size] for i in range(0, len(sent), size)]
        for p in pieces:
            if out and len(letters(p)) < min_letters:
                out[-1] = f"{out[-1]} {p}"
            else:
                out.append(p)
    if len(out) > 1 and len(letters(out[0])) < min_letters:
        out[1] = f"{out[0]} {out[1]}"
        out.pop(0)
    return [c for c in out if letters(c)]


def target_share(text: str, target: str, identify: "LanguageIdentifier", words: int = 8, chars: int = 16) -> tuple[float, list]:
    """Share of ``text``'s letters that lie in chunks identified as ``target`` (each chunk on
    its own), and the chunks with their labels."""
    parts = [(c, identify(c)[0]) for c in chunks(text, words, chars)]
    total = sum(len(letters(c)) for c, _ in parts)
    if total == 0:
        return 0.0, parts
    return sum(len(letters(c)) for c, lang in parts if lang == target) / total, parts


@dataclass
class StrictRule:
    """The strict judge. An output is a success only if all of these hold:

    * **language over most of the output**: at least ``min_target_share`` (80%) of its letters
      lie in chunks that py3langid, run on each chunk separately, identifies as the target
      (chunks: sentences, split into pieces of at most ``chunk_words`` words, or
      ``chunk_chars`` characters for text without spaces; see :func:`chunks`). An output that
      starts in English and then switches fails.
    * **script**: for a non-Latin target, at least ``min_script_share`` (80%) of its letters
      are in the target's script (:data:`SCRIPTS`).
    * **fluency relative to the model's own writing in the target**: its perplexity under the
      unsteered model (text alone) is at most ``k`` times ``native_median[target]``, the median
      perplexity of the unsteered model's continuations of native prompts in the target. ``k``
      is measured from those native continuations by a rule fixed in advance
      (:func:`native_k`), never tuned.
    * **relevance to its prompt**: the unsteered model's pointwise mutual information between
      prompt and output is positive (:mod:`langloc.steer.relevance`; fixed before measurement).
      Scored by :func:`judge` when relevance is on; with it off the criterion is not applied
      and the outputs say so.
    * at least ``min_tokens`` tokens and a distinct-token share of at least ``min_distinct``
      (as the lenient judge: a loop has a low perplexity, so perplexity alone does not catch it).
    """

    native_median: dict = field(default_factory=dict)
    k: float = 2.0
    min_target_share: float = 0.8
    min_script_share: float = 0.8
    chunk_words: int = 8
    chunk_chars: int = 16
    min_tokens: int = 8
    min_distinct: float = 0.5

    def __post_init__(self):
        check_range("min_target_share", self.min_target_share, 0.0, 1.0)
        check_range("min_script_share", self.min_script_share, 0.0, 1.0)
        if self.k <= 0 or self.chunk_words < 1 or self.chunk_chars < 1:
            raise LanglocError("k, chunk_words and chunk_chars must be positive")

    def verdict(self, text: str, tokens: list[int], ppl: float, target: str, identify,
                relevant: bool | None = None) -> dict:
        """The strict judge's fields for one output: ``strict`` (success) and why not
        (``relevant``: the relevance criterion's verdict, None where relevance is off)."""
        if target not in self.native_median:
            raise LanglocError(f"the strict judge has no native perplexity for {target!r}")
        share, parts = target_share(text, target, identify, self.chunk_words, self.chunk_chars)
        script = script_share(text, target)
        limit = self.k * self.native_median[target]
        fails = []
        if share < self.min_target_share:
            fails.append("language")
        if script is not None and script < self.min_script_share:
            fails.append("script")
        if not ppl <= limit:
            fails.append("perplexity")
        if relevant is False:
            fails.append("relevance")
        if len(tokens) < self.min_tokens or distinct_share(tokens) < self.min_distinct:
            fails.append("repetitive_or_short")
        return {"target_share": round(share, 4), "script_share": None if script is None else round(script, 4),
                "ppl_limit": round(limit, 3), "chunk_langs": [lang for _, lang in parts],
                "strict": not fails, "strict_fails": fails}


def native_k(ratios: list[float], quantile: float = 0.95) -> float:
    """The fluency factor ``k``, fixed in advance as a rule: the ``quantile`` (95th percentile,
    linear interpolation) of perplexity / median perplexity over the unsteered model's native
    continuations in every target language (pooled). So 95% of the model's own native writing
    passes the perplexity criterion, whatever the model."""
    xs = sorted(r for r in ratios if math.isfinite(r))
    if not xs:
        raise LanglocError("no native continuations to measure the fluency factor k on")
    pos = quantile * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def clas_score(target_rate: float | None, relevance_rate: float | None) -> float | None:
    """CLaS-Bench's score: the harmonic mean of language control (here the share of outputs
    identified as the target) and relevance (here the share the PMI criterion accepts); None
    where relevance was not judged, 0 where either is 0."""
    if target_rate is None or relevance_rate is None:
        return None
    return 0.0 if target_rate + relevance_rate == 0 else 2 * target_rate * relevance_rate / (target_rate + relevance_rate)


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        raise LanglocError("median of nothing")
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def distinct_share(tokens: list[int]) -> float:
    return len(set(tokens)) / len(tokens) if tokens else 0.0


def judge(records: list[dict], lm, identify: LanguageIdentifier, target: str, rule: FluencyRule,
          strict: StrictRule | None = None, relevance=None, lazy: bool = False) -> list[dict]:
    """Add ``lang``, ``lang_prob``, ``ppl``, ``distinct``, ``fluent`` and ``success`` (the
    lenient judge) to each record (a dict with ``prompt``, ``text`` and ``tokens``); with
    ``relevance`` (a :class:`~langloc.steer.relevance.Relevance` that is on) ``pmi`` and
    ``relevant``; with ``strict`` the strict judge's fields (``strict``, ``strict_fails``,
    ``target_share``, ...). Every score comes from the unsteered model.

    ``lazy`` (with ``strict``): relevance is scored only for the outputs that pass every other
    strict criterion. The strict verdicts are the same, since a conjunction that already fails
    cannot pass; the relevance rate is not measured (None). Relevance costs 1 + ``others``
    scoring passes per output, so the search on the tuning prompts uses this (the held-out
    outputs, the controls and the native references are scored in full)."""
    if relevance is not None and not (lazy and strict is not None):
        relevance.score(lm, records)
    ppls = text_perplexities(lm, [r["tokens"] for r in records])
    for r, ppl in zip(records, ppls):
        lang, prob = identify(r["text"])
        d = distinct_share(r["tokens"])
        fluent = len(r["tokens"]) >= rule.min_tokens and d >= rule.min_distinct and ppl <= rule.max_ppl
        r.update(lang=lang, lang_prob=round(prob, 4), ppl=round(ppl, 3), distinct=round(d, 4),
                 fluent=bool(fluent), success=bool(fluent and lang == target))
        if strict is not None:
            r.update(strict.verdict(r["text"], r["tokens"], ppl, target, identify, r.get("relevant")))
    if relevance is not None and lazy and strict is not None:
        passed = [r for r in records if r["strict"] and "relevant" not in r]
        relevance.score(lm, records, only=passed)  # compared with all the records' prompts, as when not lazy
        for r in passed:
            if r.get("relevant") is False:
                r.update(strict=False, strict_fails=r["strict_fails"] + ["relevance"])
    return records


def summarise(records: list[dict], target: str) -> dict:
    n = len(records)
    if n == 0:
        return {"n": 0}
    target_rate = sum(r["lang"] == target for r in records) / n
    relevance_rate = (sum(bool(r["relevant"]) for r in records) / n) if all("relevant" in r for r in records) else None
    ppl = sorted(r["ppl"] for r in records)
    langs: dict[str, int] = {}
    for r in records:
        langs[r["lang"]] = langs.get(r["lang"], 0) + 1
    return {
        "n": n,
        "strict_rate": (sum(bool(r["strict"]) for r in records) / n) if "strict" in records[0] else None,
        "target_rate": target_rate,
        "relevance_rate": relevance_rate,
        "clas": clas_score(target_rate, relevance_rate),
        "fluent_target_rate": sum(r["success"] for r in records) / n,
        "fluent_rate": sum(r["fluent"] for r in records) / n,
        "median_ppl": ppl[n // 2] if n % 2 else (ppl[n // 2 - 1] + ppl[n // 2]) / 2,
        "mean_distinct": sum(r["distinct"] for r in records) / n,
        "languages": dict(sorted(langs.items(), key=lambda kv: -kv[1])),
    }
