"""Cross-lingual transfer of a (neuron-masked) adapter: train on one language's items,
evaluate on other languages' items, for each adapter mode and the unadapted model."""

from __future__ import annotations

from typing import Sequence

from langloc.adapters.masked_lora import ADAPTER_MODES as MODES, mask_leak, masked_lora, remove_adapter, trainable_parameters
from langloc.adapters.train import train_adapter
from langloc.controls import derive_seed
from langloc.errors import LanglocError
from langloc.evaluate.bootstrap import mean_ci
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


def _evaluate(model, eval_items, batch_size, progress, seed: int = 0) -> dict[str, dict]:
    """Accuracy per language with its 95% bootstrap interval over items (the same item
    resamples for every condition of a language)."""
    out = {}
    for lang, items in eval_items.items():
        scores = score_choices(model, items, batch_size=batch_size, progress=progress)
        lo, hi = mean_ci(choice_correct(items, scores), seed=derive_seed(seed, f"bootstrap:{lang}"))
        out[lang] = {"accuracy": choice_accuracy(items, scores), "accuracy_lo": lo, "accuracy_hi": hi,
                     "acc_norm": choice_accuracy(items, scores, norm="chars"), "n": len(items)}
    return out


def transfer_study(
    lm,
    neurons: Sequence | None,
    *,
    train_items: Sequence[TaskItem],
    eval_items: dict[str, Sequence[TaskItem]],
    modes: Sequence[str] = MODES,
    baseline: bool = True,
    r: int = 8,
    alpha: int = 16,
    attention: bool = True,
    down: bool = False,
    gate_only: bool = False,
    lr: float = 1e-5,
    weight_decay: float = 0.0,
    epochs: int = 1,
    batch_size: int = 8,
    eval_batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """One row per (condition, evaluation language): ``condition`` is ``base`` (no adapter)
    or an adapter mode of :func:`masked_lora`; every adapter is trained on ``train_items``
    (the right answers, loss on the answer tokens) from the same seed and removed again
    afterwards, so ``lm`` ends as it started."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise LanglocError(f"unknown adapter mode(s) {', '.join(unknown)}; use {', '.join(MODES)}")
    if not eval_items:
        raise LanglocError("no evaluation languages")
    rows = []
    if baseline:
        for lang, res in _evaluate(lm, eval_items, eval_batch_size, progress, seed).items():
            rows.append({"condition": "base", "lang": lang, **res})
    pairs = training_pairs(train_items)
    for mode in modes:
        peft_model = masked_lora(lm, neurons, mode, r=r, alpha=alpha, attention=attention, down=down,
                                 gate_only=gate_only, seed=seed)
        try:
            trained = train_adapter(lm, pairs, lr=lr, weight_decay=weight_decay, epochs=epochs,
                                    batch_size=batch_size, seed=seed, progress=progress)
            spec = peft_model.langloc_spec
            info = {"lora_r": r, "lora_alpha": alpha, "gate_only": gate_only, "weight_decay": weight_decay,
                    "train_loss_first": trained.losses[0], "train_loss_last": trained.final_loss,
                    "train_steps": trained.steps, "train_seconds": round(trained.seconds, 2),
                    "trainable": trainable_parameters(peft_model),
                    "neurons": None if spec.neurons is None else sum(len(i) for i in spec.neurons),
                    "mask_leak": mask_leak(peft_model)}
            for lang, res in _evaluate(lm, eval_items, eval_batch_size, progress, seed).items():
                rows.append({"condition": mode, "lang": lang, **res, **info})
        finally:
            remove_adapter(peft_model)
    return rows
