"""Exact freezing of a region (``parameter name -> flat indices``) during training.

"Frozen" means *bit-identical* after any number of optimiser steps, with AdamW, weight decay
and mixed precision. Three things move an entry that one might think is frozen:

* AdamW's decoupled weight decay, ``p -= lr * wd * p``, moves every entry whether or not it
  has a gradient;
* the Adam moments: an entry whose ``exp_avg`` is not zero keeps moving after its gradient is
  zeroed, and moments that absorbed a frozen entry's gradients would move it the moment it is
  unfrozen (a leak that shows up only later);
* mixed precision: restoring from a low-precision (bf16/fp16) copy loses the low mantissa
  bits of the float32 master weight.

So around every optimiser step :class:`RegionFreezer` (1) zeroes the frozen entries'
gradients before the step, (2) after the step writes back the original values, saved once in
the parameter's own dtype (the master weights: training keeps float32 parameters and runs the
forward under ``torch.autocast``, whose low-precision casts are transient), and (3) zeroes
the frozen entries in the optimiser state. :func:`optimizer_step` does the whole sequence in
the right order with gradient clipping and a ``GradScaler``.
"""

from __future__ import annotations

import torch

from langloc.errors import LanglocError
from langloc.regions import Region, check_region

# Per-parameter optimiser state whose neutral value is 0: Adam/AdamW first and second moments
# (and the AMSGrad running maximum), SGD momentum. ``step`` is a shared scalar, not per entry.
ZEROED_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


def check_region_tensors(region: Region, what: str = "region") -> None:
    """Refuse a region whose index tensors are not 1-D integer tensors."""
    if not isinstance(region, dict):
        raise LanglocError(f"{what} must be a mapping parameter name -> flat indices, got {type(region).__name__}")
    for name, idx in region.items():
        if not isinstance(idx, torch.Tensor) or idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32):
            raise LanglocError(f"{what}: the indices of {name!r} must be a 1-D int64 tensor")


class RegionFreezer:
    """Keeps a region of ``lm.model``'s parameters at the values they have now.

    Use :meth:`mask_gradients` after ``backward()`` (before clipping, unscaling and the
    optimiser step) and :meth:`restore` after the step, or let :func:`optimizer_step` do both.
    """

    def __init__(self, lm, region: Region, what: str = "frozen region"):
        check_region_tensors(region, what)
        params = check_region(lm, region, what)
        self._entries = []  # (name, parameter, flat indices on its device, saved values)
        for name in sorted(region):
            p = params[name]
            if not p.is_contiguous():
                raise LanglocError(f"parameter {name!r} is not contiguous; cannot address its flat indices")
            idx = region[name].to(device=p.device, dtype=torch.long).unique()
            if idx.numel() == 0:
                continue
            # The copy is in the parameter's own dtype: with float32 master weights it is the
            # float32 value, so writing it back is exact (a bf16 copy would not be).
            self._entries.append((name, p, idx, p.detach().view(-1)[idx].clone()))

    @property
    def size(self) -> int:
        """Number of frozen entries."""
        return sum(int(idx.numel()) for _, _, idx, _ in self._entries)

    @property
    def names(self) -> list[str]:
        return [name for name, *_ in self._entries]

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the frozen entries' gradients. Needed (a) so that the optimiser moments never
        absorb them (they would move the entries after unfreezing), (b) so that global-norm
        clipping counts only gradients that are applied, and (c) so that an inf/NaN in a
        frozen entry does not make a ``GradScaler`` skip the step."""
        for _, p, idx, _ in self._entries:
            if p.grad is not None:
                p.grad.view(-1)[idx] = 0

    @torch.no_grad()
    def restore(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Write the saved values back and zero the frozen entries in the optimiser state.

        Restoring the values undoes weight decay (which moves entries with a zero gradient).
        Zeroing the state matters although masked gradients keep the moments at 0
        (``beta * 0 + (1 - beta) * 0 = 0``): it also covers moments accumulated before the
        freezer was attached, and state that would otherwise carry the frozen entries'
        history into a later run in which they are trainable.
        """
        for name, p, idx, saved in self._entries:
            p.view(-1)[idx] = saved
            if optimizer is None:
                continue
            for key, value in optimizer.state.get(p, {}).items():
                if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                    continue  # shared scalars such as "step"
                if key not in ZEROED_STATE:
                    raise LanglocError(
                        f"cannot freeze entries of {name!r} in optimiser state {key!r} of "
                        f"{type(optimizer).__name__}; use AdamW, Adam or SGD"
                    )
                value.view(-1)[idx] = 0

    @torch.no_grad()
    def mismatches(self) -> int:
        """Number of frozen entries whose value differs (bitwise) from the saved one."""
        bad = 0
        for _, p, idx, saved in self._entries:
            now = p.detach().view(-1)[idx]
            # Compare the bits, so that -0.0 vs 0.0 or a NaN payload also count as changes.
            same = now.view(_int_view(now.dtype)) == saved.view(_int_view(saved.dtype))
            bad += int((~same).sum())
        return bad


def _int_view(dtype: torch.dtype) -> torch.dtype:
    return {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[torch.empty((), dtype=dtype).element_size()]


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    parameters,
    *,
    freezer: RegionFreezer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_grad_norm: float | None = None,
) -> tuple[bool, float | None]:
    """One optimiser step after ``backward()``, keeping ``freezer``'s region exact.

    Order: mask frozen gradients -> unscale (GradScaler) -> clip -> step -> restore.
    Returns (whether the step was applied, the gradient norm before clipping or None); with a
    GradScaler the step is skipped when the gradients overflowed.
    """
    parameters = list(parameters)
    if freezer is not None:
        freezer.mask_gradients()  # before unscale_ and clipping: see mask_gradients
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = None
    if max_grad_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm))
    stepped = True
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale  # the scale only drops when the step was skipped
    else:
        optimizer.step()
    if freezer is not None:
        freezer.restore(optimizer)  # after the step: undo weight decay, clean the moments
    return stepped, norm
