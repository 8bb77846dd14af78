"""The cross-lingual verse-translation choice task as a parallel task.

A thin wrapper over :func:`langloc.adapters.bible_task.bible_choice_items` (given a verse in
language X, pick its translation into the *target* language among four candidates, by
log-likelihood; :mod:`langloc.adapters.choice` scores it). For a fixed split, seed and
target, every source language gets the same verses, distractors and answer positions, so
the items are parallel; only verses usable in every requested language are kept.

The target language must not be one of the analysed languages (a verse "translated" into
its own language is a copying task). ``target="auto"`` takes English, or, if English is
analysed, the first of German, Portuguese, Italian, ... that is not.

The prompt is ``"<Source language>: <verse>\\n<Target language>:"``: its last token (the
colon) is where neurons are classified, and the first token of the right candidate is the
attribution target. ``accuracy`` is the share of items whose right candidate has the
largest summed log-probability (lm-evaluation-harness's ``acc``).
"""

from __future__ import annotations

from typing import Sequence

from langloc.adapters.bible_task import bible_choice_items
from langloc.adapters.choice import ChoiceItem, choice_accuracy, choice_correct, score_choices
from langloc.errors import LanglocError
from langloc.tasks.base import Task, TaskItem, TaskScore
from langloc.tasks.bible_lm import check_bible_languages

TARGET_FALLBACKS = ("en", "de", "pt", "it", "pl", "ro", "tr", "sw", "tl")


class BibleChoiceTask(Task):
    name = "bible-choice"
    accuracy_means = "share of items whose right translation scores highest (4 choices; chance 0.25)"

    def __init__(self, target: str = "auto", max_chars: int = 200, choices: int = 4):
        if max_chars < 1:
            raise LanglocError(f"max_chars must be at least 1, got {max_chars}")
        self.target = target
        self.max_chars = max_chars
        self.choices = choices

    def resolve_target(self, languages: Sequence[str]) -> str:
        if self.target != "auto":
            return self.target
        return next(t for t in TARGET_FALLBACKS if t not in languages)

    def options(self) -> dict:
        return {"target": self.target, "max_chars": self.max_chars, "choices": self.choices}

    def check(self, languages: Sequence[str]) -> None:
        target = self.resolve_target(languages)
        check_bible_languages([*languages, target])
        if target in languages:
            raise LanglocError(f"the bible-choice target language {target!r} is also an analysed language; "
                               "pick another target (--choice-target) or leave it out of --languages")

    def _items(self, languages, n, *, split, seed):
        target = self.resolve_target(languages)
        # Each source language skips the verses its own translation lacks or has too long;
        # ask for more and keep the verses every language has (same shuffled order for all).
        pool = {lang: bible_choice_items(lang, split, 3 * n + 20, target=target, choices=self.choices, seed=seed,
                                         max_chars=self.max_chars)
                for lang in languages}
        keys = [it.meta["verse"] for it in pool[languages[0]]]
        common = set.intersection(*({it.meta["verse"] for it in items} for items in pool.values()))
        chosen = [k for k in keys if k in common][:n]
        if not chosen:
            raise LanglocError(f"no {split} verse of at most {self.max_chars} characters exists in all of "
                               f"{', '.join(languages)}")
        out = {}
        for lang in languages:
            by_key = {it.meta["verse"]: it for it in pool[lang]}
            out[lang] = [TaskItem("{}.{}.{}".format(*k), lang, by_key[k].prompt, by_key[k].answer, by_key[k].choices,
                                  by_key[k].label, {"verse": k, "split": split, "target": target})
                         for k in chosen]
        return out

    def score(self, lm, items, *, batch_size=8, progress=False) -> TaskScore:
        choice_items = [ChoiceItem(it.prompt, it.choices, it.label, it.id) for it in items]
        scores = score_choices(lm, choice_items, batch_size=batch_size, progress=progress)
        return TaskScore(choice_accuracy(choice_items, scores), len(items),
                         {"acc_norm": choice_accuracy(choice_items, scores, norm="chars")},
                         [(c, 1) for c in choice_correct(choice_items, scores)])
