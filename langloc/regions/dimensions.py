"""Dimension dependence: where a region concentrates in the residual stream, and what one
perturbed parameter on such a dimension does.

Every decoder matrix either *reads* the residual stream (q/k/v, gate/up, fc1: its input axis
has the hidden size) or *writes* it (attention output, down projection, fc2: its output axis
has the hidden size). An entry of a region therefore sits on one hidden dimension, and
counting a region's entries per hidden dimension over all matrices shows whether it
concentrates on a few dimensions (Zhang et al. report it does, on the dimensions of the
"massive activations" of the residual stream, Sun et al. 2024).

Which matrices write the residual stream, and which store their weight ``[in, out]`` (GPT-2's
``Conv1D``), is in the architecture table (``NeuronSite.writes``, ``NeuronSite.conv1d``); a
matrix with no axis of the hidden size is not counted.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from langloc.errors import LanglocError
from langloc.regions.params import Region, region_parameters

def hidden_size(lm) -> int:
    cfg = lm.model.config
    cfg = getattr(cfg, "text_config", cfg)
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    raise LanglocError("cannot tell the model's hidden size from its config")


def hidden_axis(lm, name: str, shape) -> int | None:
    """The axis of parameter ``name`` that indexes hidden (residual-stream) dimensions, or None."""
    in_axis, out_axis = (0, 1) if lm.site.conv1d else (1, 0)
    axis = out_axis if name.endswith(".weight") and lm.site.writes_residual(name) else in_axis
    return axis if shape[axis] == hidden_size(lm) else None


def dimension_counts(lm, region: Region) -> torch.Tensor:
    """Entries of ``region`` per hidden dimension, summed over matrices: ``[hidden]`` int64."""
    params = region_parameters(lm)
    counts = torch.zeros(hidden_size(lm), dtype=torch.long)
    for name, idx in region.items():
        shape = params[name].shape
        axis = hidden_axis(lm, name, shape)
        if axis is None or idx.numel() == 0:
            continue
        dims = idx // shape[1] if axis == 0 else idx % shape[1]
        counts += torch.bincount(dims, minlength=shape[axis])
    return counts


@torch.inference_mode()
def massive_activations(lm, windows: torch.Tensor, batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest |activation| of each hidden dimension in the residual stream (the outputs of all
    decoder layers, all positions): ``(max_abs[hidden], layer_of_max[hidden])``."""
    best = torch.zeros(hidden_size(lm))
    where = torch.zeros(hidden_size(lm), dtype=torch.long)
    for start in range(0, len(windows), batch_size):
        out = lm.body(input_ids=windows[start:start + batch_size].to(lm.device), output_hidden_states=True,
                      use_cache=False)
        per_layer = torch.stack([h.detach().abs().float().amax(dim=(0, 1)).cpu() for h in out.hidden_states[1:]])
        m, layer = per_layer.max(0)
        better = m > best
        best[better], where[better] = m[better], layer[better]
    return best, where


def entry_on_dimension(lm, name: str, dim: int, region: Region | None = None) -> int:
    """Flat index of the entry of ``name`` on hidden dimension ``dim`` to perturb: the one with
    the largest |θ| among the region's entries on that dimension if there are any, else among
    all entries on it."""
    p = dict(lm.model.named_parameters()).get(name)
    if p is None:
        raise LanglocError(f"the model has no parameter {name!r}")
    axis = hidden_axis(lm, name, p.shape)
    if axis is None:
        raise LanglocError(f"{name} has no axis of the hidden size {hidden_size(lm)}")
    if not 0 <= dim < p.shape[axis]:
        raise LanglocError(f"dimension {dim} is outside [0, {p.shape[axis]})")
    cols = p.shape[1]
    line = torch.arange(p.shape[1 - axis]) * (cols if axis == 1 else 1) + (dim if axis == 1 else dim * cols)
    if region is not None and name in region:
        inside = line[torch.isin(line, region[name])]
        if inside.numel():
            line = inside
    values = p.detach().view(-1)[line.to(p.device)].abs().float().cpu()
    return int(line[values.argmax()])


@contextlib.contextmanager
def perturbed(lm, name: str, index: int | None = None, *, dim: int | None = None, scale: float | None = None,
              value: float | None = None) -> Iterator[None]:
    """Scale (or set) one entry ``index`` (flat) of parameter ``name``, or every entry on hidden
    dimension ``dim``; restored bit for bit on exit."""
    if (scale is None) == (value is None):
        raise LanglocError("give exactly one of scale or value")
    if (index is None) == (dim is None):
        raise LanglocError("give exactly one of a flat index or a whole dimension")
    p = dict(lm.model.named_parameters()).get(name)
    if p is None:
        raise LanglocError(f"the model has no parameter {name!r}")
    if index is not None:
        if not 0 <= index < p.numel():
            raise LanglocError(f"index {index} is outside parameter {name} ({p.numel()} entries)")
        idx = torch.tensor([index])
    else:
        axis = hidden_axis(lm, name, p.shape)
        if axis is None or not 0 <= dim < p.shape[axis]:
            raise LanglocError(f"{name} has no hidden dimension {dim}")
        cols = p.shape[1]
        idx = (torch.arange(p.shape[0]) * cols + dim) if axis == 1 else (dim * cols + torch.arange(cols))
    flat = p.data.view(-1)
    idx = idx.to(flat.device)
    saved = flat[idx].clone()
    try:
        with torch.no_grad():
            flat[idx] = saved * scale if scale is not None else torch.full_like(saved, value)
        yield
    finally:
        with torch.no_grad():
            flat[idx] = saved
