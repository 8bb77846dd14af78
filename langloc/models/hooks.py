"""The one place where hooks on a model's neurons are registered.

:func:`neuron_hooks` calls a function per layer on every forward pass with the layer's
neurons as ``[batch, positions, I]``, whatever the architecture's layout (OPT's flattened MLP,
marked ``flat`` in the architecture table, is viewed back into that shape), and lets the
function replace them. Counters, quantile sketches, segment responses, interventions and the
share capture all hook through it.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

import torch

from langloc.errors import LanglocError

NeuronFn = Callable[[torch.Tensor], "torch.Tensor | None"]


class _PassShape:
    """The ``(batch, positions)`` of the current forward pass, read from its inputs."""

    def __init__(self):
        self.shape: tuple[int, int] | None = None

    def pre_hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        x = ids if ids is not None else kwargs.get("inputs_embeds")
        self.shape = (x.shape[0], x.shape[1])


@contextlib.contextmanager
def neuron_hooks(lm, fns: Mapping[int, NeuronFn], *, at: str = "neuron") -> Iterator[None]:
    """Context manager: hook layer ``l`` with ``fns[l]`` for every ``l`` in ``fns``.

    ``at="neuron"``: ``fn(a)`` gets the output of the neuron module (the neurons), ``[B, T, I]``;
    a tensor it returns (same shape) replaces the output. ``at="down"``: ``fn(x)`` gets the input
    of the down projection (the neurons, or ``act(gate) * up`` for gated MLPs), ``[B, T, I]``;
    its return value is ignored.
    """
    if at not in ("neuron", "down"):
        raise ValueError(f"at must be 'neuron' or 'down', got {at!r}")
    flat = lm.site.flat
    shape = _PassShape()
    modules = lm.neuron_modules if at == "neuron" else lm.down_modules

    def tokens(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return x
        if not flat:
            raise LanglocError(f"the {at} module of {lm.meta.get('model_type')!r} gives [tokens, I], but the "
                               "architecture table does not mark its MLP as flat")
        return x.view(*shape.shape, -1)

    def forward_hook(fn):
        def hook(module, args, output):
            new = fn(tokens(output))
            return None if new is None else new.view_as(output)

        return hook

    def pre_hook(fn):
        def hook(module, args):
            fn(tokens(args[0]))

        return hook

    handles = []
    try:
        if flat:
            # On the CausalLM (OPT's calls its decoder directly, never its base model) and on the
            # body (called directly by statistics code); both see the same input.
            for m in (lm.model, lm.body):
                handles.append(m.register_forward_pre_hook(shape.pre_hook, with_kwargs=True))
        for layer, fn in fns.items():
            if at == "neuron":
                handles.append(modules[layer].register_forward_hook(forward_hook(fn)))
            else:
                handles.append(modules[layer].register_forward_pre_hook(pre_hook(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


ResidualFn = Callable[[torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def residual_hooks(lm, fns: Mapping[int, ResidualFn]) -> Iterator[None]:
    """Context manager: hook decoder layer ``l``'s output (the residual stream after the layer,
    ``[B, T, hidden]``) with ``fns[l]``; a tensor it returns replaces the output.

    Decoder layers return the hidden states alone or as the first item of a tuple, depending
    on the architecture and the transformers release; both are handled.
    """

    def forward_hook(fn):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            new = fn(h)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    handles = []
    try:
        for layer, fn in fns.items():
            handles.append(lm.layers[layer].register_forward_hook(forward_hook(fn)))
        yield
    finally:
        for h in handles:
            h.remove()
