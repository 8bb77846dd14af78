"""Use a shared langloc export without langloc's run folders: read its DiffMean directions and
neuron sets, and steer any Hugging Face causal LM with a plain forward hook.

An export (``langloc export``, layout in docs/artefacts.md) is a folder fit to upload to a model
hub: ``langloc.json`` (what it holds, the model's fingerprint, the manifest),
``directions/<name>.safetensors`` and ``neurons/<name>.safetensors``. This module needs only
torch and safetensors besides the export::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from langloc.hub import load_direction, steering

    tok = AutoTokenizer.from_pretrained("google/gemma-3-270m")
    model = AutoModelForCausalLM.from_pretrained("google/gemma-3-270m")
    fr = load_direction("gemma-3-270m-languages", "en-fr")
    with steering(model, fr, layers=[6], alpha=4):
        ids = model.generate(**tok("The weather today", return_tensors="pt"), max_new_tokens=20)

Steering adds ``alpha * vectors[l]`` to the output of decoder layer ``l`` (0-based, the
residual stream after the layer) at every position: the same edit as langloc's own
``ResidualEdit`` with that vector. The vectors are raw DiffMean differences (mean target minus
mean source residual state), so ``alpha`` here multiplies that difference; ``langloc steer``
states its alphas in typical residual norms instead (docs/methods.md §7a): its
``diffmean(L6x0.5)`` is ``alpha = 0.5 * n_6 / |v_6|`` here, with ``n_6`` the typical norm of
the residual stream at layer 6 that its ``steer.json`` records.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from langloc import kinds
from langloc.errors import LanglocError
from langloc.manifest import read_manifest

INDEX = "langloc.json"
KIND = kinds.EXPORT
# The layout of the folder (file names, tensor names, their shapes); format_version is the
# manifest's. 1: the first.
LAYOUT_VERSION = 1


def read_index(folder: str | Path) -> dict:
    """The export's ``langloc.json``, checked (kind, manifest format, layout version)."""
    path = Path(folder) / INDEX
    if not path.is_file():
        raise LanglocError(f"{folder} is not a langloc export (no {INDEX}); make one with `langloc export`")
    doc = read_manifest(path, KIND)
    if doc.get("layout_version") != LAYOUT_VERSION:
        raise LanglocError(f"{path} has export layout {doc.get('layout_version')!r}, this langloc reads "
                           f"{LAYOUT_VERSION}: use the langloc version it names ({doc.get('langloc_version')})")
    return doc


def _tensors(folder: Path, entry: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / entry["file"]
    if not path.is_file():
        raise LanglocError(f"the export {folder} lists {entry['file']}, which is missing")
    return load_file(path)


def _pick(doc: dict, what: str, name: str | None, folder) -> tuple[str, dict]:
    entries = doc.get(what, {})
    if name is None and len(entries) == 1:
        name = next(iter(entries))
    if name not in entries:
        raise LanglocError(f"no {what[:-1].replace('_', ' ')} {name!r} in the export {folder}; "
                           f"it has: {', '.join(entries) or 'none'}")
    return name, entries[name]


@dataclass
class Direction:
    """A DiffMean direction per decoder layer: ``vectors[l]`` = mean residual state after layer
    ``l`` on ``target`` text minus that on ``source`` text."""

    vectors: torch.Tensor  # [L, H] float32
    source: str
    target: str
    model: dict = field(default_factory=dict)  # the model it was measured on (fingerprint)


def load_direction(folder: str | Path, name: str | None = None) -> Direction:
    """Direction ``name`` (e.g. ``"en-fr"``; may be omitted if the export holds one) of an export."""
    folder = Path(folder)
    doc = read_index(folder)
    name, entry = _pick(doc, "directions", name, folder)
    vectors = _tensors(folder, entry)["vectors"].float()
    return Direction(vectors, entry["source"], entry["target"], doc.get("model") or {})


def load_neurons(folder: str | Path, name: str | None = None) -> dict[str, list[torch.Tensor]]:
    """Neuron set ``name`` (e.g. ``"lape"``) of an export: per language, per layer, the sorted
    neuron indices (LongTensors), as ``NeuronSet.neurons`` holds them."""
    folder = Path(folder)
    doc = read_index(folder)
    name, entry = _pick(doc, "neuron_sets", name, folder)
    tensors = _tensors(folder, entry)
    out = {}
    for lang in entry["languages"]:
        pairs = tensors[lang]  # [n, 2]: (layer, neuron)
        out[lang] = [pairs[pairs[:, 0] == layer, 1].sort().values for layer in range(entry["num_layers"])]
    return out


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a Hugging Face causal LM: the module list with one module per
    hidden layer (``config.num_hidden_layers``), e.g. ``model.model.layers``."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    if not lists:
        raise LanglocError(f"found no list of {n} decoder layers in {type(model).__name__}; "
                           "pass the layers themselves (layers_module=...)")
    return lists[0]


@contextlib.contextmanager
def steering(model, direction: Direction, layers: Sequence[int], alpha: float = 1.0,
             layers_module: Sequence[torch.nn.Module] | None = None) -> Iterator[None]:
    """Add ``alpha * direction.vectors[l]`` to the output of decoder layer ``l`` for each of
    ``layers``, at every position, for forward passes and ``generate`` inside the block."""
    modules = layers_module if layers_module is not None else decoder_layers(model)
    L, H = direction.vectors.shape
    if len(modules) != L:
        raise LanglocError(f"the direction covers {L} layers, the model has {len(modules)}")
    bad = [l for l in layers if not 0 <= l < L]
    if bad:
        raise LanglocError(f"layers {bad} outside the model's {L} layers")

    def hook_for(vector: torch.Tensor):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            if h.shape[-1] != H:
                raise LanglocError(f"the direction has width {H}, the model's residual stream {h.shape[-1]}")
            new = h + vector.to(h.device, h.dtype)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    handles = [modules[l].register_forward_hook(hook_for(float(alpha) * direction.vectors[l])) for l in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
