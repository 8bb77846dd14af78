"""Parallel language modelling on held-out aligned Bible verses.

An item is one verse (book, chapter, verse) of the corpus' held-out ``eval`` chapters (or the
``stats`` ones), present in every requested language: the *prompt* is the verse before it in
the same chapter and language, the *gold continuation* is the verse itself (after a space,
except in Chinese and Japanese, which the corpus writes without spaces). So every language
sees the same content, and:

* neurons are classified at the last token of the preceding verse, and attribution targets
  the first token of the verse (what the model must predict next);
* the score is the verse's token-level negative log-likelihood given the preceding verse
  (``nll`` = mean per token, ``ppl`` = exp of it), and ``accuracy`` is the share of the verse's
  tokens that are the model's top-1 prediction (pooled over the language's items).

The first verse of a chapter has no preceding verse and is never an item. Both verses must
be at most ``max_chars`` characters in every language (to bound the cost).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch

from langloc.data.bible import bible_verses, check_bible_languages
from langloc.data.corpora import _NO_SPACE, SPLITS
from langloc.errors import LanglocError
from langloc.tasks.base import Task, TaskItem, TaskScore
from langloc.models.calls import logits_at


class BibleLMTask(Task):
    name = "bible-lm"
    accuracy_means = "top-1 next-token accuracy on the verse's tokens (pooled); nll/ppl per token"

    def __init__(self, max_chars: int = 200):
        if max_chars < 1:
            raise LanglocError(f"max_chars must be at least 1, got {max_chars}")
        self.max_chars = max_chars

    def options(self) -> dict:
        return {"max_chars": self.max_chars, "prompt": "the preceding verse", "gold": "the verse"}

    def check(self, languages: Sequence[str]) -> None:
        check_bible_languages(languages)

    def _items(self, languages, n, *, split, seed):
        if split not in SPLITS:
            raise LanglocError(f"unknown split {split!r}; use one of {SPLITS}")
        verses = {lang: bible_verses(lang, split) for lang in languages}

        def usable(key):
            return all(key in verses[lang] and len(verses[lang][key]) <= self.max_chars for lang in languages)

        keys = sorted(k for k in verses[languages[0]] if k[2] > 1 and usable(k) and usable((k[0], k[1], k[2] - 1)))
        if not keys:
            raise LanglocError(f"no {split} verse of at most {self.max_chars} characters has a preceding verse "
                               f"in all of {', '.join(languages)}")
        random.Random(seed).shuffle(keys)
        out = {}
        for lang in languages:
            sep = "" if lang in _NO_SPACE else " "
            out[lang] = [TaskItem(f"{b}.{c}.{v}", lang, verses[lang][(b, c, v - 1)], sep + verses[lang][(b, c, v)],
                                  meta={"verse": (b, c, v), "split": split})
                         for b, c, v in keys[:n]]
        return out

    def score(self, lm, items, *, batch_size=8, progress=False) -> TaskScore:
        stats = continuation_stats(lm, [(it.prompt, it.gold) for it in items], batch_size=batch_size)
        tokens = sum(s[1] for s in stats)
        nll = -sum(s[0] for s in stats) / tokens
        return TaskScore(sum(s[2] for s in stats) / tokens, len(items),
                         {"nll": nll, "ppl": math.exp(min(nll, 700.0)), "tokens": tokens},
                         [(s[2], s[1]) for s in stats])


@torch.no_grad()
def continuation_stats(lm, pairs: Sequence[tuple[str, str]], *, batch_size: int = 8) -> list[tuple[float, int, int]]:
    """For each (prompt, continuation): summed log-probability of the continuation's tokens,
    their number, and how many of them are the model's top-1 prediction. Prompt and
    continuation are tokenised separately (:func:`langloc.adapters.train.encode_pair`)."""
    from langloc.tasks.scoring import collate, encode_pair, pad_id

    if batch_size < 1:
        raise LanglocError(f"batch size must be at least 1, got {batch_size}")
    tok, hf = lm.tokenizer, lm.model
    examples = [encode_pair(tok, p, c, lm.add_bos) for p, c in pairs]
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    out: list = [None] * len(examples)
    pad = pad_id(tok)
    for b in range(0, len(order), batch_size):
        chunk = order[b:b + batch_size]
        ids, att, tgt = collate([examples[i] for i in chunk], pad, lm.device)
        pred = tgt[:, 1:]  # position t-1 predicts token t
        keep = pred.any(0).nonzero().flatten()
        logits = logits_at(hf, keep, input_ids=ids, attention_mask=att)  # [B, K, V]
        nxt = ids[:, keep + 1]
        picked = logits.gather(-1, nxt.unsqueeze(-1)).squeeze(-1).float()
        logp = picked - torch.logsumexp(logits.float(), dim=-1)
        right = logits.argmax(-1) == nxt
        mask = pred[:, keep]
        for row, i in enumerate(chunk):
            m = mask[row]
            out[i] = (float(logp[row][m].sum()), int(m.sum()), int(right[row][m].sum()))
    return out
