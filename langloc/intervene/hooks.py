"""Apply a neuron set to a model: zero (deactivate) or force neurons, with forward hooks.

Hooks sit on the same neuron modules that statistics read (the MLP activation), so "zero
neuron j" means its activation is 0 at every position and its output column contributes
nothing. Leaving the context removes the hooks: the model is exactly as before.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch


@contextlib.contextmanager
def set_neurons(lm, layers: Sequence[torch.Tensor], value: float | Sequence[torch.Tensor] = 0.0) -> Iterator[None]:
    """Set the activation of ``layers[l]``'s neurons to ``value`` at every position.

    ``value`` is one number, or per layer a tensor with one value per listed neuron.
    """
    if len(layers) != lm.num_layers:
        raise ValueError(f"got neuron indices for {len(layers)} layers, the model has {lm.num_layers}")
    handles = []
    try:
        for layer, (module, idx) in enumerate(zip(lm.neuron_modules, layers)):
            if len(idx) == 0:
                continue
            v = value if isinstance(value, (int, float)) else value[layer]

            def hook(module, args, output, idx=idx, v=v):
                idx_d = idx.to(output.device)
                if isinstance(v, (int, float)):
                    return output.index_fill(-1, idx_d, v)
                out = output.clone()
                out[..., idx_d] = v.to(output.device, output.dtype)
                return out

            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def deactivate(lm, layers: Sequence[torch.Tensor]):
    """Context manager: zero the given neurons at every position (the LAPE ablation)."""
    return set_neurons(lm, layers, 0.0)
