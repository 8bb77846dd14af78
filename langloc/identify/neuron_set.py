"""NeuronSet: for each language, for each layer, the indices of its neurons, with metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from langloc import kinds
from langloc.artefacts import write_json
from langloc.errors import LanglocError
from langloc.manifest import check_same_model, content, load_artefact, make_manifest, stamp

KIND = kinds.NEURON_SET


@dataclass
class NeuronSet:
    neurons: dict[str, list[torch.Tensor]]  # lang -> [L] sorted LongTensors
    num_layers: int
    intermediate_size: int
    method: str = "lape"
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # at least "model" (see LoadedModel.meta)

    def __post_init__(self):
        for lang, layers in self.neurons.items():
            if len(layers) != self.num_layers:
                raise LanglocError(f"neuron set for {lang!r} has {len(layers)} layers, expected {self.num_layers}")
            for idx in layers:
                if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.intermediate_size):
                    raise LanglocError(f"neuron set for {lang!r} has an index outside [0, {self.intermediate_size})")

    @property
    def languages(self) -> list[str]:
        return list(self.neurons)

    def layers(self, lang: str) -> list[torch.Tensor]:
        try:
            return self.neurons[lang]
        except KeyError:
            raise LanglocError(f"no neurons for language {lang!r} in this set ({', '.join(self.languages)})") from None

    def count(self, lang: str) -> int:
        return sum(len(i) for i in self.layers(lang))

    def per_layer_counts(self) -> torch.Tensor:
        """[K, L] number of neurons per language and layer."""
        return torch.tensor([[len(i) for i in self.neurons[lang]] for lang in self.languages])

    def mask(self, lang: str) -> torch.Tensor:
        """[L, I] bool mask of ``lang``'s neurons."""
        m = torch.zeros(self.num_layers, self.intermediate_size, dtype=torch.bool)
        for layer, idx in enumerate(self.layers(lang)):
            m[layer, idx] = True
        return m

    def overlap(self) -> torch.Tensor:
        """[K, K] number of neurons shared by two languages' sets (diagonal: set sizes)."""
        masks = torch.stack([self.mask(lang).flatten() for lang in self.languages]).double()
        return (masks @ masks.T).long()

    def unique_count(self) -> int:
        return int(torch.stack([self.mask(lang) for lang in self.languages]).any(0).sum())

    def random_like(self, lang: str, seed: int = 0, draw: int = 0, condition: str | None = None) -> list[torch.Tensor]:
        """Random neurons with the same count per layer as ``lang``'s set: the control named
        ``condition`` (default ``random:<lang>``, as in ``ablation.csv``), draw ``draw``, of the
        run seed ``seed`` (:func:`langloc.controls.random_control`)."""
        from langloc.controls import random_control

        return random_control(self.layers(lang), self.intermediate_size, seed, condition or f"random:{lang}", draw)

    def check_model(self, lm) -> None:
        check_same_model(self.meta, lm.meta, f"neuron set ({self.method})")

    # -- files ---------------------------------------------------------------------------
    def to_dict(self, started: float | None = None) -> dict:
        manifest = make_manifest(KIND, model=self.meta.get("model"), corpus=self.meta.get("corpus"), split="stats",
                                 config={"method": self.method, "params": self.params}, started=started)
        return stamp({
            "method": self.method,
            "params": self.params,
            "num_layers": self.num_layers,
            "intermediate_size": self.intermediate_size,
            **self.meta,
            "languages": self.languages,
            "counts": {lang: self.count(lang) for lang in self.languages},
            "neurons": {lang: [idx.tolist() for idx in layers] for lang, layers in self.neurons.items()},
        }, manifest)

    def save(self, path: str | Path, started: float | None = None) -> Path:
        """Write the set as JSON with its manifest; ``started``: when making it began (time.time())."""
        write_json(path, self.to_dict(started))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "NeuronSet":
        def build(d):
            neurons = {lang: [torch.tensor(i, dtype=torch.long) for i in layers] for lang, layers in d["neurons"].items()}
            meta = {k: v for k, v in content(d).items() if k not in
                    {"method", "params", "num_layers", "intermediate_size", "languages", "counts", "neurons"}}
            return cls(neurons, d["num_layers"], d["intermediate_size"], d["method"], d.get("params", {}), meta)

        return load_artefact(path, KIND, "neuron set", build)
