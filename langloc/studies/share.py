"""share: neuron sharing across languages on parallel tasks (one input in K languages).

Per item a neuron is all-shared if activated in all K languages, partial-shared in 2..K-1,
specific in 1, non-activated in none; attribution by category; optionally causal tests
(deactivate all-shared / specific / random neurons, boost all-shared ones). See
:func:`langloc.share.analysis.share_study` (it computes the rows; this module writes). Writes ``OUT/categories.csv``, ``stability.csv``,
``attribution.csv``, ``attribution_reference.csv``, ``top_contribution.csv``, ``causal.csv``
(with causal), ``share.json`` (the manifest) and ``plots/``. Under torchrun the batches of
items and the causal evaluations are shared out over the processes; the first writes the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.errors import LanglocError
from langloc.models.loading import DEFAULT_MODEL
from langloc.studies.base import Manifest, StudyConfig, check_choices

KIND = kinds.SHARE


@dataclass
class Config(StudyConfig):
    """tasks: parallel tasks (bible-lm, bible-choice, gsm-symbolic); languages: at least 2;
    model, dtype, device, neuron_site: the model; items: parallel items per task; threshold: a
    neuron is activated above it; position: last (the prompt's last token) or all (reduced by
    reduce: any or mean); gold_tokens: joint or separate; top_k: neurons of largest
    contribution per layer in top_contribution.csv; causal: also the causal tests, with
    boost (factors for all-shared neurons) and boost_controls (random neurons boosted too);
    choice_target: bible-choice's candidate language (auto: en, or de if en is analysed);
    max_chars: longest verse; split: Bible split of the items; seed: items and random
    neurons; batch_size: sequences per forward pass; progress: bars."""

    tasks: tuple[str, ...] = ("bible-lm", "bible-choice")
    languages: tuple[str, ...] = ("en", "fr", "es", "zh", "ru", "ja")
    model: str = DEFAULT_MODEL
    items: int = 50
    threshold: float = 0.0
    position: str = "last"
    reduce: str = "any"
    gold_tokens: str = "joint"
    top_k: int = 800
    causal: bool = False
    boost: tuple[float, ...] = (1.5, 2.0)
    boost_controls: bool = True
    choice_target: str = "auto"
    max_chars: int = 200
    split: str = "eval"
    seed: int = 0
    batch_size: int = 8
    dtype: str = "auto"
    device: Optional[str] = None
    neuron_site: Optional[str] = None
    progress: bool = True


def _check(c: Config) -> list[float]:
    """Every check that needs no model; returns the boost factors."""
    from langloc.share.capture import check_gold_tokens, check_position
    from langloc.share.categories import check_threshold
    from langloc.share.causal import check_boosts
    from langloc.tasks import TASKS

    check_choices("task", c.tasks, TASKS)
    if len(set(c.tasks)) != len(c.tasks):
        raise LanglocError("a task is listed twice in --tasks")
    if len(c.languages) < 2:
        raise LanglocError(f"sharing categories need at least 2 languages, got {len(c.languages)} "
                           f"({','.join(c.languages)!r})")
    c.threshold = check_threshold(c.threshold)
    check_position(c.position, c.reduce)
    check_gold_tokens(c.gold_tokens)
    if c.top_k < 1:
        raise LanglocError(f"--top-k must be at least 1, got {c.top_k}")
    boosts = check_boosts(c.boost)
    if c.causal and not boosts:
        raise LanglocError("--boost needs at least one factor, e.g. 1.5,2")
    if c.items < 1 or c.batch_size < 1:
        raise LanglocError(f"--items and --batch-size must be at least 1, got {c.items} and {c.batch_size}")
    return boosts


def run(lm, config: Config, out: str | Path) -> Manifest:
    """The manifest written to share.json; its ``result``: ``{"causal": rows of causal.csv,
    "tasks": name -> Task, "model": the model's name}``."""
    from langloc import distributed
    from langloc.models import load_model
    from langloc.artefacts import write_json
    from langloc.share.analysis import share_study
    from langloc.tasks import get_task

    c = config
    boosts = _check(c)
    langs = list(c.languages)
    options = {"bible-lm": {"max_chars": c.max_chars}, "bible-choice": {"max_chars": c.max_chars,
                                                                        "target": c.choice_target}}
    task_objs = {n: get_task(n, **options.get(n, {})) for n in c.tasks}
    # Items are built before the model loads: unknown languages or missing data fail first.
    task_items = {n: t.items(langs, c.items, split=c.split, seed=c.seed) for n, t in task_objs.items()}
    lm = lm or load_model(c.model, dtype=c.dtype, device=c.device or distributed.local_device(),
                          neuron_site=c.neuron_site)
    started = time.time()
    res = share_study(lm, task_objs, task_items, c)
    meta = _manifest(lm, c, boosts, task_objs, task_items, res, started)
    if distributed.is_main():  # under torchrun the first process writes; every one returns the same
        _write(Path(out), lm, c, res)
        write_json(Path(out) / "share.json", meta)
    return Manifest(meta, result={"causal": res.causal, "tasks": task_objs, "model": lm.name},
                    path=Path(out) / "share.json")


def _manifest(lm, c: Config, boosts: list[float], tasks: dict, items: dict, res, started: float) -> dict:
    """share.json: the settings, the model, the items and the summary per task, with its manifest."""
    from langloc.manifest import make_manifest, stamp

    languages = res.languages
    settings = {"split": c.split, "command": "share"}
    meta = {
        "tasks": {name: {"options": t.options(), "accuracy": t.accuracy_means,
                         "item_ids": [it.id for it in items[name][languages[0]]],
                         **({"target": t.resolve_target(languages)} if hasattr(t, "resolve_target") else {})}
                  for name, t in tasks.items()},
        "languages": languages, "threshold": c.threshold, "position": c.position,
        "reduce": c.reduce if c.position == "all" else None, "gold_tokens": c.gold_tokens, "top_k": c.top_k,
        "seed": c.seed,
        "causal": ({"boosts": boosts, "boost_controls": c.boost_controls,
                    "sets": "neurons whose modal category over the task's items is all_shared / specific; "
                            "random = same count per layer"} if c.causal else None),
        **settings,
        "summary": res.summary, "seconds": {**res.seconds, "total": round(time.time() - started, 1)},
    }
    config = {k: meta[k] for k in ("languages", "threshold", "position", "reduce", "gold_tokens", "top_k", "causal")}
    config.update({"tasks": list(tasks), **settings})
    return stamp(meta, make_manifest(KIND, model=lm.meta, corpus={"tasks": list(tasks)}, split=c.split, config=config,
                                     seeds={"items": c.seed, "random_neurons": c.seed}, started=started))


def _write(out: Path, lm, c: Config, res) -> None:
    """The CSV files and plots of the analysis (share.json is written after them)."""
    from langloc.artefacts import write_csv
    from langloc.share.plots import plot_categories, plot_causal
    from langloc.share.attribution import AGGREGATES, CategoryAttribution
    from langloc.share.categories import CATEGORIES

    write_csv(out / "categories.csv", res.categories, ["task", "layer", "category", "share"], float_digits=6)
    write_csv(out / "stability.csv", res.stability,
              ["task", "layer", "neuron", "modal_category", "stability", *CATEGORIES], float_digits=4)
    # Scores span many orders of magnitude (and depend on the model's scale): full precision.
    write_csv(out / "attribution.csv", res.attribution, ["task", "layer", "category", "n", *CategoryAttribution.FIELDS])
    write_csv(out / "attribution_reference.csv", res.reference,
              ["task", "language", "layer", "category", "score", "items", *AGGREGATES])
    write_csv(out / "top_contribution.csv", res.top, ["task", "language", "layer", "category", "top_k", "share"],
              float_digits=6)
    plot_categories(res.shares, out / "plots" / "categories.png", model_name=lm.name, threshold=c.threshold,
                    position=c.position)
    if c.causal:
        extra = [k for k in dict.fromkeys(k for r in res.causal for k in r)
                 if k not in ("task", "condition", "language", "accuracy", "n_neurons", "accuracy_lo", "accuracy_hi")]
        write_csv(out / "causal.csv", res.causal,
                  ["task", "condition", "language", "accuracy", "n_neurons", "accuracy_lo", "accuracy_hi", *extra],
                  float_digits=6)
        plot_causal(res.causal, out / "plots" / "causal.png")
