"""Interventions as data: which neurons, what to do to them, and at which positions.

An :class:`Intervention` is a list of :class:`Edit` s plus a position mode. Each edit names
neurons per layer and a rule:

=========  ==========================================  ===========================
rule       new activation                              ``values``
=========  ==========================================  ===========================
``zero``   0                                           none
``set``    ``values[j]``                               one number per neuron
``scale``  ``a * values[j]``                           one factor per neuron
``add``    ``a + values[j]``                           one number per neuron
=========  ==========================================  ===========================

Values are stored resolved (numbers, not "the 90th percentile"), so a saved intervention
is a small self-contained JSON file; ``Edit.source`` records where they came from
(e.g. ``{"value": "mean_active", "language": "fr", "strength": 2}``) for the reader.

A :class:`ResidualEdit` (rule ``residual_add``) acts on the residual stream instead of neurons:
it adds a vector to the output of chosen decoder layers (``h_l + vectors[l]``), e.g. a DiffMean
steering vector (:mod:`langloc.steer.diffmean`). It is saved, loaded and positioned like the
neuron edits.

Position modes: ``all`` positions; ``prompt`` positions only; ``generated`` positions only.
The prompt is what the first forward pass of a sequence sees (the prefill of ``generate``,
or the whole input of a plain forward call); positions are counted through the KV cache, so
with left-padded batches "prompt" means the padded prompt length. The activation at the last
prompt position predicts the first generated token and belongs to the prompt.

Edits apply in order; later edits see the result of earlier ones on shared neurons.
Hooks sit on the same neuron modules that statistics read and are removed when the context
ends: the model is then exactly as before (tested bit for bit).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from langloc import kinds
from langloc.artefacts import write_json
from langloc.errors import LanglocError
from langloc.models.hooks import neuron_hooks, residual_hooks
from langloc.manifest import check_same_model, content, load_artefact, make_manifest, stamp

KIND = kinds.INTERVENTION
RULES = ("zero", "set", "scale", "add")  # neuron rules; ResidualEdit's rule is RESIDUAL_RULE
RESIDUAL_RULE = "residual_add"
POSITIONS = ("all", "prompt", "generated")
_SUSPENDED: dict[int, int] = {}  # id(model) -> depth of :func:`unsteered` blocks around it


@contextlib.contextmanager
def unsteered(lm) -> Iterator[None]:
    """Inside this block every intervention applied to ``lm`` passes its activations through
    unchanged (and its position tracker ignores the passes): a judge scoring an output with the
    *unsteered* model gets the same numbers whether or not a steering hook is still active."""
    key = id(lm.model)
    _SUSPENDED[key] = _SUSPENDED.get(key, 0) + 1
    try:
        yield
    finally:
        _SUSPENDED[key] -= 1
        if not _SUSPENDED[key]:
            del _SUSPENDED[key]


@dataclass
class Edit:
    """One rule applied to neurons ``layers[l]`` (LongTensor per layer)."""

    rule: str
    layers: list[torch.Tensor]
    values: list[torch.Tensor] | None = None  # per layer, one float per listed neuron
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.rule not in RULES:
            raise LanglocError(f"unknown intervention rule {self.rule!r}; choose one of {', '.join(RULES)}")
        self.layers = [torch.as_tensor(i, dtype=torch.long) for i in self.layers]
        if self.rule == "zero":
            self.values = None
            return
        if self.values is None:
            raise LanglocError(f"rule {self.rule!r} needs values (one per neuron)")
        if len(self.values) != len(self.layers):
            raise LanglocError(f"values for {len(self.values)} layers but neurons for {len(self.layers)}")
        self.values = [torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in self.values]
        for layer, (idx, v) in enumerate(zip(self.layers, self.values)):
            if len(v) != len(idx):
                raise LanglocError(f"layer {layer}: {len(v)} values for {len(idx)} neurons")
            if not torch.isfinite(v).all():
                raise LanglocError(f"layer {layer}: intervention values must be finite")

    @classmethod
    def uniform(cls, rule: str, layers: Sequence[torch.Tensor], value: float = 0.0, source: dict | None = None) -> "Edit":
        """The same value (or factor) for every neuron."""
        vals = None if rule == "zero" else [torch.full((len(i),), float(value)) for i in layers]
        return cls(rule, list(layers), vals, dict(source or {"value": "constant", "constant": value}))

    def count(self) -> int:
        return sum(len(i) for i in self.layers)

    def apply_to(self, layer: int, a: torch.Tensor) -> torch.Tensor:
        """Return ``a`` ([..., I]) with this edit applied to ``layer``'s neurons (a new tensor)."""
        idx = self.layers[layer]
        if len(idx) == 0:
            return a
        idx = idx.to(a.device)
        if self.rule == "zero":
            return a.index_fill(-1, idx, 0.0)
        v = self.values[layer].to(a.device, a.dtype)
        out = a.clone()
        if self.rule == "set":
            out[..., idx] = v
        elif self.rule == "scale":
            out[..., idx] = a[..., idx] * v
        else:
            out[..., idx] = a[..., idx] + v
        return out

    def to_dict(self) -> dict:
        d = {"rule": self.rule, "source": self.source, "neurons": [i.tolist() for i in self.layers]}
        if self.values is not None:
            d["values"] = [[float(x) for x in v.tolist()] for v in self.values]
        return d


