"""Neuron activations at the last prompt token (and optionally reduced over all tokens),
the coefficients that multiply the output weights there, and gradients of the gold token.

Forward hooks on ``lm.neuron_modules`` (the neuron: the MLP activation's output, as every
langloc statistic) and forward pre-hooks on ``lm.down_modules`` (their input is what
multiplies ``W_out``: the activation itself for plain MLPs, activation x up for gated ones).
Each hook keeps only a ``[batch, I]`` vector per layer: the last prompt token's values, or
for ``position="all"`` the maximum (``reduce="any"``, the default, or its synonym ``"max"``:
some token's activation exceeds a threshold exactly when the maximum does, so a neuron counts
as activated if it is on *any* token, as in the Sharing-Matters code) or the mean
(``reduce="mean"``) over the prompt's tokens, the BOS position excluded. Full activation
tensors are never kept.

The gold token (the attribution target) is, by default (``gold_tokens="joint"``, the
reference code's), the token at the prompt's length in the *joint* tokenisation of prompt +
gold continuation; ``gold_tokens="separate"`` takes the first token of the continuation
tokenised on its own (as choice scoring and lm-evaluation-harness do). They differ when a
token straddles the boundary.

With ``gradients=True`` a zero float32 leaf is added to the last-token activation of every
layer, so ``d log p(gold | prompt) / d m`` comes out per neuron, through all later layers
(gradient x activation). Hooks registered earlier (an active
:class:`~langloc.intervene.Intervention`) run first, so the capture sees their result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from langloc.errors import LanglocError
from langloc.models.calls import logits_at
from langloc.models.hooks import neuron_hooks

POSITIONS = ("last", "all")
REDUCTIONS = ("any", "max", "mean")  # any = max: activated on some token
GOLD_TOKENS = ("joint", "separate")


@dataclass
class Capture:
    """``[B, L, I]`` float32 tensors for a batch of B prompts."""

    stat: torch.Tensor  # what categories are computed from: = last, or the mean/max over tokens
    last: torch.Tensor  # neuron activation at the last prompt token
    coef: torch.Tensor  # input of the output projection at the last prompt token
    grad: torch.Tensor | None  # d log p(gold first token) / d last
    gold: torch.Tensor  # [B] first token of each gold continuation
    logp: torch.Tensor | None  # [B] log p(gold first token | prompt)


def check_position(position: str, reduce: str = "any") -> None:
    if position not in POSITIONS:
        raise LanglocError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")
    if reduce not in REDUCTIONS:
        raise LanglocError(f"unknown reduction {reduce!r}; use one of {', '.join(REDUCTIONS)}")


def check_gold_tokens(gold_tokens: str) -> None:
    if gold_tokens not in GOLD_TOKENS:
        raise LanglocError(f"unknown gold-token rule {gold_tokens!r}; use one of {', '.join(GOLD_TOKENS)}")


def encode_prompts(lm, prompts: Sequence[str], golds: Sequence[str], gold_tokens: str = "joint"
                   ) -> tuple[list[list[int]], list[int]]:
    """Prompt token ids (with BOS where the model adds one) and each item's gold token: with
    ``"joint"`` the token at the prompt's length in the tokenisation of prompt + continuation
    (the reference code's rule), with ``"separate"`` the first token of the continuation
    tokenised on its own (as choice scoring does)."""
    from langloc.tasks.scoring import encode_pair

    check_gold_tokens(gold_tokens)
    ctx, gold = [], []
    for p, g in zip(prompts, golds):
        ex = encode_pair(lm.tokenizer, p, g, lm.add_bos)
        n = ex.target.index(True)
        ctx.append(list(ex.input_ids[:n]))
        if gold_tokens == "separate":
            gold.append(ex.input_ids[n])
            continue
        joint = lm.tokenizer(p + g, add_special_tokens=False)["input_ids"]
        at = n - (1 if lm.add_bos else 0)
        # A continuation swallowed into the prompt's last token leaves nothing at that index:
        # fall back to the separate rule (the reference code would fail there).
        gold.append(joint[at] if at < len(joint) else ex.input_ids[n])
    return ctx, gold


def capture(lm, prompts: Sequence[str], golds: Sequence[str], *, position: str = "last", reduce: str = "any",
            gradients: bool = True, gold_tokens: str = "joint") -> Capture:
    """Run ``lm`` on the prompts (one right-padded batch) and capture per neuron (see module doc)."""
    from langloc.tasks.scoring import pad_id

    check_position(position, reduce)
    if len(prompts) != len(golds) or not prompts:
        raise LanglocError("capture needs one gold continuation per prompt, and at least one prompt")
    ctx, gold = encode_prompts(lm, prompts, golds, gold_tokens)
    B, T = len(ctx), max(len(c) for c in ctx)
    dev = lm.device
    ids = torch.full((B, T), pad_id(lm.tokenizer), dtype=torch.long)
    att = torch.zeros((B, T), dtype=torch.long)
    for i, c in enumerate(ctx):
        ids[i, :len(c)] = torch.tensor(c)
        att[i, :len(c)] = 1
    ids, att = ids.to(dev), att.to(dev)
    last = torch.tensor([len(c) - 1 for c in ctx], device=dev)
    rows = torch.arange(B, device=dev)
    pos = torch.arange(T, device=dev)
    first = 1 if lm.add_bos else 0  # the BOS position is the same in every language: not counted
    valid = (pos[None, :] >= first) & (pos[None, :] <= last[:, None])
    valid[rows, last] = True  # a prompt that is only BOS still has its last token
    count = valid.sum(1, keepdim=True).to(torch.float32)
    L = lm.num_layers
    stat, lastv, coef, leaves = [None] * L, [None] * L, [None] * L, [None] * L

    def neuron_hook(layer):
        def hook(a):
            r, t, v = rows.to(a.device), last.to(a.device), valid.to(a.device)[..., None]  # device_map="auto"
            m = a[r, t]
            lastv[layer] = m.detach().float().cpu()
            if position == "all":
                if reduce == "mean":
                    stat[layer] = ((a.detach() * v).sum(1, dtype=torch.float32) / count.to(a.device)).cpu()
                else:
                    stat[layer] = a.detach().float().masked_fill(~v, float("-inf")).amax(1).cpu()
            if not gradients:
                return None
            # A zero added at the last position: its gradient is the activation's, and (unlike a
            # detached copy) it keeps the path from earlier layers through this one intact.
            leaf = torch.zeros(m.shape, dtype=torch.promote_types(m.dtype, torch.float32), device=m.device,
                               requires_grad=True)
            leaves[layer] = leaf
            return a.index_put((r, t), leaf.to(a.dtype), accumulate=True)

        return hook

    def down_hook(layer):
        def pre(x):
            coef[layer] = x[rows.to(x.device), last.to(x.device)].detach().float().cpu()

        return pre

    with neuron_hooks(lm, {layer: neuron_hook(layer) for layer in range(L)}), \
            neuron_hooks(lm, {layer: down_hook(layer) for layer in range(L)}, at="down"):
        gold_t = torch.tensor(gold, device=dev)
        grad = logp = None
        if gradients:
            keep = torch.unique(last)  # sorted
            with torch.enable_grad():
                logits = logits_at(lm.model, keep, input_ids=ids, attention_mask=att)
                j = torch.searchsorted(keep, last)
                lg = logits[rows, j]
                logp = torch.log_softmax(lg.to(torch.promote_types(lg.dtype, torch.float32)), dim=-1)[rows, gold_t]
                grads = torch.autograd.grad(logp.sum(), leaves, allow_unused=True)
            grad = torch.stack([(g if g is not None else torch.zeros_like(leaf)).float().cpu() for g, leaf in zip(grads, leaves)], 1)
            logp = logp.detach().double()
        else:
            with torch.inference_mode():
                lm.body(input_ids=ids, attention_mask=att, use_cache=False)
    lastt = torch.stack(lastv, 1)
    return Capture(stat=torch.stack(stat, 1) if position == "all" else lastt, last=lastt,
                   coef=torch.stack(coef, 1), grad=grad, gold=gold_t.cpu(),
                   logp=None if logp is None else logp.cpu())
