"""harness: lm-evaluation-harness tasks with language neurons deactivated or steered.

Every condition runs the same tasks: the model as it is (base), each zeroed language's
neurons (and random controls of the same count per layer), each saved intervention
(:func:`langloc.evaluate.harness.harness_study` evaluates; this module writes). Writes
``OUT/results.json`` (the harness's results per condition, with the manifest),
``OUT/metrics.csv`` and, for the offline Bible choice task, its task files in ``OUT/tasks``.
Needs the optional extra: pip install 'langloc[harness]'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from langloc import kinds
from langloc.errors import LanglocError
from langloc.studies.base import Manifest, StudyConfig, load_model_of

KIND = kinds.HARNESS


@dataclass
class Config(StudyConfig):
    """tasks: lm-evaluation-harness task names; bible_choice: languages of langloc's offline
    verse-translation choice task (harness tasks langloc_bible_choice_<lang>); model: default
    the neuron set's, else gemma-3-270m; neurons: neuron set for zero; zero: one condition per
    language, its neurons set to 0; random_controls: with zero, also random neurons; intervention:
    saved interventions, one condition each (named by file stem); adapter: saved LoRA adapter
    folders (langloc transfer --save-adapters), one condition each (adapter:<folder name>);
    base: also the model as it is;
    limit: documents per task (whole number) or a fraction (< 1); num_fewshot: few-shot
    examples; include_path: folder of own task YAML files; items, choice_target, max_chars:
    the Bible choice task's; seed: harness, controls and items; batch_size: sequences per
    forward pass; dtype, device, neuron_site: the model."""

    tasks: tuple[str, ...] = ()
    bible_choice: tuple[str, ...] = ()
    model: Optional[str] = None
    neurons: Optional[Path] = None
    zero: tuple[str, ...] = ()
    random_controls: bool = False
    intervention: tuple[Path, ...] = ()
    adapter: tuple[Path, ...] = ()
    base: bool = True
    limit: Optional[Union[int, float]] = None
    num_fewshot: Optional[int] = None
    include_path: Optional[Path] = None
    items: int = 100
    choice_target: str = "en"
    max_chars: int = 200
    seed: int = 0
    batch_size: int = 8
    dtype: str = "auto"
    device: Optional[str] = None
    neuron_site: Optional[str] = None


def _check(c: Config):
    """Every check that needs no model; returns the limit as the harness takes it."""
    if not c.tasks and not c.bible_choice:
        raise LanglocError("give harness tasks with --tasks and/or --bible-choice LANGS")
    if c.zero and c.neurons is None:
        raise LanglocError("--zero needs a neuron set (--neurons)")
    limit = c.limit
    if limit is not None and (limit <= 0 or (limit >= 1 and limit != int(limit))):
        raise LanglocError(f"--limit must be a whole number of documents or a fraction in (0, 1), got {limit:g}")
    return int(limit) if limit is not None and limit >= 1 else limit


def conditions(ns, c: Config, interventions: dict) -> dict:
    """Condition name -> Intervention (None: the model as it is)."""
    from langloc.intervene import Edit, Intervention

    out = {"base": None} if c.base else {}
    for lang in c.zero:
        out[f"zero:{lang}"] = Intervention([Edit.uniform("zero", ns.layers(lang))])
        if c.random_controls:
            # Its own draw, from the seed derived from --seed and the condition's name (docs/statistics.md).
            out[f"zero:random({lang})"] = Intervention([Edit.uniform(
                "zero", ns.random_like(lang, c.seed, condition=f"zero:random({lang})"))])
    out.update(interventions)
    return out


def _model(c: Config, lm):
    """The neuron set (or None) and the model (``lm``, else the set's unless --model names one)."""
    if c.neurons is None:
        from langloc.models.loading import DEFAULT_MODEL, load_model

        return None, lm or load_model(c.model or DEFAULT_MODEL, dtype=c.dtype, device=c.device, neuron_site=c.neuron_site)
    from langloc.identify import NeuronSet

    ns = NeuronSet.load(c.neurons)
    missing = [x for x in c.zero if x not in ns.languages]
    if missing:
        raise LanglocError(f"the neuron set has no neurons for {', '.join(missing)}; it has {', '.join(ns.languages)}")
    lm = lm or load_model_of(ns.meta, c.model, c.dtype, c.device, str(c.neurons))
    ns.check_model(lm)
    return ns, lm


def run(lm, config: Config, out: str | Path) -> Manifest:
    """The manifest of results.json; its ``result``: ``{"rows": metrics.csv's rows,
    "conditions": the condition names, "model": the model's name}``."""
    from langloc.evaluate import harness as H
    from langloc.intervene import Intervention
    from langloc.manifest import FIELDS

    c, out = config, Path(out)
    H._lm_eval()  # a missing extra fails before anything loads
    limit = _check(c)
    ivs = {Path(p).stem: Intervention.load(p) for p in c.intervention}
    if c.adapter:
        from langloc.adapters.masked_lora import SavedAdapter

        ivs.update({f"adapter:{Path(p).name}": SavedAdapter(p) for p in c.adapter})
    if not (c.base or c.zero or ivs):
        raise LanglocError("no condition to evaluate: --no-base with no --zero, --intervention or --adapter")
    if c.bible_choice and c.include_path is not None:
        raise LanglocError("--bible-choice writes its own task folder; use it or --include-path, not both")
    choice_items = {}
    if c.bible_choice:
        from langloc.tasks.bible_choice import bible_choice_items

        # Items first (bad languages fail before the model loads); files once all is checked.
        choice_items = {f"langloc_bible_choice_{lang}": bible_choice_items(lang, "eval", c.items, target=c.choice_target,
                                                                           seed=c.seed, max_chars=c.max_chars)
                        for lang in c.bible_choice}
    ns, lm = _model(c, lm)
    conds = conditions(ns, c, ivs)
    include_path = c.include_path
    if choice_items:
        include_path = out / "tasks"
        for name, task_items in choice_items.items():
            H.choice_task_yaml(include_path, name, task_items)
    tasks = [*c.tasks, *choice_items]
    started = time.time()
    rows, results = H.harness_study(lm, tasks, conds, limit=limit, num_fewshot=c.num_fewshot, batch_size=c.batch_size,
                                    include_path=include_path, seed=c.seed)
    doc = write_outputs(out, lm, c, tasks, limit, rows, results, started)
    manifest = {k: doc.get(k) for k in FIELDS}
    return Manifest(manifest, result={"rows": rows, "conditions": list(conds), "model": lm.name}, path=out / "results.json")


def write_outputs(out: Path, lm, c: Config, tasks: list[str], limit, rows: list[dict], results: dict,
                  started: float) -> dict:
    """metrics.csv and results.json (the harness's results per condition, with the manifest);
    returns results.json's document."""
    from langloc.artefacts import write_csv, write_json
    from langloc.manifest import make_manifest, stamp

    settings = {"command": "harness", "neurons": str(c.neurons) if c.neurons else None}
    write_csv(out / "metrics.csv", rows, ["condition", "task", "metric", "value"], float_digits=6)
    config = {"tasks": list(tasks), "limit": limit, "num_fewshot": c.num_fewshot, "batch_size": c.batch_size,
              "conditions": list(results), **settings}
    manifest = make_manifest(KIND, model=lm.meta, corpus={"harness_tasks": list(tasks)}, config=config,
                             seeds={"harness": c.seed}, started=started)
    doc = stamp({"tasks": list(tasks), "limit": limit, "num_fewshot": c.num_fewshot, "seed": c.seed, **settings,
                 "conditions": results}, manifest)
    write_json(out / "results.json", doc)
    return doc
