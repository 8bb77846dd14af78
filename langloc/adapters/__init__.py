"""Neuron-masked LoRA adapters (Mondal et al. 2025), their trainer, and a cross-lingual
multiple-choice task from the aligned Bible. Needs ``peft`` (``pip install 'langloc[adapters]'``)."""

from langloc.adapters.bible_task import LANGUAGE_NAMES, bible_choice_items, bible_verses
from langloc.adapters.choice import ChoiceItem, choice_accuracy, score_choices, training_pairs
from langloc.adapters.masked_lora import (
    ADAPTER_MODES, AdapterSpec, AdapterTarget, adapter_spec, attention_modules, mask_leak, masked_lora, merged_delta,
    mlp_modules, remove_adapter, save_adapter, trainable_parameters,
)
from langloc.adapters.train import (
    Example, AdapterTrainResult, examples_from_pairs, examples_from_windows, token_logprobs, train_adapter,
)
from langloc.adapters.transfer import transfer_study

__all__ = [
    "LANGUAGE_NAMES", "bible_choice_items", "bible_verses", "ChoiceItem", "choice_accuracy",
    "score_choices", "training_pairs", "ADAPTER_MODES", "AdapterSpec", "AdapterTarget", "adapter_spec", "attention_modules",
    "mask_leak", "masked_lora", "merged_delta", "mlp_modules", "remove_adapter", "save_adapter",
    "trainable_parameters", "Example", "AdapterTrainResult", "examples_from_pairs", "examples_from_windows",
    "token_logprobs", "train_adapter", "transfer_study",
]
