"""Multiple-choice tasks scored by log-likelihood (as lm-evaluation-harness's ``acc``).

An item is a prompt and candidate continuations; the model's answer is the candidate with
the largest summed log-probability of its tokens after the prompt (prompt and candidate
tokenised separately). ``acc_norm`` divides by the candidate's length in characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from langloc.adapters.train import _collate, _pad_id, encode_pair, token_logprobs, unwrap
from langloc.errors import LanglocError


@dataclass(frozen=True)
class ChoiceItem:
    prompt: str
    choices: tuple[str, ...]
    label: int  # index of the right choice
    id: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if len(self.choices) < 2:
            raise LanglocError(f"item {self.id!r} needs at least 2 choices, has {len(self.choices)}")
        if not 0 <= self.label < len(self.choices):
            raise LanglocError(f"item {self.id!r}: label {self.label} is not a choice index")

    @property
    def answer(self) -> str:
        return self.choices[self.label]


def training_pairs(items: Sequence[ChoiceItem]) -> list[tuple[str, str]]:
    """(prompt, right answer) pairs for :func:`langloc.adapters.train.train_adapter`."""
    return [(item.prompt, item.answer) for item in items]


@torch.no_grad()
def score_choices(model, items: Sequence[ChoiceItem], *, tokenizer=None, batch_size: int = 8,
                  progress: bool = True) -> list[list[float]]:
    """Summed log-probability of every choice of every item, ``[item][choice]``.

    ``model``: a LoadedModel (with its adapter, if one was added), or a PeftModel / Hugging
    Face model with ``tokenizer=``. ``batch_size`` counts sequences (item x choice); the
    model is run in eval mode and put back into its previous mode afterwards.
    """
    if batch_size < 1:
        raise LanglocError(f"batch size must be at least 1, got {batch_size}")
    hf, tok, add_bos = unwrap(model, tokenizer)
    seqs = [(i, c, encode_pair(tok, item.prompt, choice, add_bos))
            for i, item in enumerate(items) for c, choice in enumerate(item.choices)]
    # Longest first: similar lengths share a batch (less padding), and memory peaks at once.
    seqs.sort(key=lambda s: -len(s[2].input_ids))
    scores = [[0.0] * len(item.choices) for item in items]
    device = next(hf.parameters()).device
    pad = _pad_id(tok)
    was_training = hf.training
    hf.eval()
    try:
        for b in tqdm(range(0, len(seqs), batch_size), desc="score choices", unit="batch", disable=not progress):
            chunk = seqs[b:b + batch_size]
            ids, att, tgt = _collate([s[2] for s in chunk], pad, device)
            sums = token_logprobs(hf, ids, att, tgt).sum(1).tolist()
            for (i, c, _), value in zip(chunk, sums):
                scores[i][c] = value
    finally:
        hf.train(was_training)
    return scores


def choice_accuracy(items: Sequence[ChoiceItem], scores: Sequence[Sequence[float]], *, norm: str = "sum") -> float:
    """Share of items whose right choice scores highest (ties count as wrong unless the right
    choice is the first of the tied). ``norm="chars"``: log-probability per character."""
    if norm not in ("sum", "chars"):
        raise LanglocError(f"unknown normalisation {norm!r}; use sum or chars")
    return sum(choice_correct(items, scores, norm=norm)) / len(items)


def choice_correct(items: Sequence[ChoiceItem], scores: Sequence[Sequence[float]], *, norm: str = "sum") -> list[int]:
    """Per item, 1 if its right choice scores highest (as :func:`choice_accuracy` counts), else 0."""
    if norm not in ("sum", "chars"):
        raise LanglocError(f"unknown normalisation {norm!r}; use sum or chars")
    if not items:
        raise LanglocError("no items to evaluate")
    out = []
    for item, row in zip(items, scores):
        if norm == "chars":
            row = [s / max(1, len(c)) for s, c in zip(row, item.choices)]
        out.append(int(max(range(len(row)), key=row.__getitem__) == item.label))
    return out

