"""lm-evaluation-harness tasks with a langloc intervention applied.

``harness_evaluate(lm, ["xnli_fr", "belebele_fra_Latn"], intervention=iv)`` wraps the
already-loaded model in the harness's ``HFLM`` (one model in memory, no second load) and
runs ``lm_eval.simple_evaluate`` inside ``iv.apply(lm)``: every forward pass the harness
makes (log-likelihoods of choices, generation) goes through the hooked neuron modules, so
XNLI, XQuAD, Belebele, XStoryCloze ... can be scored with language neurons deactivated,
boosted or steered. The harness downloads its datasets (network needed); tasks of your own
(a YAML file naming local data, ``dataset_path: json``) need none: pass their folder as
``include_path`` (:func:`choice_task_yaml` writes one from parallel items, e.g. langloc's
Bible translation-choice task).

Optional: ``pip install 'langloc[harness]'`` (lm-eval pulls datasets, pandas, scikit-learn,
sacrebleu ...).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Sequence

from langloc.artefacts import write_json, write_text
from langloc.errors import LanglocError

INSTALL = "the lm-evaluation-harness adapter needs lm-eval: pip install 'langloc[harness]'"


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise LanglocError(f"{INSTALL} ({e})") from None
    return lm_eval, HFLM, TaskManager


def harness_evaluate(lm, tasks: Sequence[str], *, intervention=None, limit: int | float | None = None,
                     num_fewshot: int | None = None, batch_size: int = 8, include_path: str | Path | None = None,
                     log_samples: bool = False, seed: int = 0) -> dict:
    """Run harness ``tasks`` on ``lm`` (a LoadedModel), with ``intervention`` applied if given.

    Returns the harness's result dictionary (``results``: task -> metric -> value, and with
    ``log_samples`` the per-document ``samples``); ``config`` is dropped (it holds the model
    object) and replaced by langloc's settings under ``langloc``.
    """
    lm_eval, HFLM, TaskManager = _lm_eval()
    tasks = [t for t in tasks if t]
    if not tasks:
        raise LanglocError("no harness task given")
    if batch_size < 1:
        raise LanglocError(f"batch size must be at least 1, got {batch_size}")
    manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise LanglocError(f"unknown harness task(s) {', '.join(unknown)}"
                           + (f" (none under {include_path})" if include_path is not None else "")
                           + "; `lm_eval ls tasks` lists them")
    # HFLM takes the model object as it is (no reload, no device move); BOS as langloc adds it,
    # so that log-likelihoods match langloc's own scoring of the same text.
    hf = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size, add_bos_token=lm.add_bos)
    applied = intervention.apply(lm) if intervention is not None else contextlib.nullcontext()
    with applied:
        res = lm_eval.simple_evaluate(model=hf, tasks=tasks, task_manager=manager, limit=limit,
                                      num_fewshot=num_fewshot, log_samples=log_samples, random_seed=seed,
                                      numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                                      bootstrap_iters=0)
    if res is None:  # only on non-zero ranks of a distributed harness run
        return {}
    res.pop("config", None)
    res["langloc"] = {"model": lm.meta, "tasks": tasks, "limit": limit, "num_fewshot": num_fewshot,
                      "intervention": intervention.to_dict() if intervention is not None else None}
    return res


def metric_rows(results: dict, condition: str = "base") -> list[dict]:
    """Flat rows ``condition, task, metric, value`` of a result dictionary (stderr and the
    document count ``sample_len`` dropped: ``results.json`` keeps them)."""
    rows = []
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            metric = key.split(",")[0]
            if metric in ("alias", "sample_len") or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            rows.append({"condition": condition, "task": task, "metric": metric, "value": float(value)})
    return rows


def choice_task_yaml(folder: str | Path, name: str, items: Sequence) -> Path:
    """Write a harness multiple-choice task ``name`` over local data: ``<folder>/<name>.jsonl``
    (one document per item: ``prompt``, ``choices``, ``label``) and ``<folder>/<name>.yaml``.

    ``items``: anything with ``prompt``, ``choices`` and ``label`` (langloc's ``TaskItem`` or
    ``TaskItem``). The choices are appended to the prompt as they are (no delimiter), as
    langloc's own :func:`langloc.tasks.scoring.score_choices` scores them.
    """
    folder = Path(folder)
    if not name.replace("_", "").isalnum():
        raise LanglocError(f"harness task names are letters, digits and _, got {name!r}")
    if not items:
        raise LanglocError(f"task {name}: no items")
    lines = []
    for it in items:
        if not it.choices:
            raise LanglocError(f"task {name}: item {getattr(it, 'id', '?')!r} has no choices")
        lines.append(json.dumps({"prompt": it.prompt, "choices": list(it.choices), "label": it.label},
                                ensure_ascii=False) + "\n")
    data = folder / f"{name}.jsonl"
    write_text(data, "".join(lines))
    yaml = folder / f"{name}.yaml"
    # JSON is valid YAML: no YAML library needed to write it.
    config = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
              "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{prompt}}",
              "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}", "target_delimiter": "",
              "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                              {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
              "metadata": {"version": 1.0, "source": "langloc"}}
    write_json(yaml, config)
    return yaml


def harness_study(lm, tasks: Sequence[str], conditions: dict, *, limit: int | float | None = None,
                  num_fewshot: int | None = None, batch_size: int = 8, include_path: str | Path | None = None,
                  seed: int = 0) -> tuple[list[dict], dict]:
    """Every harness task under every condition (name -> Intervention, a saved adapter
    (:class:`langloc.adapters.masked_lora.SavedAdapter`: anything with ``apply(lm)``,
    ``to_dict()`` and ``count()``) or None for the model as it is). Returns the rows of
    metrics.csv (condition, task, metric, value) and the harness's results per condition (with
    the intervention and its neuron count), for results.json; :mod:`langloc.studies.harness`
    writes both, with the manifest."""
    rows, results = [], {}
    for name, iv in conditions.items():
        res = harness_evaluate(lm, tasks, intervention=iv, limit=limit, num_fewshot=num_fewshot,
                               batch_size=batch_size, include_path=include_path, seed=seed)
        results[name] = {"results": res.get("results", {}), "n-samples": res.get("n-samples", {}),
                         "intervention": res.get("langloc", {}).get("intervention"),
                         "neurons": iv.count() if iv is not None else 0}
        rows += metric_rows(res, name)
    return rows, results
