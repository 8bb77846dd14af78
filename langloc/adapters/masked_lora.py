"""Neuron-masked LoRA (Mondal et al. 2025, docs/methods.md §6) on top of PEFT.

A LoRA adapter on a layer's MLP *input* projections (``gate_proj`` and ``up_proj`` of gated
MLPs; ``c_fc``/``fc1``/``dense_h_to_4h`` otherwise) whose update touches only the rows of
the chosen neurons, optionally one on the *output* projection (``down``) that touches only
their columns, and optionally plain LoRA on the attention projections (r = 8, alpha = 16):

* input projection  ``ΔW = (B ⊙ M_B) A · α/r``  (``M_B`` zeroes the rows of other neurons)
* output projection ``ΔW = B (A ⊙ M_A) · α/r``  (``M_A`` zeroes the columns of other neurons)

The masks are applied with :mod:`torch.nn.utils.parametrize`: the trained tensor is the
parametrisation's ``original`` and every read of ``lora_B.weight`` / ``lora_A.weight`` (the
forward pass, ``merge``, ``get_delta_weight``) returns ``original * mask``. The masked entries
are therefore exactly zero whatever the optimiser does to ``original`` (weight decay,
momentum, a non-zero initialisation), and ΔW is zero, bit for bit, outside the chosen
neurons' rows / columns.

Module names come from the architecture table (:mod:`langloc.models.architectures`): the
output projection is ``site.down``; the input projections are the other linear layers next to
it (children of its parent module) whose output size is a multiple of the MLP width (a fused
``gate_up_proj`` of width ``2 I`` masks rows ``j`` and ``I + j``); the attention projections
are every other linear layer of the decoder layer outside the MLP.

:func:`masked_lora` injects the adapter *into* ``lm.model`` (PEFT works in place): after it,
``lm.model`` runs with the adapter; ``with peft_model.disable_adapter():`` runs the base
model, and :func:`remove_adapter` takes the adapter out again.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from langloc import kinds
from langloc.artefacts import write_json
from langloc.errors import LanglocError
from langloc.controls import random_control
from langloc.identify.neuron_set import NeuronSet
from langloc.manifest import check_same_model, content, make_manifest, read_manifest, stamp

ADAPTER_MODES = ("neurons", "random", "all", "none")
ADAPTER = "default"  # the PEFT adapter name
ADAPTER_FILE = "langloc_adapter.json"  # beside PEFT's own files: the adapter's manifest
ADAPTER_KIND = kinds.ADAPTER


@dataclass
class AdapterTarget:
    """One module that carries LoRA: its name in ``lm.model`` and what it is for."""

    name: str
    layer: int
    role: str  # "in" (MLP input projection), "out" (MLP output projection) or "attn"
    # Where the neurons lie in the module's own weight layout (nn.Linear [out, in]; GPT-2's
    # Conv1D [in, out]): 0 = rows, 1 = columns; None for attention.
    neuron_dim: int | None = None
    blocks: int = 1  # output size / MLP width (2 for a fused gate_up_proj)
    neurons: list[int] | None = None  # chosen neurons (None: unmasked)


@dataclass
class AdapterSpec:
    mode: str
    r: int
    alpha: int
    attention: bool
    down: bool
    gate_only: bool
    seed: int
    num_layers: int
    intermediate_size: int
    neurons: list[list[int]] | None  # per layer, the neurons actually masked in (after "random")
    targets: list[AdapterTarget] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# -- architecture ---------------------------------------------------------------------------

def _projection(lm, module: nn.Module) -> tuple[int, int] | None:
    """(out_features, in_features) of a linear layer PEFT can wrap, else None: an nn.Linear, or
    where the architecture table says so (``site.conv1d``, GPT-2) a Conv1D, stored [in, out]."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    weight = getattr(module, "weight", None)
    if lm.site.conv1d and type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return weight.shape[1], weight.shape[0]
    return None


