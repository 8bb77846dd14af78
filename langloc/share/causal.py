"""Causal tests of sharing categories: deactivate or boost neurons, measure task accuracy.

Which neurons: those whose *modal* category over the task's items (the category they fall
into most often, :func:`langloc.share.categories.stability`) is all-shared, or specific.
They are chosen on the same items the accuracy is measured on, as in the paper's analysis.

Conditions, each evaluated on every language's items:

* ``base``: no intervention;
* ``zero:all_shared`` / ``zero:specific``: those neurons set to 0 at every position;
* ``zero:random(all_shared)`` / ``zero:random(specific)``: the same number of random neurons
  in every layer (drawn among all neurons, each from its own seed derived from the run seed
  and the name ``random(all_shared)`` / ``random(specific)``: :mod:`langloc.controls`);
* ``xK:all_shared``: all-shared neurons' activations multiplied by K at every position
  ("boosting"), and with ``boost_controls`` ``xK:random(all_shared)`` the same on random ones.

A condition whose set is empty is not run: its rows repeat ``base`` with ``n_neurons`` 0.
Every accuracy has its 95% interval over the items (``accuracy_lo``, ``accuracy_hi``;
the same item resamples for every condition of a task and language).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from tqdm.auto import tqdm

from langloc.controls import random_control
from langloc.errors import LanglocError
from langloc.evaluate.intervals import ratio_estimate_ci, share_ci
from langloc.intervene import Edit, Intervention
from langloc.share.categories import modal_neurons


def check_boosts(boosts: Sequence[float]) -> list[float]:
    out = []
    for b in boosts:
        try:
            v = float(b)
        except (TypeError, ValueError):
            raise LanglocError(f"boost factors must be numbers, got {b!r}") from None
        if not math.isfinite(v) or v <= 0:
            raise LanglocError(f"boost factors must be finite and positive, got {b}")
        out.append(v)
    return out


def causal_sets(modal: torch.Tensor, *, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Per layer: modal all-shared and specific neurons, and random sets of the same counts."""
    I = modal.shape[-1]
    shared = modal_neurons(modal, "all_shared")
    specific = modal_neurons(modal, "specific")
    return {"all_shared": shared, "random(all_shared)": random_control(shared, I, seed, "random(all_shared)"),
            "specific": specific, "random(specific)": random_control(specific, I, seed, "random(specific)")}


def _fmt(k: float) -> str:
    return f"{k:g}"


def conditions(sets: dict[str, list[torch.Tensor]], boosts: Sequence[float] = (1.5, 2.0),
               boost_controls: bool = True) -> list[tuple[str, Intervention | None, int]]:
    """(name, intervention or None, number of neurons) for every condition, base first."""
    out: list = [("base", None, 0)]
    for name in ("all_shared", "random(all_shared)", "specific", "random(specific)"):
        layers = sets[name]
        out.append((f"zero:{name}", Intervention([Edit.uniform("zero", layers)]), sum(len(i) for i in layers)))
    for k in check_boosts(boosts):
        for name in ("all_shared", "random(all_shared)") if boost_controls else ("all_shared",):
            layers = sets[name]
            out.append((f"x{_fmt(k)}:{name}", Intervention([Edit.uniform("scale", layers, k, {"value": "factor", "factor": k})]),
                        sum(len(i) for i in layers)))
    return out


def accuracy_interval(score) -> tuple[float | None, float | None]:
    """95% interval of a task score's accuracy over its items (None without units): Clopper-
    Pearson where each item is one answer, else a ratio estimate of right over counted tokens
    (Student-t, none below 8 items)."""
    if not score.units:
        return None, None
    right, counted = zip(*score.units)
    return share_ci(right) if set(counted) == {1} else ratio_estimate_ci(right, counted)


def causal_study(lm, task, items: dict[str, list], modal: torch.Tensor, *, boosts: Sequence[float] = (1.5, 2.0),
                 boost_controls: bool = True, seed: int = 0, batch_size: int = 8, progress: bool = True) -> list[dict]:
    """Rows ``task, condition, language, accuracy, n_neurons`` (+ the task's extra figures)."""
    from langloc import distributed

    conds = conditions(causal_sets(modal, seed=seed), boosts, boost_controls)
    # Every (condition, language) evaluation is independent (an empty set repeats base's): under
    # torchrun they are shared out over the processes and gathered in this order.
    runs = [(name, iv, lang) for name, iv, count in conds for lang in items if iv is None or count]
    rank, world = distributed.rank_and_world()
    bar = tqdm(total=distributed.rank_share(len(runs), rank, world), desc=f"causal {task.name}", unit="eval",
               disable=not progress or rank != 0)

    def score(run):
        _, iv, lang = run
        if iv is None:
            return task.score(lm, items[lang], batch_size=batch_size)
        with iv.apply(lm):
            return task.score(lm, items[lang], batch_size=batch_size)

    try:
        scores = dict(zip(((name, lang) for name, _, lang in runs), distributed.map_cells(score, runs,
                                                                                          lambda j, r: bar.update())))
    finally:
        bar.close()
    rows = []
    for name, iv, count in conds:
        for lang in items:
            score = scores[(name if iv is None or count else "base", lang)]
            lo, hi = accuracy_interval(score)
            rows.append({"task": task.name, "condition": name, "language": lang, "accuracy": score.accuracy,
                         "n_neurons": count, "accuracy_lo": lo, "accuracy_hi": hi,
                         **{k: v for k, v in score.extra.items() if k != "tokens"}})
    return rows
