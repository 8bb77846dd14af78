"""The identification methods, registered here: name -> how it finds a neuron set in a run
folder, with its own settings.

A method is a frozen dataclass whose fields are its settings (each with its default and its
help line, :func:`setting`) and whose ``find(stats, run)`` returns the neuron set, registered
with :func:`method`. Everything else reads the table :data:`METHODS`:
:func:`langloc.workflows.identify_run` (the settings and their defaults), the CLI's
``identify`` (one option per setting, its default and help), ``validate``'s stability check
and its options (the methods that work on the activation counters alone, ``counters=True``).
Adding a method is one class here and its test (docs/studies.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from langloc.errors import LanglocError
from langloc.identify.neuron_set import NeuronSet


@dataclass(frozen=True)
class Method:
    find: Callable[..., NeuronSet]  # (stats, run folder, **settings) -> NeuronSet
    about: str  # one line for the CLI's help
    Settings: type  # the dataclass of its settings: fields with defaults and help (metadata["help"])
    counters: bool  # works on the activation counters alone (no run folder): validate's stability check

    @property
    def settings(self) -> tuple[str, ...]:
        """The names of its settings."""
        return tuple(f.name for f in dataclasses.fields(self.Settings))


METHODS: dict[str, Method] = {}


def setting(default, help: str, flag: str | None = None):
    """A method's setting: its default and its help line; ``flag``: its option of ``langloc
    identify`` where not ``--<name>`` (validate's options are always ``--<name>``)."""
    return field(default=default, metadata={"help": help, **({"flag": flag} if flag else {})})


def method(name: str, about: str, *, counters: bool = True):
    """Register the settings dataclass below as identification method ``name``; its ``find(self,
    stats, run)`` finds the set (``run``: the run folder, None for a method with ``counters``).
    A setting's name is an option of ``langloc identify``: no two methods may share one."""

    def register(cls):
        taken = {n: m for m, entry in METHODS.items() for n in entry.settings}
        for f in dataclasses.fields(cls):
            if f.name in taken or f.name in ("method", "output", "run"):
                raise LanglocError(f"identification method {name}: setting {f.name!r} is taken "
                                   f"({taken.get(f.name, 'identify')})")
            if f.default is dataclasses.MISSING or "help" not in f.metadata:
                raise LanglocError(f"identification method {name}: setting {f.name!r} needs a default and a help")

        def find(stats, run, **settings) -> NeuronSet:
            own = {n: v for n, v in settings.items() if n in {f.name for f in dataclasses.fields(cls)}}
            return cls(**own).find(stats, run)

        METHODS[name] = Method(find, about, cls, counters)
        return cls

    return register


def defaults() -> dict:
    """Every method's settings with their defaults (identify's defaults, for the commands that
    re-identify with a method other than the one a set was made with)."""
    return {n: f.default for m in METHODS.values() for n, f in
            ((f.name, f) for f in dataclasses.fields(m.Settings))}


@method("lape", "Tang et al. 2024")
@dataclass(frozen=True)
class Lape:
    top_rate: float = setting(0.01, "lape: share of all L*I neurons kept (lowest entropy).")
    filter_rate: float = setting(0.95, "lape: exclude neurons whose largest activation probability is not above "
                                       "this quantile of all probabilities.")
    activation_bar_ratio: float = setting(0.95, "lape: assign a kept neuron to every language whose probability is "
                                                "above this quantile.")

    def find(self, stats, run: Optional[Path]) -> NeuronSet:
        from langloc.identify.lape import lape_from_stats

        return lape_from_stats(stats, top_rate=self.top_rate, filter_rate=self.filter_rate,
                               activation_bar_ratio=self.activation_bar_ratio)


@method("thresholding", "Mondal et al. 2025")
@dataclass(frozen=True)
class Thresholding:
    rate: float = setting(0.00125, "thresholding: share of L*I neurons per language (highest activation "
                                   "probability).")
    other_max: Optional[float] = setting(None, "thresholding: keep only neurons whose activation probability in "
                                               "every other language is at most this (e.g. 0.5); a langloc "
                                               "addition, not in the reference code.")

    def find(self, stats, run: Optional[Path]) -> NeuronSet:
        from langloc.identify.thresholding import threshold_from_stats

        return threshold_from_stats(stats, rate=self.rate, other_max=self.other_max)


@method("expert_units", "Kojima et al. 2024; needs collect --segments", counters=False)
@dataclass(frozen=True)
class ExpertUnits:
    n_units: int = setting(2000, "expert_units: units per language (top half and bottom half by average "
                                 "precision).", flag="--units")

    def find(self, stats, run: Optional[Path]) -> NeuronSet:
        from langloc.identify.expert_units import expert_units
        from langloc.stats.responses import load_responses

        responses = {lang: load_responses(run, lang) for lang in stats.languages}
        ns, _ = expert_units(responses, n=self.n_units, meta={"model": stats.meta.get("model", {}),
                                                              "corpus": stats.meta.get("corpus")})
        return ns


@method("margin", "activation-probability margin: p(lang) - max p(other) >= margin")
@dataclass(frozen=True)
class Margin:
    """The neurons whose activation probability in a language exceeds their largest in any
    other language by at least ``margin``: a baseline with one interpretable threshold and no
    budget (the sets are as large as the data make them). Ties and order: (layer, index)."""

    margin: float = setting(0.5, "margin: least p(language) - max p(other language) of a neuron kept for a "
                                 "language (in (0, 1]).")

    def find(self, stats, run: Optional[Path]) -> NeuronSet:
        import torch

        from langloc.errors import check_range

        check_range("margin", self.margin, 0.0, 1.0, low_open=True)
        p = stats.activation_probability()  # [K, L, I]
        K, L, I = p.shape
        if K < 2:
            raise LanglocError("margin needs at least two languages")
        neurons = {}
        for k, lang in enumerate(stats.languages):
            others = torch.cat([p[:k], p[k + 1:]]).amax(0)
            keep = (p[k] - others) >= self.margin - 1e-12  # a difference of probabilities at the bound counts
            neurons[lang] = [keep[layer].nonzero().flatten() for layer in range(L)]
        meta = {"model": stats.meta.get("model", {}), "corpus": stats.meta.get("corpus"),
                "tokens": {lang: int(n) for lang, n in zip(stats.languages, stats.n)}}
        return NeuronSet(neurons, L, I, method="margin", params={"margin": self.margin}, meta=meta)