def _parent_path(path: str) -> str:
    return path.rpartition(".")[0]


def mlp_modules(lm, layer: int, *, gate_only: bool = False) -> tuple[dict[str, nn.Module], str, nn.Module]:
    """``({relative name: input projection}, down name, down module)`` of one decoder layer.

    Names are relative to the decoder layer (``mlp.gate_proj``, ``mlp.c_fc``, ``fc1``).
    """
    block = lm.layers[layer]
    down_path = lm.site.down
    try:
        down = block.get_submodule(down_path)
        parent_path = _parent_path(down_path)
        parent = block.get_submodule(parent_path) if parent_path else block
    except AttributeError:
        raise LanglocError(f"layer {layer} has no output projection at {down_path!r}") from None
    width = lm.intermediate_size
    inputs = {}
    for child_name, child in parent.named_children():
        shape = _projection(lm, child)
        if child is down or shape is None:
            continue
        out, _ = shape
        if out % width == 0:
            inputs[f"{parent_path}.{child_name}" if parent_path else child_name] = child
    if gate_only:
        inputs = {k: v for k, v in inputs.items() if "gate" in k.rpartition(".")[2]}
    if not inputs:
        what = "gate projection (a module named *gate*)" if gate_only else f"input projection with {width} outputs"
        raise LanglocError(
            f"cannot find the MLP {what} next to {down_path!r} in layer {layer} "
            f"({type(lm.layers[layer]).__name__}); masked LoRA needs it"
        )
    return inputs, down_path, down


def attention_modules(lm, layer: int) -> dict[str, nn.Module]:
    """Every linear layer of a decoder layer outside its MLP (the attention projections)."""
    block = lm.layers[layer]
    inputs, down_path, down = mlp_modules(lm, layer)
    mlp_path = _parent_path(down_path)
    skip = {id(m) for m in inputs.values()} | {id(down)}
    out = {}
    for name, module in block.named_modules():
        if not name or id(module) in skip or _projection(lm, module) is None:
            continue
        if mlp_path and (name == mlp_path or name.startswith(mlp_path + ".")):
            continue
        out[name] = module
    return out


# -- masks ----------------------------------------------------------------------------------

