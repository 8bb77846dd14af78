"""The cross-lingual verse-translation choice task: items, and the task over parallel items.

:func:`bible_choice_items`: a verse in the source language and four candidate verses in the
target language (English by default): its translation and three distractors. The model
answers by log-likelihood (:func:`langloc.tasks.scoring.score_choices`). Items are built per
split of the Bible corpus (:class:`langloc.data.corpora.BibleCorpus`: ``stats`` chapters for
training items, held-out ``eval`` chapters for evaluation), so training and evaluation verses
are disjoint. Everything but the source text is independent of the source language: for a
given split, ``n`` and ``seed``, every source language gets the same verses (as far as its
translation has them), the same distractors and the same position of the right answer, so
accuracies of different languages are paired comparisons. Distractors are drawn at random
among the target verses closest in length to the right one, so that a candidate's length
alone (which dominates a summed log-probability) gives little away.

:class:`BibleChoiceTask` (``bible-choice``): given a verse in language X, pick its translation
into the *target* language among four candidates. For a fixed split, seed and target, every
source language gets the same verses, distractors and answer positions, so the items are
parallel; only verses usable in every requested language are kept.

The target language must not be one of the analysed languages (a verse "translated" into
its own language is a copying task). ``target="auto"`` takes English, or, if English is
analysed, the first of German, Portuguese, Italian, ... that is not.

The prompt is ``"<Source language>: <verse>\\n<Target language>:"``: its last token (the
colon) is where neurons are classified, and the first token of the right candidate is the
attribution target. ``accuracy`` is the share of items whose right candidate has the
largest summed log-probability (lm-evaluation-harness's ``acc``).
"""

from __future__ import annotations

import bisect
import random
from typing import Sequence

from langloc.data.bible import LANGUAGE_NAMES, bible_verses, check_bible_languages
from langloc.errors import LanglocError
from langloc.tasks.base import Task, TaskItem, TaskScore
from langloc.tasks.scoring import choice_accuracy, choice_correct, score_choices

TARGET_FALLBACKS = ("en", "de", "pt", "it", "pl", "ro", "tr", "sw", "tl")
TEMPLATE = "{source_name}: {source}\n{target_name}:"


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
) -> list[TaskItem]:
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
        items.append(TaskItem.multiple_choice(prompt, tuple(" " + c for c in cands), label,
                                              id=f"{source}:{split}:{key[0]}.{key[1]}.{key[2]}", lang=source,
                                              meta={"verse": key, "source": source, "target": target, "split": split}))
        if len(items) == n:
            break
    if not items:
        raise LanglocError(f"no {source} verses of at most {max_chars} characters in the {split} split")
    return items


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
            out[lang] = [TaskItem("{}.{}.{}".format(*k), lang, by_key[k].prompt, by_key[k].gold, by_key[k].choices,
                                  by_key[k].label, {"verse": k, "split": split, "target": target})
                         for k in chosen]
        return out

    def score(self, lm, items, *, batch_size=8, progress=False) -> TaskScore:
        scores = score_choices(lm, items, batch_size=batch_size, progress=progress)
        return TaskScore(choice_accuracy(items, scores), len(items),
                         {"acc_norm": choice_accuracy(items, scores, norm="chars")},
                         [(c, 1) for c in choice_correct(items, scores)])
