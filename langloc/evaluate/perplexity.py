"""Perplexity = exp(mean token negative log-likelihood) over packed held-out windows.

The LAPE reference code printed the mean NLL and called it perplexity; langloc reports the
true perplexity (and keeps the NLL sum and token count so that either can be derived).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# Positions per LM-head call. A large vocabulary makes the logits the biggest tensor of the
# forward pass (Gemma 3: 262,144 words, so [4, 512] windows give 1 GiB of bf16 logits and 2 GiB
# more once cast to float32). Running the body once and the head a slice at a time keeps
# memory flat; on 2 CPU cores it is also 1.7-2x faster at batch size 4 (bench/perplexity.py),
# because the allocator no longer faults in gigabytes per batch. The NLL is the same.
HEAD_CHUNK = 256


@torch.inference_mode()
def window_nll(lm, windows: torch.Tensor, batch_size: int = 2) -> torch.Tensor:
    """Sum of token NLL (nats, float64) of each window: ``[n_windows]``; each window predicts
    its ``window - 1`` last tokens."""
    out = []
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(lm.device)
        hidden = full = None
        if lm.head_is_known:
            hidden = lm.body(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
        else:  # an architecture outside the table: its own forward, whole logits
            full = lm.model(input_ids=ids, use_cache=False).logits[:, :-1]
        total = torch.zeros(len(ids), dtype=torch.float64, device=ids.device)
        for a in range(0, ids.shape[1] - 1, HEAD_CHUNK):
            logits = lm.logits(hidden[:, a:a + HEAD_CHUNK]) if full is None else full[:, a:a + HEAD_CHUNK]
            losses = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1 + a:1 + a + HEAD_CHUNK].flatten(),
                                     reduction="none")
            total += losses.view(len(ids), -1).double().sum(1)
        out.append(total.cpu())
    return torch.cat(out)


def nll(lm, windows: torch.Tensor, batch_size: int = 2) -> tuple[float, int]:
    """(sum of token NLL in nats, number of predicted tokens) of ``lm`` on ``windows``."""
    return window_nll(lm, windows, batch_size).sum().item(), windows[:, 1:].numel()


def perplexity(lm, windows: torch.Tensor, batch_size: int = 2) -> float:
    s, c = nll(lm, windows, batch_size)
    return math.exp(s / c)
