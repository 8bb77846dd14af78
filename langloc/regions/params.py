"""Which parameters linguistic regions live in, and regions as data.

Zhang et al. define regions *within each weight matrix of the decoder layers*: not the
embeddings, not the LM head, and (in langloc) not the 1-D norm scales or biases either, so
that "the top 1% of a matrix" always means entries of a 2-D weight. A region is a mapping
``parameter name -> flat indices`` (sorted int64) into that parameter; names are those of
``lm.model.named_parameters()`` so the same region applies to a model, a PEFT wrapper's base
model and an optimiser's parameter list alike.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from langloc.errors import LanglocError

Region = dict[str, torch.Tensor]  # parameter name -> sorted flat int64 indices


def region_parameters(lm) -> dict[str, torch.nn.Parameter]:
    """The 2-D weight matrices of the decoder layers, by their name in ``lm.model``."""
    layer_ids = {id(p) for layer in lm.layers for p in layer.parameters()}
    params = {name: p for name, p in lm.model.named_parameters() if id(p) in layer_ids and p.dim() == 2}
    if not params:
        raise LanglocError("the model's decoder layers hold no 2-D weight matrices")
    return params


def layer_of(lm) -> dict[str, int]:
    """Decoder layer index of each region parameter."""
    where = {id(p): i for i, layer in enumerate(lm.layers) for p in layer.parameters()}
    return {name: where[id(p)] for name, p in region_parameters(lm).items()}


def region_size(region: Region) -> int:
    return sum(int(idx.numel()) for idx in region.values())


def check_region(lm, region: Region, what: str = "region") -> dict[str, torch.nn.Parameter]:
    """The parameters a region names; refuse unknown names or out-of-range indices."""
    params = dict(lm.model.named_parameters())
    for name, idx in region.items():
        if name not in params:
            raise LanglocError(f"{what} names a parameter {name!r} that this model does not have")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= params[name].numel()):
            raise LanglocError(f"{what} has an index outside parameter {name!r} ({params[name].numel()} entries)")
    return {name: params[name] for name in region}


@contextlib.contextmanager
def zeroed(lm, region: Region) -> Iterator[None]:
    """Zero a region's entries in place; the original values are restored on exit, bit for bit."""
    params = check_region(lm, region)
    saved = {}
    try:
        with torch.no_grad():
            for name, idx in region.items():
                flat = params[name].view(-1)
                i = idx.to(flat.device)
                saved[name] = (i, flat[i].clone())
                flat[i] = 0
        yield
    finally:
        with torch.no_grad():
            for name, (i, values) in saved.items():
                params[name].view(-1)[i] = values
