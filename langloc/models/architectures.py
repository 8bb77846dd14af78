"""The one table of architecture facts: where a decoder layer's MLP neuron lives.

A *neuron* is one intermediate unit of a layer's MLP, read at the output of the activation
module (docs/methods.md): ``act_fn(gate_proj(x))[j]`` for gated MLPs, ``act(fc(x))[j]`` otherwise.
Paths are relative to ``model.base_model`` (the decoder body that ``collect`` runs without the
LM head). ``down`` is the projection that reads the neurons back into the residual stream
(its input dimension is the number of neurons, and its column j is neuron j's output weight).

The table also holds each architecture's layout quirks, so that no other module tests for them:

* ``flat``: the MLP runs on ``[batch * positions, hidden]`` (OPT), so the neuron module's output
  is ``[batch * positions, I]`` rather than ``[batch, positions, I]``;
* ``conv1d``: the layer's projections are transformers' ``Conv1D`` (GPT-2), whose weight is
  stored ``[in, out]`` rather than ``nn.Linear``'s ``[out, in]``;
* ``writes``: the names of the matrices that *write* the residual stream (their output axis has
  the hidden size: attention output, MLP down projection); every other matrix of a layer
  *reads* it (its input axis has the hidden size: q/k/v, gate/up, fc1).

``tests/test_architectures.py`` checks every entry against a tiny model of its type.
"""

from __future__ import annotations

from dataclasses import dataclass

from langloc.errors import LanglocError


# Matrices that write the residual stream, by their last name component: attention output
# (o_proj, out_proj, GPT-2's attn.c_proj, dense of BLOOM/NeoX/Phi attention, T5-style wo) and
# MLP output (down_proj, GPT-2's mlp.c_proj, fc2, dense_4h_to_h).
WRITES = ("o_proj", "out_proj", "down_proj", "c_proj", "fc2", "dense", "dense_4h_to_h", "wo")


@dataclass(frozen=True)
class NeuronSite:
    """Where the neurons of every decoder layer are, relative to ``model.base_model``."""

    layers: str  # the ModuleList of decoder layers
    neuron: str  # in each layer: the activation module whose output is the neurons
    down: str  # in each layer: the output projection (W_out)
    gated: bool = False  # the down projection reads act(gate) * up, not the neurons themselves
    flat: bool = False  # the MLP runs on [batch * positions, hidden] (OPT)
    conv1d: bool = False  # projections are transformers' Conv1D, weight stored [in, out] (GPT-2)
    writes: tuple[str, ...] = WRITES  # names of the matrices that write the residual stream

    def writes_residual(self, name: str) -> bool:
        """Whether the matrix ``name`` (a module or ``<module>.weight`` path) writes the residual
        stream; every other matrix of a decoder layer reads it."""
        module = name[:-len(".weight")] if name.endswith(".weight") else name
        return module.rpartition(".")[2] in self.writes

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
    "gpt2": NeuronSite("h", "mlp.act", "mlp.c_proj", conv1d=True),
    "gpt_neox": NeuronSite("layers", "mlp.act", "mlp.dense_4h_to_h"),
    "llama": _GATED,
    "mistral": _GATED,
    "olmo2": _GATED,
    "opt": NeuronSite("decoder.layers", "activation_fn", "fc2", flat=True),
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
