"""Calls into transformers whose keywords langloc depends on, checked rather than trusted.

A keyword that a future release renames is often swallowed silently by the model's
``**kwargs``; these wrappers check that it took effect and fail loudly otherwise.
"""

from __future__ import annotations

import torch

from langloc.errors import LanglocError


def logits_at(model, keep: torch.Tensor, **inputs) -> torch.Tensor:
    """``[B, len(keep), V]`` logits of the positions ``keep`` only (``logits_to_keep``), so a
    large vocabulary costs memory for those positions alone."""
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
    if logits.shape[1] != len(keep):
        raise LanglocError(
            f"the model returned logits for {logits.shape[1]} positions where {len(keep)} were asked for: "
            "this transformers release ignores the logits_to_keep keyword; use a tested version (see the README)")
    return logits