class _Mask(nn.Module):
    """A parametrisation ``weight -> weight * mask`` with a fixed 0/1 mask (a buffer)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _check_neurons(lm, neurons) -> list[torch.Tensor]:
    if len(neurons) != lm.num_layers:
        raise LanglocError(f"neurons are given for {len(neurons)} layers, but the model has {lm.num_layers}")
    out = []
    for layer, idx in enumerate(neurons):
        try:
            idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise LanglocError(f"neurons of layer {layer} must be integer indices, got {type(idx).__name__}") from None
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= lm.intermediate_size):
            raise LanglocError(
                f"neurons of layer {layer} include an index outside [0, {lm.intermediate_size}) "
                f"(min {int(idx.min())}, max {int(idx.max())}); was the neuron set made for another model?"
            )
        out.append(torch.unique(idx))  # sorted, no duplicates
    return out


def _row_mask(target: AdapterTarget, width: int, out_features: int) -> torch.Tensor:
    """[out, 1] 0/1 mask over the rows of lora_B (the output features of an input projection)."""
    mask = torch.zeros(out_features, 1)
    idx = torch.tensor(target.neurons, dtype=torch.long)
    for block in range(target.blocks):
        mask[block * width + idx] = 1.0
    return mask


def _apply_masks(peft_model, spec: AdapterSpec) -> None:
    modules = dict(peft_model.get_base_model().named_modules())
    for t in spec.targets:
        if t.neurons is None:
            continue
        lora = modules[t.name]
        if t.role == "in":
            lin = lora.lora_B[ADAPTER]
            mask = _row_mask(t, spec.intermediate_size, lin.weight.shape[0])
        else:  # "out": columns of lora_A ([r, in = I])
            lin = lora.lora_A[ADAPTER]
            mask = torch.zeros(1, lin.weight.shape[1])
            mask[0, torch.tensor(t.neurons, dtype=torch.long)] = 1.0
        mask = mask.to(device=lin.weight.device, dtype=lin.weight.dtype)
        parametrize.register_parametrization(lin, "weight", _Mask(mask))


# -- building -------------------------------------------------------------------------------

def masked_lora(
    lm,
    neurons: Sequence | NeuronSet | None = None,
    mode: str = "neurons",
    *,
    lang: str | None = None,
    r: int = 8,
    alpha: int = 16,
    attention: bool = True,
    down: bool = False,
    gate_only: bool = False,
    dropout: float = 0.0,
    seed: int = 0,
):
    """Add a (neuron-masked) LoRA adapter to ``lm.model`` in place and return the PeftModel.

    ``neurons``: per layer, the neuron indices (a list of ``num_layers`` index tensors/lists),
    or a :class:`NeuronSet` together with ``lang``. ``mode``:

    * ``"neurons"`` — LoRA on the MLP input projections, masked to the given neurons' rows;
    * ``"random"`` — the same with random neurons of the same per-layer counts, drawn from the
      seed derived from ``seed`` and the name ``lora:random`` (:mod:`langloc.controls`);
    * ``"all"`` — unmasked LoRA on the MLP input projections (every neuron); ``neurons`` unused;
    * ``"none"`` — no MLP adapter at all (only the attention LoRA); ``neurons`` unused.

    ``down=True`` also adds LoRA on the output projection, masked to the neurons' columns
    (unmasked in ``"all"`` mode). ``gate_only=True`` restricts the input projections to the
    gate projection (Mondal et al.'s setting) on gated MLPs. ``attention`` adds plain LoRA on
    every attention projection. Layers without chosen neurons get no MLP adapter. ``seed``
    fixes both the random neurons and PEFT's initialisation of ``lora_A``.

    The returned model has ``.langloc_spec`` (:class:`AdapterSpec`): the mode, the neurons and
    every target module.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise LanglocError("masked LoRA needs the package peft: pip install 'langloc[adapters]'") from None
    if mode not in ADAPTER_MODES:
        raise LanglocError(f"unknown adapter mode {mode!r}; use one of {', '.join(ADAPTER_MODES)}")
    if r < 1:
        raise LanglocError(f"LoRA rank r must be at least 1, got {r}")
    if alpha <= 0:
        raise LanglocError(f"LoRA alpha must be positive, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise LanglocError(f"LoRA dropout must be in [0, 1), got {dropout}")
    if any(hasattr(m, "lora_A") for m in lm.model.modules()):
        raise LanglocError("this model already carries a LoRA adapter; call remove_adapter() on it first")

    if isinstance(neurons, NeuronSet):
        if lang is None:
            raise LanglocError(f"pass lang= to pick a language of the neuron set ({', '.join(neurons.languages)})")
        neurons.check_model(lm)
        neurons = neurons.layers(lang)
    if mode in ("neurons", "random"):
        if neurons is None:
            raise LanglocError(f"adapter mode {mode!r} needs neurons (per layer index lists or a neuron set)")
        chosen = _check_neurons(lm, neurons)
        if mode == "random":
            chosen = random_control(chosen, lm.intermediate_size, seed, "lora:random")
    else:
        chosen = None
    if mode == "none" and not attention:
        raise LanglocError("adapter mode 'none' without attention LoRA would train nothing")

    names = {id(m): n for n, m in lm.model.named_modules()}
    spec = AdapterSpec(mode, r, alpha, attention, down, gate_only, seed, lm.num_layers, lm.intermediate_size,
                       None if chosen is None else [idx.tolist() for idx in chosen])
    width = lm.intermediate_size
    transposed = lm.site.conv1d  # weights stored [in, out]: the neurons index columns of W_in, rows of W_out
    for layer in range(lm.num_layers):
        if mode != "none" and (chosen is None or chosen[layer].numel()):
            idx = None if chosen is None else chosen[layer].tolist()
            inputs, _, down_module = mlp_modules(lm, layer, gate_only=gate_only)
            for module in inputs.values():
                out, _ = _projection(lm, module)
                blocks, rows = out // width, idx
                if gate_only and blocks > 1:
                    # A fused gate_up_proj: the gate half comes first; the up half stays as is.
                    blocks, rows = 1, list(range(width)) if idx is None else idx
                spec.targets.append(AdapterTarget(names[id(module)], layer, "in", 1 if transposed else 0, blocks, rows))
            if down:
                spec.targets.append(AdapterTarget(names[id(down_module)], layer, "out", 0 if transposed else 1, 1, idx))
        if attention:
            for module in attention_modules(lm, layer).values():
                spec.targets.append(AdapterTarget(names[id(module)], layer, "attn"))
    if not spec.targets:
        raise LanglocError("no module to adapt: every layer has an empty neuron list and attention LoRA is off")

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", task_type="CAUSAL_LM",
        target_modules=[t.name for t in spec.targets],
        fan_in_fan_out=transposed,
    )
    requires_grad = {name: p.requires_grad for name, p in lm.model.named_parameters()}
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)  # PEFT's initialisation of lora_A, without touching the caller's RNG
        # PEFT warns once per module whose layout disagrees with fan_in_fan_out and fixes it.
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(lm.model, config)
    _apply_masks(peft_model, spec)
    peft_model.langloc_spec = spec
    peft_model.langloc_requires_grad = requires_grad  # PEFT freezes the base model; restored on removal
    return peft_model


