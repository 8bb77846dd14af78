"""The one table of architecture facts: where a decoder layer's MLP neuron lives.

A *neuron* is one intermediate unit of a layer's MLP, read at the output of the activation
module (docs/methods.md): ``act_fn(gate_proj(x))[j]`` for gated MLPs, ``act(fc(x))[j]`` otherwise.
Paths are relative to ``model.base_model`` (the decoder body that ``collect`` runs without the
LM head). ``down`` is the projection that reads the neurons back into the residual stream
(its input dimension is the number of neurons, and its column j is neuron j's output weight).
"""

from __future__ import annotations

from dataclasses import dataclass

from langloc.errors import LanglocError


@dataclass(frozen=True)
class NeuronSite:
    """Where the neurons of every decoder layer are, relative to ``model.base_model``."""

    layers: str  # the ModuleList of decoder layers
    neuron: str  # in each layer: the activation module whose output is the neurons
    down: str  # in each layer: the output projection (W_out)
    gated: bool = False

    def spec(self) -> str:
        return f"{self.layers}:{self.neuron}:{self.down}"

    @classmethod
    def parse(cls, spec: str) -> "NeuronSite":
        parts = spec.split(":")
        if len(parts) != 3 or not all(parts):
            raise LanglocError(
                f"--neuron-site must be LAYERS:NEURON:DOWN (paths relative to model.base_model), "
                f"e.g. layers:mlp.act_fn:mlp.down_proj; got {spec!r}"
            )
        return cls(*parts)


_GATED = NeuronSite("layers", "mlp.act_fn", "mlp.down_proj", gated=True)

# model_type (config.model_type) -> neuron site. Keep sorted; add a tiny-config test per entry.
ARCHITECTURES: dict[str, NeuronSite] = {
    "bloom": NeuronSite("h", "mlp.gelu_impl", "mlp.dense_4h_to_h"),
    "gemma": _GATED,
    "gemma2": _GATED,
    "gemma3_text": _GATED,
    "gpt2": NeuronSite("h", "mlp.act", "mlp.c_proj"),
    "gpt_neox": NeuronSite("layers", "mlp.act", "mlp.dense_4h_to_h"),
    "llama": _GATED,
    "mistral": _GATED,
    "olmo2": _GATED,
    "opt": NeuronSite("decoder.layers", "activation_fn", "fc2"),
    "phi": NeuronSite("layers", "mlp.activation_fn", "mlp.fc2"),
    "phi3": NeuronSite("layers", "mlp.activation_fn", "mlp.down_proj", gated=True),
    "qwen2": _GATED,
    "qwen3": _GATED,
}


def site_for(model_type: str, override: str | NeuronSite | None = None) -> NeuronSite:
    if override is not None:
        return override if isinstance(override, NeuronSite) else NeuronSite.parse(override)
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise LanglocError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(ARCHITECTURES))}. "
            "Name the neuron module explicitly with --neuron-site LAYERS:NEURON:DOWN "
            "(paths relative to model.base_model, e.g. layers:mlp.act_fn:mlp.down_proj)"
        ) from None
