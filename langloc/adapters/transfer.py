"""Cross-lingual transfer of a (neuron-masked) adapter: train on one language's items,
evaluate on other languages' items, for each adapter mode and the unadapted model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from langloc.adapters.masked_lora import (
    ADAPTER_MODES as MODES, mask_leak, masked_lora, remove_adapter, save_adapter, trainable_parameters,
)
from langloc.adapters.train import train_adapter
from langloc.errors import LanglocError
from langloc.evaluate.intervals import mean_ci, share_ci
from langloc.tasks.base import TaskItem
from langloc.tasks.scoring import choice_accuracy, choice_correct, score_choices, training_pairs

# Adapter settings by name (docs/methods.md §6). "mondal" is soumenkm/LangSpecificNeurons'
# code/lora_cls_finetune.py: LoRA r 8, alpha 16 on the gate projection only (not up), AdamW
# with weight decay 0.1, lr 1e-5. Its 4-bit base model and linear classification head over the
# last hidden state are not reproduced: langloc trains the LM itself on the answer tokens.
PRESETS = {
    "langloc": {"r": 8, "alpha": 16, "gate_only": False, "weight_decay": 0.0},
    "mondal": {"r": 8, "alpha": 16, "gate_only": True, "weight_decay": 0.1},
}


def preset_settings(preset: str, *, r: int | None = None, alpha: int | None = None) -> dict:
    """The preset's adapter settings, with ``r`` / ``alpha`` overriding it where given."""
    if preset not in PRESETS:
        raise LanglocError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    out = dict(PRESETS[preset])
    if r is not None:
        out["r"] = r
    if alpha is not None:
        out["alpha"] = alpha
    return out


def _margins(items, scores) -> list[float]:
    """Per item: log-likelihood of the right choice minus that of the best wrong one (> 0: right).
    A graded version of accuracy, so that a small shift of the model shows before it flips items."""
    return [row[it.label] - max(v for j, v in enumerate(row) if j != it.label) for it, row in zip(items, scores)]


def _evaluate(model, eval_items, batch_size, progress) -> tuple[dict[str, dict], dict[str, dict]]:
    """Accuracy and mean margin per language with 95% intervals over items (Clopper-Pearson for
    the accuracy, Student-t for the margin); and the per-item values."""
    out, per_item = {}, {}
    for lang, items in eval_items.items():
        scores = score_choices(model, items, batch_size=batch_size, progress=progress)
        correct, margin = choice_correct(items, scores), _margins(items, scores)
        lo, hi = share_ci(correct)
        mlo, mhi = mean_ci(margin)
        out[lang] = {"accuracy": choice_accuracy(items, scores), "accuracy_lo": lo, "accuracy_hi": hi,
                     "acc_norm": choice_accuracy(items, scores, norm="chars"), "margin": sum(margin) / len(margin),
                     "margin_lo": mlo, "margin_hi": mhi, "n": len(items)}
        per_item[lang] = {"correct": correct, "margin": margin}
    return out, per_item


def add_gains(rows: list[dict], per_item: dict[str, dict], reference: str) -> None:
    """Add to every row of a condition other than ``reference`` its paired gain over
    ``reference`` on the same items: ``gain_<reference>`` (accuracy points, as a fraction) and
    ``margin_gain_<reference>``, each with a 95% Student-t interval over items (paired)."""
    for row in rows:
        cond, lang = row["condition"], row["lang"]
        if cond == reference or (reference, lang) not in per_item or (cond, lang) not in per_item:
            continue
        a, b = per_item[(cond, lang)], per_item[(reference, lang)]
        for key, name in (("correct", f"gain_{reference}"), ("margin", f"margin_gain_{reference}")):
            diff = [x - y for x, y in zip(a[key], b[key])]
            row[name] = sum(diff) / len(diff)
            row[f"{name}_lo"], row[f"{name}_hi"] = mean_ci(diff)


@dataclass(frozen=True)
class AdapterSettings:
    """How each adapter of :func:`transfer_study` is made and trained: LoRA rank ``r`` and
    ``alpha``; ``gate_only`` (the gate projection only, not up); ``attention`` (also plain LoRA on
    attention); ``down`` (also the MLP output projection); AdamW with ``lr`` and ``weight_decay``
    over ``epochs`` in batches of ``batch_size``; ``seed`` for the adapter's initialisation and the
    order of training (the same for every mode). ``PRESETS`` name the first four together
    (:func:`preset_settings`)."""

    r: int = 8
    alpha: int = 16
    gate_only: bool = False
    weight_decay: float = 0.0
    attention: bool = True
    down: bool = False
    lr: float = 1e-5
    epochs: int = 1
    batch_size: int = 8
    seed: int = 0