def adapter_spec(peft_model) -> AdapterSpec:
    spec = getattr(peft_model, "langloc_spec", None)
    if spec is None:
        raise LanglocError("this model was not built by langloc.adapters.masked_lora")
    return spec


# -- inspecting -----------------------------------------------------------------------------

def _lora_layers(peft_model) -> dict[str, nn.Module]:
    spec = adapter_spec(peft_model)
    modules = dict(peft_model.get_base_model().named_modules())
    return {t.name: modules[t.name] for t in spec.targets}


@torch.no_grad()
def merged_delta(peft_model) -> dict[str, torch.Tensor]:
    """ΔW of every adapted module, by its name in ``lm.model``, in the module's own weight
    layout (what ``merge`` adds to ``weight``; ``[out, in]`` for nn.Linear, ``[in, out]`` for
    GPT-2's Conv1D)."""
    return {name: layer.get_delta_weight(ADAPTER).detach().clone() for name, layer in _lora_layers(peft_model).items()}


@torch.no_grad()
def mask_leak(peft_model) -> float:
    """Largest |ΔW| outside the chosen neurons' rows/columns over all masked modules (0.0 when
    the masks hold, as they do by construction)."""
    spec = adapter_spec(peft_model)
    deltas = merged_delta(peft_model)
    worst = 0.0
    for t in spec.targets:
        if t.neurons is None:
            continue
        delta = deltas[t.name].movedim(t.neuron_dim, 0)
        keep = torch.zeros(delta.shape[0], dtype=torch.bool)
        for block in range(t.blocks if t.role == "in" else 1):
            keep[block * spec.intermediate_size + torch.tensor(t.neurons, dtype=torch.long)] = True
        if (~keep).any():
            worst = max(worst, float(delta[~keep].abs().max()))
    return worst


def trainable_parameters(peft_model) -> int:
    """Number of trainable adapter entries (masked-out entries included)."""
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


# -- saving and removing --------------------------------------------------------------------

