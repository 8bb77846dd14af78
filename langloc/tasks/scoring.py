"""Scoring continuations by log-likelihood, and multiple-choice items (as lm-evaluation-harness's ``acc``).

A continuation is scored by the summed log-probability of its tokens after the prompt, prompt
and continuation tokenised separately (:func:`encode_pair`). A multiple-choice item's answer
is the choice with the largest score; ``acc_norm`` divides by the choice's length in characters.
The same code builds the training examples of :mod:`langloc.adapters.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from langloc.errors import LanglocError
from langloc.models.calls import logits_at
from langloc.tasks.base import TaskItem


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    target: tuple[bool, ...]  # True where the token is predicted (its log-probability counts)


# -- encoding and scoring -------------------------------------------------------------------

def unwrap(model, tokenizer=None):
    """``(hf_model, tokenizer, add_bos)`` from a LoadedModel, a PeftModel or a Hugging Face model.

    A PeftModel or plain model needs ``tokenizer``; the adapter (injected in place by PEFT) is
    active in the returned model unless disabled.
    """
    from langloc.models.loading import LoadedModel

    if isinstance(model, LoadedModel):
        return model.model, tokenizer or model.tokenizer, model.add_bos
    if tokenizer is None:
        raise LanglocError("pass tokenizer= with a model that is not a LoadedModel")
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    bos = getattr(tokenizer, "bos_token_id", None)
    probe = tokenizer("a")["input_ids"]
    return hf, tokenizer, bool(bos is not None and probe and probe[0] == bos)


def encode_pair(tokenizer, prompt: str, answer: str, add_bos: bool) -> Example:
    """Prompt and answer tokenised separately (as lm-evaluation-harness does), answer targeted."""
    ctx = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    cont = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if add_bos:
        ctx = [tokenizer.bos_token_id] + list(ctx)
    if not cont:
        raise LanglocError(f"the answer {answer!r} has no tokens")
    if not ctx:
        raise LanglocError("an empty prompt needs a model with a BOS token")
    return Example(tuple(ctx) + tuple(cont), (False,) * len(ctx) + (True,) * len(cont))


def collate(examples: Sequence[Example], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and target mask ``[B, T]``."""
    T = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), T), dtype=torch.long)
    tgt = torch.zeros((len(examples), T), dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        att[i, :n] = 1
        tgt[i, :n] = torch.tensor(e.target)
    tgt[:, 0] = False  # nothing predicts the first token
    return ids.to(device), att.to(device), tgt.to(device)


def token_logprobs(hf_model, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` log-probability of each target token given the tokens before it (0 where
    ``target`` is False). Only the logits of the positions that predict targets are computed
    (``logits_to_keep``), so large vocabularies cost little memory."""
    pred = target[:, 1:]  # position t-1 predicts token t
    keep = pred.any(0).nonzero().flatten()
    if keep.numel() == 0:
        return torch.zeros(input_ids.shape, device=input_ids.device)
    logits = logits_at(hf_model, keep, input_ids=input_ids, attention_mask=attention_mask)
    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, K, V]
    nxt = input_ids[:, keep + 1]  # [B, K]
    picked = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1) * pred[:, keep]
    full = torch.zeros(input_ids.shape, dtype=picked.dtype, device=input_ids.device)
    full[:, keep + 1] = picked
    return full


def pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


# -- multiple choice ------------------------------------------------------------------------

def training_pairs(items: Sequence[TaskItem]) -> list[tuple[str, str]]:
    """(prompt, right answer) pairs for :func:`langloc.adapters.train.train_adapter`."""
    return [(item.prompt, item.gold) for item in items]


@torch.no_grad()
def score_choices(model, items: Sequence[TaskItem], *, tokenizer=None, batch_size: int = 8,
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
    pad = pad_id(tok)
    was_training = hf.training
    hf.eval()
    try:
        for b in tqdm(range(0, len(seqs), batch_size), desc="score choices", unit="batch", disable=not progress):
            chunk = seqs[b:b + batch_size]
            ids, att, tgt = collate([s[2] for s in chunk], pad, device)
            sums = token_logprobs(hf, ids, att, tgt).sum(1).tolist()
            for (i, c, _), value in zip(chunk, sums):
                scores[i][c] = value
    finally:
        hf.train(was_training)
    return scores


def choice_accuracy(items: Sequence[TaskItem], scores: Sequence[Sequence[float]], *, norm: str = "sum") -> float:
    """Share of items whose right choice scores highest (ties count as wrong unless the right
    choice is the first of the tied). ``norm="chars"``: log-probability per character."""
    if norm not in ("sum", "chars"):
        raise LanglocError(f"unknown normalisation {norm!r}; use sum or chars")
    return sum(choice_correct(items, scores, norm=norm)) / len(items)


def choice_correct(items: Sequence[TaskItem], scores: Sequence[Sequence[float]], *, norm: str = "sum") -> list[int]:
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