@dataclass
class ResidualEdit:
    """Add ``vectors[l]`` (``[hidden]``) to decoder layer ``l``'s output; ``None``: layer untouched."""

    vectors: list[torch.Tensor | None]
    source: dict = field(default_factory=dict)
    rule: str = RESIDUAL_RULE

    def __post_init__(self):
        if self.rule != RESIDUAL_RULE:
            raise LanglocError(f"a residual edit's rule is {RESIDUAL_RULE!r}, got {self.rule!r}")
        self.vectors = [None if v is None else torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                        for v in self.vectors]
        widths = {len(v) for v in self.vectors if v is not None}
        if len(widths) > 1:
            raise LanglocError(f"residual vectors of different widths {sorted(widths)}")
        for layer, v in enumerate(self.vectors):
            if v is not None and not torch.isfinite(v).all():
                raise LanglocError(f"layer {layer}: residual vectors must be finite")

    @classmethod
    def at(cls, num_layers: int, vectors: dict[int, torch.Tensor], source: dict | None = None) -> "ResidualEdit":
        """An edit over ``num_layers`` layers that adds ``vectors[l]`` at the listed layers."""
        bad = [l for l in vectors if not 0 <= l < num_layers]
        if bad:
            raise LanglocError(f"residual edit layers {bad} outside the model's {num_layers} layers")
        return cls([vectors.get(l) for l in range(num_layers)], dict(source or {}))

    @property
    def num_layers(self) -> int:
        return len(self.vectors)

    @property
    def steered_layers(self) -> list[int]:
        return [l for l, v in enumerate(self.vectors) if v is not None]

    @property
    def width(self) -> int | None:
        return next((len(v) for v in self.vectors if v is not None), None)

    def apply_to(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        return h + self.vectors[layer].to(h.device, h.dtype)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "source": self.source,
                "vectors": [None if v is None else [float(x) for x in v.tolist()] for v in self.vectors]}


def _edit_layers(e) -> int:
    return e.num_layers if isinstance(e, ResidualEdit) else len(e.layers)


# ``generate`` hands the KV cache to the model under a keyword that changes between transformers
# releases (``past_key_values`` up to 5.23, ``cache`` from 5.24), and older releases also pass
# ``cache_position``. Each is read where present; a Cache object under any other keyword is
# found by its type. A pass that continues a sequence whose cache cannot be found is an error:
# silently treating it as a new sequence would make ``prompt`` act as ``all`` and ``generated``
# do nothing (what happened under transformers 5.24 before this was written).
CACHE_KEYWORDS = ("cache", "past_key_values")


def _find_cache(kwargs: dict):
    for key in CACHE_KEYWORDS:
        if kwargs.get(key) is not None:
            return kwargs[key]
    from transformers import Cache

    return next((v for v in kwargs.values() if isinstance(v, Cache)), None)