def save_adapter(peft_model, path: str | Path, model_meta: dict | None = None, started: float | None = None) -> Path:
    """Save the adapter as an ordinary PEFT folder (the masks baked into the saved LoRA
    weights, so that ``PeftModel.from_pretrained`` reproduces ΔW) plus ``langloc_adapter.json``,
    the adapter's manifest (kind ``langloc.adapter``): its settings, the neurons it was masked
    to and ``model_meta`` (the base model's fingerprints: another model is refused);
    ``started``: when its training began."""
    spec = adapter_spec(peft_model)
    path = Path(path)
    lins = []
    for name, layer in _lora_layers(peft_model).items():
        for lin in (layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]):
            if parametrize.is_parametrized(lin, "weight"):
                lins.append((lin, lin.parametrizations.weight[0].mask))
                parametrize.remove_parametrizations(lin, "weight", leave_parametrized=True)
    try:
        # The adapter never targets the embeddings, so PEFT's "auto" check of whether the vocabulary
        # changed (a probe of the base model's config.json on disk or on the Hub, with a warning when
        # neither answers) has nothing to decide.
        peft_model.save_pretrained(str(path), save_embedding_layers=False)
    finally:
        for lin, mask in lins:  # the original now equals the masked weight: nothing is lost
            parametrize.register_parametrization(lin, "weight", _Mask(mask))
    doc = spec.to_dict()
    manifest = make_manifest(ADAPTER_KIND, model=model_meta, started=started, seeds={"adapter": spec.seed},
                             config={k: v for k, v in doc.items() if k not in ("neurons", "targets")})
    write_json(path / ADAPTER_FILE, stamp(doc, manifest))
    return path


def remove_adapter(peft_model) -> nn.Module:
    """Take the adapter out of the model (the original modules back in place, weights
    untouched, ``requires_grad`` flags as before) and return the plain Hugging Face model."""
    flags = getattr(peft_model, "langloc_requires_grad", {})
    model = peft_model.unload()
    for name, p in model.named_parameters():
        if name in flags:
            p.requires_grad_(flags[name])
    return model


class SavedAdapter:
    """A condition for :func:`langloc.evaluate.harness.harness_study`: an adapter folder written
    by :func:`save_adapter` (e.g. ``langloc transfer --save-adapters``), put into the model for
    the duration of ``apply`` and taken out again afterwards (weights untouched)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        info = self.path / ADAPTER_FILE
        if not info.is_file() or not (self.path / "adapter_config.json").is_file():
            raise LanglocError(f"{self.path} is not an adapter folder written by langloc (langloc transfer "
                               f"--save-adapters): it needs adapter_config.json and {ADAPTER_FILE}")
        self.spec = content(read_manifest(info, ADAPTER_KIND))

    def count(self) -> int:
        """Neurons the MLP adapter was masked to (0: unmasked or no MLP adapter)."""
        return sum(len(i) for i in self.spec.get("neurons") or [])

    def to_dict(self) -> dict:
        return {"adapter": str(self.path),
                **{k: v for k, v in self.spec.items() if k not in ("neurons", "targets", "model", "corpus")}}

    @contextlib.contextmanager
    def apply(self, lm):
        from peft import PeftModel

        # The shape, and the fingerprints where recorded (an adapter saved by the library without
        # the model's metadata carries only the shape): the LoRA deltas were trained on these weights.
        made_for = {"num_layers": self.spec["num_layers"], "intermediate_size": self.spec["intermediate_size"],
                    **(self.spec.get("model") or {})}
        check_same_model({"model": made_for}, lm.meta, f"adapter {self.path}")
        if any(hasattr(m, "lora_A") for m in lm.model.modules()):
            raise LanglocError("this model already carries a LoRA adapter")
        flags = {name: p.requires_grad for name, p in lm.model.named_parameters()}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            # PEFT reads transformers' deprecated is_gradient_checkpointing (as in add_adapter).
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = PeftModel.from_pretrained(lm.model, str(self.path))
        peft_model.langloc_requires_grad = flags
        peft_model.eval()
        try:
            yield peft_model
        finally:
            remove_adapter(peft_model)
