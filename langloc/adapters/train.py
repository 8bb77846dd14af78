"""A small, deterministic trainer for adapters: causal-LM loss with AdamW.

Training data are :class:`Example` s: token ids plus a per-token loss mask. Build them from
fixed-length token windows (loss on every token after the first) or from (prompt, answer)
pairs (loss on the answer tokens only). The same log-probability code scores multiple-choice
answers in :mod:`langloc.adapters.choice`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from langloc.errors import LanglocError
from langloc.models.calls import logits_at


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    target: tuple[bool, ...]  # True where the token is predicted (its log-probability counts)


@dataclass
class AdapterTrainResult:
    steps: int
    examples: int
    tokens: int  # target tokens seen
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per step

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


# -- models and tokenizers ------------------------------------------------------------------

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


def examples_from_pairs(model, pairs: Iterable[tuple[str, str]], *, tokenizer=None) -> list[Example]:
    _, tok, add_bos = unwrap(model, tokenizer)
    return [encode_pair(tok, prompt, answer, add_bos) for prompt, answer in pairs]


def examples_from_windows(windows: torch.Tensor | Sequence[Sequence[int]]) -> list[Example]:
    """Windows (e.g. from :func:`langloc.data.packing.pack_windows`): loss on every token
    but the first."""
    out = []
    for w in windows:
        ids = tuple(int(i) for i in (w.tolist() if isinstance(w, torch.Tensor) else w))
        if len(ids) < 2:
            raise LanglocError("a training window needs at least 2 tokens")
        out.append(Example(ids, (False,) + (True,) * (len(ids) - 1)))
    return out


def _collate(examples: Sequence[Example], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


# -- training -------------------------------------------------------------------------------

def train_adapter(
    model,
    data: Sequence[Example] | Sequence[tuple[str, str]] | torch.Tensor,
    *,
    tokenizer=None,
    lr: float = 1e-5,
    weight_decay: float = 0.0,
    epochs: int = 1,
    batch_size: int = 8,
    max_steps: int | None = None,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> AdapterTrainResult:
    """Train the trainable parameters of ``model`` (a LoadedModel whose model carries an
    adapter, or the PeftModel itself with ``tokenizer=``) with AdamW on the causal-LM loss.

    ``data``: :class:`Example` s, (prompt, answer) string pairs (loss on the answer only), or
    windows ``[N, T]`` (loss on every token). The loss of a step is the mean over its target
    tokens. The example order is shuffled per epoch with ``seed``; the model is in training
    mode (dropout on) while training and put back into its previous mode afterwards.
    Defaults follow Mondal et al.: lr 1e-5, one epoch.
    """
    if lr <= 0:
        raise LanglocError(f"learning rate must be positive, got {lr}")
    if weight_decay < 0:
        raise LanglocError(f"weight decay must be >= 0, got {weight_decay}")
    if epochs < 1 or batch_size < 1:
        raise LanglocError(f"epochs and batch size must be at least 1, got {epochs} and {batch_size}")
    hf, tok, _ = unwrap(model, tokenizer)
    if isinstance(data, torch.Tensor):
        examples = examples_from_windows(data)
    else:
        data = list(data)
        if data and not isinstance(data[0], Example):
            examples = examples_from_pairs(model, data, tokenizer=tokenizer)
        else:
            examples = data
    if not examples:
        raise LanglocError("no training examples")
    named = [(n, p) for n, p in hf.named_parameters() if p.requires_grad]
    if not any("lora_" in n for n, _ in named):
        # A model without an adapter has every weight trainable: refuse to fine-tune it all.
        raise LanglocError("the model carries no LoRA adapter; add one with masked_lora() first")
    params = [p for _, p in named]

    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(examples) / batch_size)
    total = per_epoch * epochs if max_steps is None else min(max_steps, per_epoch * epochs)
    device = next(hf.parameters()).device
    pad = _pad_id(tok)
    was_training = hf.training
    result = AdapterTrainResult(0, 0, 0, 0.0)
    start = time.perf_counter()
    bar = tqdm(total=total, desc="train adapter", unit="step", disable=not progress)
    hf.train()
    try:
        for _ in range(epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            for b in range(0, len(order), batch_size):
                if result.steps >= total:
                    break
                batch = [examples[i] for i in order[b:b + batch_size]]
                ids, att, tgt = _collate(batch, pad, device)
                n = int(tgt.sum())
                if n == 0:
                    continue
                loss = -token_logprobs(hf, ids, att, tgt).sum() / n
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                opt.step()
                result.steps += 1
                result.examples += len(batch)
                result.tokens += n
                value = loss.item()
                result.losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}")
    finally:
        bar.close()
        hf.train(was_training)
        opt.zero_grad(set_to_none=True)
    result.seconds = time.perf_counter() - start
    return result