def pass_start(kwargs: dict) -> int | None:
    """Absolute position of the first token of a forward pass from its keywords, or ``None``
    when the pass carries no position information (no cache: it starts at 0 unless it is a
    cache-less recomputation of a growing sequence, which :class:`_Positions` detects)."""
    cache_position = kwargs.get("cache_position")
    if cache_position is not None and cache_position.numel():
        return int(cache_position.reshape(-1)[0])
    cache = _find_cache(kwargs)
    if cache is not None:
        if not hasattr(cache, "get_seq_length"):
            raise LanglocError(f"the model was given a KV cache of type {type(cache).__name__} without "
                               "get_seq_length(); langloc cannot tell prompt from generated positions")
        return int(cache.get_seq_length())
    position_ids = kwargs.get("position_ids")
    if position_ids is not None and position_ids.numel() and int(position_ids.min()) > 0:
        # Every new sequence has a position 0 (left padding too); this pass continues one.
        raise LanglocError(
            f"a forward pass continues a sequence (its position_ids start at {int(position_ids.min())}) but "
            f"no KV cache was found among its keywords ({', '.join(sorted(kwargs))}); this transformers "
            "release passes the cache under a name langloc does not know, so the prompt/generated position "
            "modes cannot work: use positions='all' or a tested transformers version (see the README)")
    return None


class _Positions:
    """Tracks which absolute positions the current forward pass covers.

    The start of a pass comes from :func:`pass_start` (the KV cache's length). Without a cache
    a pass starts at 0; it is the prompt of a new sequence unless it repeats the previous pass's
    tokens and adds some, which is ``generate(use_cache=False)`` recomputing the sequence.
    """

    def __init__(self, prompt_length: int | None):
        self.fixed_prompt = prompt_length
        self.prompt_length = prompt_length
        self.start = 0
        self.shape: tuple[int, int] | None = None
        self._last = None  # inputs of the last cache-less pass

    def pre_hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        x = ids if ids is not None else kwargs.get("inputs_embeds")
        B, T = x.shape[0], x.shape[1]
        start = pass_start(kwargs)
        if start is None:
            start = 0
            last = self._last
            if last is not None and last.shape == x.shape and torch.equal(x, last):
                return  # the same pass, seen again by the body inside the CausalLM
            self._last = x
            recomputed = (last is not None and last.shape[0] == B and T > last.shape[1]
                          and torch.equal(x[:, :last.shape[1]], last))
            if not recomputed and self.fixed_prompt is None:
                self.prompt_length = T
        elif start == 0 and self.fixed_prompt is None:
            self.prompt_length = T  # a new sequence: its first pass is the prompt
        self.start, self.shape = start, (B, T)

    def mask(self, mode: str, device) -> torch.Tensor:
        """[T] bool: positions of the current pass that the mode selects."""
        T = self.shape[1]
        pos = torch.arange(self.start, self.start + T, device=device)
        prompt = pos < (self.prompt_length if self.prompt_length is not None else T)
        return prompt if mode == "prompt" else ~prompt


