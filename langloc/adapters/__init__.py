"""Neuron-masked LoRA adapters (Mondal et al. 2025) and their trainer. Needs ``peft``
(``pip install 'langloc[adapters]'``).

The cross-lingual multiple-choice task they are tested on lives in :mod:`langloc.tasks`
(items: :class:`langloc.tasks.TaskItem`, scoring: :mod:`langloc.tasks.scoring`, Bible items:
:func:`langloc.tasks.bible_choice.bible_choice_items`, verses: :mod:`langloc.data.bible`).
"""

from langloc.adapters.masked_lora import (
    ADAPTER_MODES, AdapterSpec, AdapterTarget, adapter_spec, attention_modules, mask_leak, masked_lora, merged_delta,
    mlp_modules, remove_adapter, save_adapter, trainable_parameters, SavedAdapter,
)
from langloc.adapters.train import AdapterTrainResult, examples_from_pairs, examples_from_windows, train_adapter
from langloc.adapters.transfer import AdapterSettings, transfer_study

__all__ = [
    "ADAPTER_MODES", "AdapterSpec", "AdapterTarget", "adapter_spec", "attention_modules", "mask_leak", "masked_lora",
    "merged_delta", "mlp_modules", "remove_adapter", "save_adapter", "SavedAdapter", "trainable_parameters", "AdapterTrainResult",
    "examples_from_pairs", "examples_from_windows", "train_adapter", "transfer_study", "AdapterSettings",
]
