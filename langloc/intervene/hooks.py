"""Shortcuts over :class:`~langloc.intervene.intervention.Intervention` for the two common cases."""

from __future__ import annotations

from typing import Sequence

import torch

from langloc.intervene.intervention import Edit, Intervention


def set_neurons(lm, layers: Sequence[torch.Tensor], value: float | Sequence[torch.Tensor] = 0.0):
    """Context manager: set ``layers[l]``'s neurons to ``value`` at every position.

    ``value`` is one number, or per layer a tensor with one value per listed neuron.
    """
    if len(layers) != lm.num_layers:
        raise ValueError(f"got neuron indices for {len(layers)} layers, the model has {lm.num_layers}")
    if isinstance(value, (int, float)):
        edit = Edit.uniform("zero" if value == 0 else "set", layers, value)
    else:
        edit = Edit("set", list(layers), list(value))
    return Intervention([edit]).apply(lm)


def deactivate(lm, layers: Sequence[torch.Tensor]):
    """Context manager: zero the given neurons at every position (the LAPE ablation)."""
    return set_neurons(lm, layers, 0.0)