def transfer_study(
    lm,
    neurons: Sequence | None,
    *,
    train_items: Sequence[TaskItem],
    eval_items: dict[str, Sequence[TaskItem]],
    adapter: AdapterSettings = AdapterSettings(),
    modes: Sequence[str] = MODES,
    baseline: bool = True,
    eval_batch_size: int = 8,
    progress: bool = True,
    harness=None,
    save_adapters=None,
) -> list[dict]:
    """One row per (condition, evaluation language): ``condition`` is ``base`` (no adapter)
    or an adapter mode of :func:`masked_lora`; every adapter is made and trained as ``adapter``
    says, on ``train_items`` (the right answers, loss on the answer tokens), from the same seed,
    and removed again afterwards, so ``lm`` ends as it started. Rows also carry paired gains over ``base`` and
    over ``random`` (:func:`add_gains`). ``harness``: called with each condition's name while
    that condition's model is in place (e.g. to run lm-evaluation-harness tasks on it).
    ``save_adapters``: a folder; each trained adapter is saved to ``<folder>/<mode>``
    (:func:`save_adapter`), for ``langloc harness --adapter``. Under torchrun the conditions
    are shared out over the processes: each trains, saves and evaluates its own (``harness`` is
    called in the process that holds the condition) and every process gets every row."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise LanglocError(f"unknown adapter mode(s) {', '.join(unknown)}; use {', '.join(MODES)}")
    if not eval_items:
        raise LanglocError("no evaluation languages")
    from langloc import distributed

    progress = progress and distributed.is_main()

    def evaluate(condition: str, info: dict) -> tuple[list[dict], dict]:
        res, items = _evaluate(lm, eval_items, eval_batch_size, progress)
        if harness is not None:
            harness(condition)
        return [{"condition": condition, "lang": lang, **res[lang], **info} for lang in res], items

    pairs = training_pairs(train_items)

    def condition(mode: str | None) -> tuple[list[dict], dict]:
        """One condition: the unadapted model (None), or an adapter trained from the seed, evaluated
        and taken out again (so the model is as before, whatever ran on it earlier)."""
        if mode is None:
            return evaluate("base", {})
        started = time.time()
        a = adapter
        peft_model = masked_lora(lm, neurons, mode, r=a.r, alpha=a.alpha, attention=a.attention, down=a.down,
                                 gate_only=a.gate_only, seed=a.seed)
        try:
            trained = train_adapter(lm, pairs, lr=a.lr, weight_decay=a.weight_decay, epochs=a.epochs,
                                    batch_size=a.batch_size, seed=a.seed, progress=progress)
            spec = peft_model.langloc_spec
            if save_adapters is not None:
                save_adapter(peft_model, Path(save_adapters) / mode, lm.meta, started)
            info = {"lora_r": a.r, "lora_alpha": a.alpha, "gate_only": a.gate_only, "weight_decay": a.weight_decay,
                    "train_loss_first": trained.losses[0], "train_loss_last": trained.final_loss,
                    "train_steps": trained.steps, "train_seconds": round(trained.seconds, 2),
                    "trainable": trainable_parameters(peft_model),
                    "neurons": None if spec.neurons is None else sum(len(i) for i in spec.neurons),
                    "mask_leak": mask_leak(peft_model)}
            return evaluate(mode, info)
        finally:
            remove_adapter(peft_model)

    # Under torchrun the conditions are shared out over the processes (each trains its own
    # adapters) and gathered in this order.
    rows, per_item = [], {}
    for cond_rows, items in distributed.map_cells(condition, ([None] if baseline else []) + list(modes)):
        rows += cond_rows
        per_item.update({(row["condition"], row["lang"]): items[row["lang"]] for row in cond_rows})
    # Paired gains: over the unadapted model, and the set's neurons over random neurons of the same count.
    for reference in ("base", "random"):
        add_gains(rows, per_item, reference)
    return rows
