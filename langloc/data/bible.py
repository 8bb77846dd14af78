"""Verses of the aligned Bible corpus, by language and split, for tasks built on it.

Read from the same database, chapters and text clean-up as :class:`langloc.data.corpora.BibleCorpus`
(``stats`` chapters for training items, held-out ``eval`` chapters for evaluation).
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import Sequence

from langloc.data.corpora import _NO_SPACE, BIBLE_TRANSLATIONS, SPLITS, BibleCorpus
from langloc.errors import LanglocError

LANGUAGE_NAMES = {
    "en": "English", "zh": "Chinese", "fr": "French", "es": "Spanish", "ru": "Russian", "ja": "Japanese",
    "ar": "Arabic", "hi": "Hindi", "vi": "Vietnamese", "id": "Indonesian", "de": "German", "pt": "Portuguese",
    "it": "Italian", "ko": "Korean", "tr": "Turkish", "bn": "Bengali", "fa": "Persian", "sw": "Swahili",
    "uk": "Ukrainian", "pl": "Polish", "ro": "Romanian", "tl": "Tagalog",
}
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


def check_bible_languages(languages: Sequence[str]) -> None:
    missing = [lang for lang in languages if lang not in BIBLE_TRANSLATIONS]
    if missing:
        raise LanglocError(f"unknown language(s) {', '.join(missing)} for corpus bible; "
                           f"available: {', '.join(sorted(BIBLE_TRANSLATIONS))}")