@dataclass
class Intervention:
    """Edits plus a position mode; :meth:`apply` is the context manager that hooks a model."""

    edits: list  # Edit (neurons) and ResidualEdit (residual stream), in order
    positions: str = "all"
    meta: dict = field(default_factory=dict)  # "model" (LoadedModel.meta), "description", ...

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise LanglocError(f"unknown position mode {self.positions!r}; choose one of {', '.join(POSITIONS)}")
        layers = {_edit_layers(e) for e in self.edits}
        if len(layers) > 1:
            raise LanglocError(f"edits cover different numbers of layers: {sorted(layers)}")

    @property
    def num_layers(self) -> int:
        return _edit_layers(self.edits[0]) if self.edits else 0

    @property
    def neuron_edits(self) -> list[Edit]:
        return [e for e in self.edits if isinstance(e, Edit)]

    @property
    def residual_edits(self) -> list[ResidualEdit]:
        return [e for e in self.edits if isinstance(e, ResidualEdit)]

    def count(self) -> int:
        """Number of distinct neurons touched (residual edits touch none)."""
        seen = set()
        for e in self.neuron_edits:
            for layer, idx in enumerate(e.layers):
                seen.update((layer, int(j)) for j in idx)
        return len(seen)

    @contextlib.contextmanager
    def apply(self, lm, prompt_length: int | None = None) -> Iterator["Intervention"]:
        """Hook ``lm`` (a LoadedModel) for forward passes and ``generate``; unhook on exit.

        ``prompt_length`` fixes the prompt length for the ``prompt``/``generated`` modes
        instead of taking it from the first pass of each sequence.
        """
        if self.edits and self.num_layers != lm.num_layers:
            raise LanglocError(f"the intervention covers {self.num_layers} layers, the model has {lm.num_layers}")
        if "model" in self.meta:
            check_same_model(self.meta, lm.meta, "intervention")
        from langloc.stats.counters import hidden_size

        for e in self.residual_edits:
            if e.width is not None and e.width != hidden_size(lm):
                raise LanglocError(f"residual vectors have width {e.width}, the model's residual stream {hidden_size(lm)}")
        for e in self.neuron_edits:
            for layer, idx in enumerate(e.layers):
                if len(idx) and int(idx.max()) >= lm.intermediate_size:
                    raise LanglocError(f"intervention neuron {int(idx.max())} in layer {layer} is outside "
                                       f"the model's {lm.intermediate_size} neurons")
        tracker = _Positions(prompt_length)
        handles = []
        try:
            if self.positions != "all":
                # On the CausalLM (OPT's calls its decoder directly, never its base model) and on
                # the body (called directly by statistics code); both see the same input.
                track = lambda *a: None if id(lm.model) in _SUSPENDED else tracker.pre_hook(*a)  # noqa: E731
                for m in (lm.model, lm.body):
                    handles.append(m.register_forward_pre_hook(track, with_kwargs=True))
            fns, rfns = {}, {}
            for layer in range(lm.num_layers):
                edits = [e for e in self.neuron_edits if len(e.layers[layer])]
                if edits:
                    fns[layer] = self._hook(layer, edits, tracker, id(lm.model))
                redits = [e for e in self.residual_edits if e.vectors[layer] is not None]
                if redits:
                    rfns[layer] = self._hook(layer, redits, tracker, id(lm.model))
            with neuron_hooks(lm, fns), residual_hooks(lm, rfns):
                yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, layer: int, edits: list[Edit], tracker: _Positions, model_id: int):
        mode = self.positions

        def hook(a):
            if model_id in _SUSPENDED:
                return None  # inside unsteered(lm): the layer's output as the model made it
            new = a
            for e in edits:
                new = e.apply_to(layer, new)
            if mode == "all":
                return new
            return torch.where(tracker.mask(mode, a.device)[None, :, None], new, a)

        return hook

    # -- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        manifest = make_manifest(KIND, model=self.meta.get("model"), corpus=self.meta.get("corpus"),
                                 config={k: v for k, v in self.meta.items() if k not in ("model", "corpus")})
        return stamp({"positions": self.positions, **self.meta, "edits": [e.to_dict() for e in self.edits]}, manifest)

    def save(self, path: str | Path) -> Path:
        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Intervention":
        def edit(e):
            if e["rule"] == RESIDUAL_RULE:
                return ResidualEdit([None if v is None else torch.tensor(v) for v in e["vectors"]], e.get("source", {}))
            return Edit(e["rule"], [torch.tensor(i, dtype=torch.long) for i in e["neurons"]],
                        [torch.tensor(v) for v in e["values"]] if "values" in e else None, e.get("source", {}))

        def build(d):
            if "prompting" in d:
                raise LanglocError(f"{path} records the prompting baseline (an instruction around the prompt, no "
                                   "edit of the model): it cannot be applied as an intervention")
            edits = [edit(e) for e in d["edits"]]
            meta = {k: v for k, v in content(d).items() if k not in {"positions", "edits"}}
            return cls(edits, d.get("positions", "all"), meta)

        return load_artefact(path, KIND, "intervention", build)
