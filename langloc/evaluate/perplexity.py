"""Perplexity = exp(mean token negative log-likelihood) over packed held-out windows.

The LAPE reference code printed the mean NLL and called it perplexity; langloc reports the
true perplexity (and keeps the NLL sum and token count so that either can be derived).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.inference_mode()
def window_nll(lm, windows: torch.Tensor, batch_size: int = 2) -> torch.Tensor:
    """Sum of token NLL (nats, float64) of each window: ``[n_windows]``; each window predicts
    its ``window - 1`` last tokens."""
    out = []
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(lm.device)
        logits = lm.model(input_ids=ids, use_cache=False).logits
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
        out.append(losses.view(ids.shape[0], -1).double().sum(1).cpu())
        del logits, losses
    return torch.cat(out)


def nll(lm, windows: torch.Tensor, batch_size: int = 2) -> tuple[float, int]:
    """(sum of token NLL in nats, number of predicted tokens) of ``lm`` on ``windows``."""
    return window_nll(lm, windows, batch_size).sum().item(), windows[:, 1:].numel()


def perplexity(lm, windows: torch.Tensor, batch_size: int = 2) -> float:
    s, c = nll(lm, windows, batch_size)
    return math.exp(s / c)
