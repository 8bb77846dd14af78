"""An offline cross-lingual task from the aligned Bible: pick a verse's translation.

Item: a verse in the source language and four candidate verses in the target language
(English by default): its translation and three distractors. The model answers by
log-likelihood (:mod:`langloc.adapters.choice`). Items are built per split of the Bible
corpus (:class:`langloc.data.corpora.BibleCorpus`: ``stats`` chapters for training items,
held-out ``eval`` chapters for evaluation), so training and evaluation verses are disjoint.

Everything but the source text is independent of the source language: for a given split,
``n`` and ``seed``, every source language gets the same verses (as far as its translation
has them), the same distractors and the same position of the right answer, so accuracies
of different languages are paired comparisons. Distractors are drawn at random among the
target verses closest in length to the right one, so that a candidate's length alone (which
dominates a summed log-probability) gives little away.
"""

from __future__ import annotations

import bisect
import random
import sqlite3
from functools import lru_cache

from langloc.adapters.choice import ChoiceItem
from langloc.data.corpora import _NO_SPACE, BIBLE_TRANSLATIONS, SPLITS, BibleCorpus
from langloc.errors import LanglocError

LANGUAGE_NAMES = {
    "en": "English", "zh": "Chinese", "fr": "French", "es": "Spanish", "ru": "Russian", "ja": "Japanese",
    "ar": "Arabic", "hi": "Hindi", "vi": "Vietnamese", "id": "Indonesian", "de": "German", "pt": "Portuguese",
    "it": "Italian", "ko": "Korean", "tr": "Turkish", "bn": "Bengali", "fa": "Persian", "sw": "Swahili",
    "uk": "Ukrainian", "pl": "Polish", "ro": "Romanian", "tl": "Tagalog",
}
TEMPLATE = "{source_name}: {source}\n{target_name}:"
Verse = tuple[int, int, int]  # book, chapter, verse


@lru_cache(maxsize=32)
def bible_verses(lang: str, split: str) -> dict[Verse, str]:
    """``{(book, chapter, verse): text}`` of one language in one split of the Bible corpus
    (read-only, the same database, chapters and text clean-up as ``BibleCorpus``)."""
    if split not in SPLITS:
        raise LanglocError(f"unknown split {split!r}; use one of {SPLITS}")
    if lang not in BIBLE_TRANSLATIONS:
        raise LanglocError(f"unknown language {lang!r} for corpus bible; available: {', '.join(sorted(BIBLE_TRANSLATIONS))}")
    corpus = BibleCorpus()
    chapters = set(corpus._chapter_order(split))
    with sqlite3.connect(f"file:{corpus.db_path()}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?",
                          (BIBLE_TRANSLATIONS[lang],)).fetchall()
    out = {}
    for book, chapter, verse, text in rows:
        if (book, chapter) not in chapters or not text or not text.strip():
            continue
        text = text.strip()
        if lang in _NO_SPACE:
            text = text.replace(" ", "")  # the Chinese translation has stray spaces
        out[(book, chapter, verse)] = text
    return out


def bible_choice_items(
    source: str,
    split: str = "eval",
    n: int = 100,
    *,
    target: str = "en",
    choices: int = 4,
    seed: int = 0,
    max_chars: int = 300,
    neighbours: int = 20,
    template: str = TEMPLATE,
) -> list[ChoiceItem]:
    """``n`` items "which ``target`` verse translates this ``source`` verse?" from ``split``.

    Verses longer than ``max_chars`` characters (in either language) are left out to bound
    the cost; distractors come from the ``neighbours`` target verses of the split closest in
    length. ``template`` formats the prompt from ``source``, ``source_name``, ``target_name``;
    each candidate is the target verse after a space. Fewer than ``n`` items come back only if
    the split has fewer usable verses.
    """
    if source == target:
        raise LanglocError(f"source and target language are both {source!r}")
    if n < 1:
        raise LanglocError(f"number of items must be at least 1, got {n}")
    if choices < 2:
        raise LanglocError(f"need at least 2 choices, got {choices}")
    if neighbours < choices - 1:
        raise LanglocError(f"neighbours ({neighbours}) must be at least choices - 1 ({choices - 1})")
    src = bible_verses(source, split)
    tgt = {k: v for k, v in bible_verses(target, split).items() if len(v) <= max_chars}
    keys = sorted(tgt)
    if len(keys) < choices:
        raise LanglocError(f"the {split} split has too few {target} verses of at most {max_chars} characters")
    by_len = sorted(keys, key=lambda k: (len(tgt[k]), k))
    lengths = [len(tgt[k]) for k in by_len]
    random.Random(seed).shuffle(keys)
    names = {"source_name": LANGUAGE_NAMES.get(source, source), "target_name": LANGUAGE_NAMES.get(target, target)}
    items = []
    for key in keys:
        text = src.get(key)
        if text is None or len(text) > max_chars:
            continue
        right = tgt[key]
        # The same distractors and answer position for every source language.
        rng = random.Random(f"{seed}:{key}")
        centre = bisect.bisect_left(lengths, len(right))
        lo = max(0, centre - neighbours)
        near = sorted(by_len[lo:centre + neighbours + 1], key=lambda k: (abs(len(tgt[k]) - len(right)), k))
        pool = list(dict.fromkeys(tgt[k] for k in near if tgt[k] != right))[:neighbours]  # distinct texts
        if len(pool) < choices - 1:
            continue
        cands = rng.sample(pool, choices - 1)
        label = rng.randrange(choices)
        cands.insert(label, right)
        prompt = template.format(source=text, **names)
        items.append(ChoiceItem(prompt, tuple(" " + c for c in cands), label, f"{source}:{split}:{key[0]}.{key[1]}.{key[2]}",
                                {"verse": key, "source": source, "target": target, "split": split}))
        if len(items) == n:
            break
    if not items:
        raise LanglocError(f"no {source} verses of at most {max_chars} characters in the {split} split")
    return items
