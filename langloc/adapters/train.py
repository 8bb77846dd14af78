"""A small, deterministic trainer for adapters: causal-LM loss with AdamW.

Training data are :class:`Example` s: token ids plus a per-token loss mask. Build them from
fixed-length token windows (loss on every token after the first) or from (prompt, answer)
pairs (loss on the answer tokens only), encoded as :mod:`langloc.tasks.scoring` encodes
continuations to score them.
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
from langloc.tasks.scoring import Example, collate, encode_pair, pad_id, token_logprobs, unwrap


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
    pad = pad_id(tok)
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
                ids, att, tgt = collate(batch, pad, device)
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
