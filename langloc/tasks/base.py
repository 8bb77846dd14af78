"""Parallel multilingual tasks: the same items in several languages, and how a model scores.

A task yields, for each language, a list of :class:`TaskItem` s with the *same ids in the same
order* in every language (item ``i`` of French is item ``i`` of Chinese, translated), and
scores a model on one language's items. Every item has a prompt and a gold continuation; the
first token of the gold continuation (tokenised on its own, as the prompt and answer are in
:func:`langloc.tasks.scoring.encode_pair`) is the target of attribution, and the prompt's
last token is where neurons are classified. Multiple-choice items also carry their choices
and the index of the right one (their gold continuation is the right choice); they are the
items of the masked-LoRA transfer study as well (:func:`TaskItem.multiple_choice`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from langloc.errors import LanglocError


@dataclass(frozen=True)
class TaskItem:
    id: str  # the same in every language
    lang: str
    prompt: str
    gold: str  # gold continuation (answer, or the text to model); its first token is the attribution target
    choices: tuple[str, ...] = ()
    label: int | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if not self.gold:
            raise LanglocError(f"item {self.id!r} ({self.lang}) has an empty gold continuation")
        if self.choices:
            if len(self.choices) < 2:
                raise LanglocError(f"item {self.id!r} needs at least 2 choices, has {len(self.choices)}")
            if self.label is None or not 0 <= self.label < len(self.choices):
                raise LanglocError(f"item {self.id!r} ({self.lang}): label {self.label} is not a choice index")
            if self.gold != self.choices[self.label]:
                raise LanglocError(f"item {self.id!r} ({self.lang}): the gold continuation is not the right choice")

    @classmethod
    def multiple_choice(cls, prompt: str, choices: Sequence[str], label: int, *, id: str = "", lang: str = "",
                        meta: dict | None = None) -> "TaskItem":
        """A multiple-choice item; its gold continuation is ``choices[label]``."""
        choices = tuple(choices)
        if len(choices) < 2:
            raise LanglocError(f"item {id!r} needs at least 2 choices, has {len(choices)}")
        if not 0 <= label < len(choices):
            raise LanglocError(f"item {id!r}: label {label} is not a choice index")
        return cls(id, lang, prompt, choices[label], choices, label, dict(meta or {}))


@dataclass
class TaskScore:
    """One language's result: ``accuracy`` (the task's own definition) and, where the task
    has them, extra figures (``nll``, ``ppl``, ``tokens``). ``units``: per item, (right,
    counted) with ``accuracy = sum(right) / sum(counted)`` (its interval's units are the items)."""

    accuracy: float
    n: int
    extra: dict = field(default_factory=dict)
    units: list = field(default_factory=list)


class Task:
    """Base class. Subclasses set ``name`` and ``accuracy_means`` and implement
    :meth:`_items` and :meth:`score`."""

    name: str = "task"
    accuracy_means: str = ""
    split_matters: bool = True  # False where the task has no training data to keep apart from

    def options(self) -> dict:
        """The settings that define the items (recorded in metadata)."""
        return {}

    def check(self, languages: Sequence[str]) -> None:
        """Fail with a clear message (before a model loads) if the languages cannot be served."""

    def items(self, languages: Sequence[str], n: int, *, split: str = "eval", seed: int = 0) -> dict[str, list[TaskItem]]:
        """``n`` parallel items per language (fewer only if the data have fewer)."""
        languages = list(languages)
        if n < 1:
            raise LanglocError(f"number of items must be at least 1, got {n}")
        if len(set(languages)) != len(languages):
            raise LanglocError(f"language(s) listed twice: {', '.join(sorted({x for x in languages if languages.count(x) > 1}))}")
        self.check(languages)
        out = self._items(languages, n, split=split, seed=seed)
        check_parallel(out, languages, self.name)
        return out

    def _items(self, languages: list[str], n: int, *, split: str, seed: int) -> dict[str, list[TaskItem]]:
        raise NotImplementedError

    def score(self, lm, items: Sequence[TaskItem], *, batch_size: int = 8, progress: bool = False) -> TaskScore:
        raise NotImplementedError


def check_parallel(items: dict[str, list[TaskItem]], languages: Sequence[str], name: str = "task") -> None:
    """Every language has the same item ids in the same order, and at least one item."""
    if list(items) != list(languages):
        raise LanglocError(f"{name}: items for {list(items)}, expected {list(languages)}")
    ids = [[it.id for it in items[lang]] for lang in languages]
    if not ids or not ids[0]:
        raise LanglocError(f"{name}: no items")
    for lang, row in zip(languages, ids):
        if row != ids[0]:
            raise LanglocError(f"{name}: the items of {lang} are not parallel to those of {languages[0]}")
        if any(it.lang != lang for it in items[lang]):
            raise LanglocError(f"{name}: an item listed under {lang} is in another language")
